"""One duration parser for the whole operator: drift intervals and cooldowns, canary
intervals and windows all read `1m30s` the same way."""

from __future__ import annotations

import re

import pytest

from kubeloop.api.common import DURATION_PATTERN, duration_seconds
from kubeloop.canary.measure import seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30.0), ("1m30s", 90.0), ("250ms", 0.25), ("2h", 7200.0), ("1h1m1s500ms", 3661.5)],
)
def test_durations_the_schema_admits(text: str, expected: float) -> None:
    assert re.fullmatch(DURATION_PATTERN, text)
    assert duration_seconds(text) == pytest.approx(expected)


def test_canary_windows_last_at_least_a_second() -> None:
    assert seconds("250ms") == 1.0
    assert seconds("1m") == 60.0
