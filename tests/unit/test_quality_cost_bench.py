"""bench/quality_cost_bench.py's pure parts: the model copy without calibration (still a
valid model directory), the feedback body the server takes, and the section with its
verdict from the worst round."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from kubeloop.modeldir import PROFILE_FILE, load_model
from kubeloop.serving.dataplane import DataPlane
from tests.unit.test_serving import model, model_dir, running  # noqa: F401
from tests.unit.test_serving_quality import feedback

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(
        "quality_cost_bench", ROOT / "bench/quality_cost_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_off_copy_has_no_calibration_and_loads_verified(
    bench: ModuleType, model_dir: Path, tmp_path: Path  # noqa: F811
) -> None:
    plain = bench.without_calibration(model_dir, tmp_path / "plain")
    assert "calibration" not in json.loads((plain / PROFILE_FILE).read_text())
    loaded = load_model(plain)  # the manifest was rewritten: it verifies
    assert loaded.profile is not None and loaded.profile.calibration is None
    assert load_model(model_dir).profile.calibration is not None


def test_the_labels_are_taken_by_the_server(bench: ModuleType, model_dir: Path) -> None:  # noqa: F811
    loaded = load_model(model_dir)
    plane = DataPlane(loaded.metadata)
    plane.set_model(loaded)
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    body = bench.feedback_body(loaded.metadata.version, rows, [0, 2])
    with running(plane) as url:
        answer = feedback(url, body)
    assert answer.status_code == 200, answer.text


def cell(off: list[float], on: list[float]) -> dict[str, dict[str, object]]:
    def one(rps: list[float]) -> dict[str, object]:
        return {"requests_per_s": sorted(rps)[len(rps) // 2], "p99_ms": 4.0,
                "range": {"requests_per_s": [min(rps), max(rps)], "p99_ms": [3.0, 5.0]},
                "runs": [{"requests_per_s": r, "p99_ms": 4.0} for r in rps]}
    return {"quality-off": one(off), "quality-on": one(on)}


@pytest.mark.parametrize(
    ("on", "verdict"), [([980.0, 990.0, 960.0], "met"), ([990.0, 940.0, 990.0], "missed")]
)
def test_the_verdict_is_the_worst_rounds(bench: ModuleType, on: list[float], verdict: str) -> None:
    data = cell([1000.0, 1000.0, 1000.0], on)
    ratios = bench.shb.against_none({"none": data["quality-off"], **data}, ["quality-on"])
    results = {
        "cell": data, "ratios": ratios["quality-on"], "labels_counted": 5000.0,
        "commit": {"sha": "0123456789abcdef", "dirty": False}, "date": "2026-12-07",
        "machine": {"cpus": 2}, "loadavg_before": [0.1, 0.1, 0.1],
        "protocol": {"rounds": 3, "duration_s": 10},
    }
    section = bench.render(results)
    assert section.startswith(bench.START) and section.endswith(bench.END)
    assert f"**{verdict}**" in section and "5,000 counted" in section
