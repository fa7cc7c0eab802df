"""Kopf's watch stream decodes with orjson once `watchjson.install()` ran (the operator's
`configure` does), with the same objects as the standard library, and the fallback for
what orjson refuses. If a Kopf upgrade stops decoding there with `json.loads`, the first
test says so instead of the speed-up silently vanishing."""

from __future__ import annotations

import inspect
import json

import kopf
from kopf._cogs.clients import api

from kubeloop import watchjson
from kubeloop.operator import configure

EVENT = (
    b'{"type":"MODIFIED","object":{"apiVersion":"kubeloop.io/v1alpha1","kind":"TrainingJob",'
    b'"metadata":{"name":"t","namespace":"n","resourceVersion":"42","generation":3,'
    b'"labels":{"a":"\\u00e9"}},"spec":{"workers":2,"lr":0.001,"tags":[],"x":null},'
    b'"status":{"phase":"Running","ok":true,"progress":{"percent":12.5}}}}'
)


def test_kopf_still_decodes_watch_lines_with_json_loads() -> None:
    assert "json.loads(" in inspect.getsource(api.stream)


def test_configure_routes_kopf_watch_decoding_to_orjson() -> None:
    configure(kopf.OperatorSettings())
    assert isinstance(api.json, watchjson._Json)
    assert api.json.loads is watchjson.loads
    # The rest of the module is still the standard library's.
    assert api.json.dumps is json.dumps and api.json.JSONDecodeError is json.JSONDecodeError
    assert watchjson.install() is True  # idempotent


def test_same_objects_as_the_standard_library() -> None:
    line = EVENT.decode("utf-8")
    assert watchjson.loads(line) == json.loads(line)
    assert watchjson.loads(EVENT) == json.loads(EVENT)


def test_what_orjson_refuses_falls_back() -> None:
    big = '{"n": 123456789012345678901234567890, "f": NaN}'
    decoded = watchjson.loads(big)
    assert decoded["n"] == 123456789012345678901234567890
    assert decoded["f"] != decoded["f"]  # NaN


def test_bad_input_still_raises_a_value_error() -> None:
    try:
        watchjson.loads('{"type": ')
    except ValueError:
        return
    raise AssertionError("an unfinished line decoded")
