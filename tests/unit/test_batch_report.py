"""The `batch` part of a scoring pod's termination message: written within the
kubelet's 4096 bytes, read back without ever raising."""

from __future__ import annotations

import json

from kubeloop.batch.report import OutputSummary, parse, with_batch
from kubeloop.progress import MAX_MESSAGE_BYTES, Report, encode_final, parse_final

FINAL = encode_final(Report(step=10, total_steps=10, metrics={"rows_per_second": 5.0}))
OUTPUT = {"rows": 10, "files": 2, "sha256": "ab" * 32}


def test_the_extras_ride_beside_the_final_report() -> None:
    text = with_batch(FINAL, {"model": "cd" * 32, "output": OUTPUT})
    assert parse_final(text) == parse_final(FINAL)
    got = parse(text)
    assert got is not None and got.model_sha256 == "cd" * 32
    assert got.output == OutputSummary(rows=10, files=2, sha256="ab" * 32)
    assert got.omitted == ()


def test_what_does_not_fit_is_left_out_least_needed_first() -> None:
    drift = {"features": {f"f{i}": list(range(40)) for i in range(40)}}
    text = with_batch(FINAL, {"model": "cd" * 32, "output": OUTPUT, "drift": drift})
    assert len(text.encode()) <= MAX_MESSAGE_BYTES
    got = parse(text)
    assert got is not None and got.drift is None and got.omitted == ("drift",)
    assert got.output is not None and got.model_sha256 == "cd" * 32


def test_malformed_reports_are_not_read() -> None:
    assert parse(None) is None and parse("") is None and parse("not json") is None
    assert parse(FINAL) is None
    bad = json.dumps({"batch": {"model": 3, "output": {"rows": -1, "files": 1, "sha256": "x"}}})
    got = parse(bad)
    assert got is not None and got.model_sha256 is None and got.output is None
    assert parse(json.dumps({"batch": {"output": {"rows": True, "files": 1, "sha256": "x"}}})
                 ).output is None  # type: ignore[union-attr]
    assert parse("x" * (MAX_MESSAGE_BYTES + 1)) is None
