"""hack/ci_times.py: the README's CI times come from a fresh-clone run's log, parsed into
tests/results/ci-<mode>.json, and the README block is rendered from those files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]

LOG = """\
.venv/bin/python -m pytest tests/unit -q
........................................................................ [100%]
1916 passed in 67.91s (0:01:07)
== lane-kwok: integration, faults, RBAC necessity 1/2 (08:30:00)
K=/c/.cluster-kwok .venv/bin/python -m pytest tests/integration -q
.......
96 passed, 1 warning in 438.93s (0:07:18)
== lane-real: e2e, e2e-real, RBAC necessity 2/2 (08:30:02)
.venv/bin/python -m pytest e2e/real -q
1 failed, 12 passed in 533.20s (0:08:53)
K=/c/.cluster-kwok .venv/bin/python hack/rbac_necessity.py --shard 1/2
/events/create                                       30.1s  needed
    tests/integration/test_trainingjob.py::test_x
    timed out
kubeloop.io/trainingjobs/patch                       40.0s  NOT SHOWN: the test passed
    tests/integration/test_drift_loop.py::test_y
    None
== lane-kwok passed (08:51:40)
== CI took 2012s
"""


def ci_times() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_times", ROOT / "hack" / "ci_times.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_log_gives_each_suite_its_summary_and_each_lane_its_length() -> None:
    parsed = ci_times().parse(LOG)
    assert parsed["total_seconds"] == 2012
    assert [(s["suite"], s.get("summary"), s.get("seconds")) for s in parsed["suites"]] == [
        ("tests/unit", "1916 passed", 67.9),
        ("tests/integration", "96 passed, 1 warning", 438.9),
        ("e2e/real", "1 failed, 12 passed", 533.2),
        ("rbac-necessity 1/2", None, None),
    ]
    assert parsed["suites"][3]["verdicts"] == {"needed": 1, "NOT SHOWN: the test passed": 1}
    assert parsed["lanes"]["lane-kwok"] == {"start": "08:30:00", "end": "08:51:40",
                                            "seconds": "1300"}
    # A lane that never said it passed has no length.
    assert "seconds" not in parsed["lanes"]["lane-real"]


def test_the_block_judges_the_budget_and_says_what_was_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = ci_times()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    mod.RESULTS.mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ci-warm.json").write_text(json.dumps({
        "commit": "0123456789abcdef", "started": "2026-12-07T08:30:00Z", "exit_code": 0,
        "budget_minutes": 40, **mod.parse(LOG.replace("2012s", "2500s"))}))
    block = mod.render_block()
    assert "| cold | ≤ 70 min | not measured |" in block
    assert "**41 min 40 s** (OVER budget, passed)" in block
    assert "`0123456789ab`, 2026-12-07T08:30:00Z" in block
    assert "tests/integration: 96 passed, 1 warning in 7 min 18 s" in block
    assert "rbac-necessity 1/2: 1 rules needed, 1 rules NOT SHOWN: the test passed" in block
    (tmp_path / "ci-warm.json").write_text(json.dumps({
        "commit": "0123456789abcdef", "started": "2026-12-07T08:30:00Z", "exit_code": 2,
        "budget_minutes": 40, **mod.parse(LOG)}))
    assert "**33 min 32 s** (exit 2: failed, budget not judged)" in mod.render_block()
    (tmp_path / "ci-warm.json").write_text(json.dumps({
        "commit": "0123456789abcdef", "started": "2026-12-07T08:30:00Z", "exit_code": 0,
        "budget_minutes": 40, **mod.parse(LOG)}))
    assert "**33 min 32 s** (within budget, passed)" in mod.render_block()


def test_the_readme_block_is_rendered_from_the_committed_results() -> None:
    text = (ROOT / "README.md").read_text()
    mod = ci_times()
    start, end = text.index(mod.START), text.index(mod.END) + len(mod.END)
    assert text[start:end] == mod.render_block(), "run: python3 hack/ci_times.py render"
