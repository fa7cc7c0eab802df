"""The package's one JSON decoder."""

from __future__ import annotations

import json
import math

import pytest

from kubeloop import jsoncodec
from kubeloop.jsoncodec import loads


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}}',
        '[1, 2.5, "é", null, true, -9223372036854775808, 18446744073709551615]',
    ],
)
def test_it_decodes_as_json_does(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_what_only_json_reads_falls_back_to_it_and_bad_json_is_a_value_error() -> None:
    assert math.isnan(loads('{"x": NaN}')["x"])
    with pytest.raises(ValueError):
        loads(b"{not json")


def test_an_integer_beyond_64_bits_is_a_float_as_documented() -> None:
    # orjson's way; the API server never sends one (Kubernetes integers are int64).
    assert loads('{"big": 123456789012345678901234567890}')["big"] == pytest.approx(1.2345678e29)


def test_orjson_is_what_decodes_here() -> None:
    """The dev extra installs it (through `serve`), as the image does: the speed-up is
    measured with it."""
    assert jsoncodec.orjson is not None
