"""bench/shadow_bench.py's figures: ratios to `none` per round and the verdict, which is
met only when the worst round still meets the goal; the README section from the
results file alone, replacing only its own section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("shadow_bench", ROOT / "bench/shadow_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runs(*pairs: tuple[float, float]) -> dict[str, Any]:
    measured = [{"requests_per_s": rps, "p99_ms": p99} for rps, p99 in pairs]
    ordered = sorted(pairs)
    return {
        "requests_per_s": ordered[len(ordered) // 2][0],
        "p99_ms": sorted(p for _, p in pairs)[len(pairs) // 2],
        "range": {
            "requests_per_s": [min(r for r, _ in pairs), max(r for r, _ in pairs)],
            "p99_ms": [min(p for _, p in pairs), max(p for _, p in pairs)],
        },
        "runs": measured,
    }


def cell() -> dict[str, Any]:
    return {
        "none": runs((1000, 10), (1000, 10), (1000, 10)),
        # Medians within the goal, but one round 0.8x: missed.
        "mirror-100": runs((950, 10.5), (800, 10.5), (960, 10.0)),
        "shadow-down": runs((990, 10.2), (1000, 10.0), (980, 10.9)),
        # Throughput fine, one round's p99 1.2x: missed.
        "shadow-slow": runs((1000, 10.0), (1000, 12.0), (1000, 10.0)),
    }


def test_the_worst_round_decides(bench: ModuleType) -> None:
    ratios = bench.against_none(cell(), list(bench.LABELS))
    assert ratios["mirror-100"]["requests_per_s_ratio"] == 0.95
    assert ratios["mirror-100"]["worst_round_requests_per_s_ratio"] == 0.8
    assert ratios["shadow-slow"]["worst_round_p99_ratio"] == 1.2
    verdicts = {key: bench.verdict(r) for key, r in ratios.items() if key != "none"}
    assert verdicts == {"mirror-100": "missed", "shadow-down": "met", "shadow-slow": "missed"}


def test_the_section_comes_from_the_results_and_replaces_only_its_own(
    bench: ModuleType, tmp_path: Path
) -> None:
    data = cell()
    for key in ("mirror-100", "shadow-down"):
        data[key]["shadow_counters"] = {"mirrored_total": 3000.0, "dropped_total": 5.0}
    results = {
        "date": "2026-12-07T21:00:00+00:00",
        "commit": {"sha": "0123456789abcdef", "dirty": False},
        "machine": {"cpus": 2},
        "loadavg_before": [0.2, 0.3, 0.4],
        "cell": data,
        "against_none": bench.against_none(data, list(bench.LABELS)),
        "protocol": {"rounds": 3, "duration_s": 10, "warmup_s": 2, "connections": 16,
                     "request": "REST JSON, 1 row", "model": "gradient-boosting"},
    }
    section = bench.render(results)
    assert "Run at 0123456789ab, 2026-12-07T21:00:00+00:00" in section
    assert "| every request copied to a live shadow | 950 (800 to 960)" in section
    assert "0.95x (0.80x)" in section and "3,000 / 5 / 0 | missed |" in section
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nbefore\n\n{bench.START}\nold\n{bench.END}\n\nafter\n")
    bench.write_readme(readme, section)
    text = readme.read_text()
    assert "old" not in text and text.count(bench.START) == 1
    assert text.startswith("# B\n\nbefore\n\n") and text.endswith("\n\nafter\n")
