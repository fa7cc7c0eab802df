"""The "Model server" section of bench/README.md is rendered from the results file
alone: every figure in it comes from the file, the targets are computed from every
round (a cell meets the goal only when kubeloop's worst round beats MLServer's best),
the spread of the rounds and the commit are shown, and refused or failing cells are
said so."""

from __future__ import annotations

import copy
import re
import sys
from typing import Any

import pytest

from tests.kubetest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import serving_bench_report as report_mod


def figures(
    rps: float, p50: float, p99: float, errors: int = 0, spread: float = 0.05
) -> dict[str, Any]:
    """Medians, and three rounds: the median's, and `spread` below and above it."""
    rounds = [
        {"requests_per_s": rps * f, "p50_ms": p50 * f, "p99_ms": p99 * g, "errors": 0}
        for f, g in ((1 - spread, 1 + spread), (1.0, 1.0), (1 + spread, 1 - spread))
    ]
    return {
        "requests_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "runs": rounds,
    }


def results() -> dict[str, Any]:
    cells = []
    for model in ("gradient-boosting", "logistic-regression"):
        for rows in (1, 64):
            for conns in (16, 64):
                for kind in ("rest-json", "rest-binary", "grpc"):
                    base = 1000.0 + rows + conns + len(kind) + (7 if model[0] == "g" else 3)
                    cell = {"model": model, "rows": rows, "connections": conns, "kind": kind}
                    cell["kubeloop"] = figures(base * 2.5, 4.25, 9.75)
                    if kind == "rest-binary":
                        cell["mlserver"] = {"unsupported": "HTTP 500: Internal Server Error"}
                    else:
                        cell["mlserver"] = figures(base, 12.5, 31.25)
                    cell["with_errors"] = []
                    cells.append(cell)
    unbatched = {
        "model": "gradient-boosting",
        "rows": 1,
        "connections": 16,
        "kind": "rest-json",
        "kubeloop": figures(3333.0, 4.5, 8.5),
        "kubeloop-wait-0": figures(1888.0, 8.5, 18.5),
        "kubeloop-unbatched": figures(666.0, 21.5, 55.5),
        "mlserver": figures(999.0, 13.5, 22.5),
        "mlserver-unbatched": figures(444.0, 35.5, 65.5),
        "with_errors": [],
    }
    return {
        "date": "2026-12-02T02:00:00+00:00",
        "commit": {"sha": "0123456789abcdef0123", "dirty": False, "dirty_paths": []},
        "elapsed_s": 1620,
        "duration_s": 10,
        "warmup_s": 2,
        "rounds": 3,
        "round_order": "reversed every round; the first round's order alternates from cell "
        "to cell",
        "batching": {"max_batch_size": 64, "max_batch_time": 0.001},
        "kubeloop_max_batch_rows": {"1": 64, "64": 4096},
        "pinning": {"servers": "0", "load_generator": "1"},
        "load_generators": {"rest": "wrk -t1", "grpc": "bench/grpcload"},
        "targets": {"throughput_ratio": 2.0, "lower_p99": True},
        "machine": {
            "cpu": "Test CPU",
            "cpus": 2,
            "loadavg_start": [0.21, 0.5, 0.6],
            "loadavg_end": [2.07, 2.0, 1.9],
            "idle_load": 0.5,
        },
        "runtime_stacks": {
            "kubeloop/gradient-boosting/1": {
                "http_parser": "aiohttp's C parser (llhttp)",
                "event_loop": "asyncio (standard library)",
            },
            "kubeloop/unbatched": {
                "http_parser": "aiohttp's C parser (llhttp)",
                "event_loop": "asyncio (standard library)",
            },
            "mlserver": {"http_parser": "httptools (C)", "event_loop": "uvloop"},
        },
        "versions": {
            "kubeloop": {
                "aiohttp": "3.14.5",
                "grpcio": "1.85.3",
                "orjson": "3.13.0",
                "aiohttp parser": "aiohttp._http_parser",
            },
            "mlserver": {
                "mlserver": "1.7.1",
                "uvicorn": "0.54.0",
                "fastapi": "0.115.14",
                "grpcio": "1.85.3",
                "uvloop": "0.21.0",
                "httptools": "0.9.0",
                "h11": "0.16.0",
            },
            "wrk": "4.1.0",
            "grpcload": "grpcload-v1.85.0",
        },
        "cells": cells,
        "unbatched": [unbatched],
        "ceiling": [
            {"model": "gradient-boosting", "rows": 1, "calls_per_s": 1325.0, "rows_per_s": 1325.0}
        ],
    }


def test_every_figure_comes_from_the_results() -> None:
    data = results()
    section = report_mod.render_section(data)
    assert section.startswith(report_mod.SECTION_START)
    assert section.endswith(report_mod.SECTION_END)
    # Each cell's throughput, as rendered, is in the table.
    for cell in data["cells"]:
        assert f"{cell['kubeloop']['requests_per_s']:,.0f}" in section
    assert (
        "| kubeloop | off (`--max-batch-size 1`) | 666 | 633 / 666 / 699 | 21.5 / 55.5 | 1.00x "
        "| 0 |" in section
    )
    assert (
        "| MLServer | on (max 64 requests, wait 1 ms) | 999 | 949 / 999 / 1,049 | 13.5 / 22.5 "
        "| 2.25x | 0 |" in section
    )
    data["unbatched"][0]["kubeloop"]["runs"] = [{"requests_per_s": r} for r in (3100, 3333, 3500)]
    assert "| 3,333 | 3,100 / 3,333 / 3,500 |" in report_mod.render_section(data)
    # The stacks each server ran on, as found in its process during the run.
    assert "HTTP parsed by aiohttp's C parser (llhttp), on asyncio (standard library)" in section
    assert "HTTP parsed by httptools 0.9.0 (C), on uvloop 0.21.0" in section
    assert "64 rows for 1-row requests, 4096 rows for 64-row requests" in section
    assert "idle before the run (load average 0.21;" in section
    # MLServer refused the binary body: said so, compared with its JSON figures.
    assert "MLServer refuses the REST binary request (`HTTP 500" in section
    assert section.count("x vs its JSON |") == 16  # ratio of medians, slowest / fastest
    # 2.5x with a lower p99 everywhere, and still 2.26x between kubeloop's slowest round and
    # MLServer's fastest: the goal is met in every comparable cell.
    assert "Short of the goal in this run: none." in section
    assert section.count("| met |") == 16 and "| missed |" not in section
    assert "Cells with failed requests: none." in section


def test_a_number_written_by_hand_would_not_survive() -> None:
    """The renderer has no figure of its own: changing the results changes the text."""
    data = results()
    before = report_mod.render_section(data)
    changed = copy.deepcopy(data)
    changed["unbatched"][0]["kubeloop-unbatched"]["requests_per_s"] = 777.0
    changed["machine"]["loadavg_start"][0] = 0.37
    after = report_mod.render_section(changed)
    assert before != after
    assert "| 777 |" in after and "(load average 0.37;" in after
    numbers = set(re.findall(r"\d[\d,]*\.?\d*", before))
    assert "666" in numbers and "777" not in numbers


def test_shortfalls_and_errors_are_reported() -> None:
    data = results()
    cell = next(c for c in data["cells"] if c["kind"] == "grpc")
    cell["kubeloop"] = figures(cell["mlserver"]["requests_per_s"] * 1.5, 5.0, 40.0, errors=3)
    cell["with_errors"] = ["kubeloop"]
    section = report_mod.render_section(data)
    short = report_mod.short_of_target(data)
    assert len(short) == 1 and "medians 1.50x" in short[0]
    assert "highest kubeloop p99 42.0 vs lowest MLServer p99 29.7 ms" in short[0]
    assert short[0] in section
    assert "Cells with failed requests: gradient-boosting 1 x 16 gRPC: kubeloop." in section


def test_overlapping_rounds_miss_the_goal_whatever_the_medians() -> None:
    """Medians of 2.5x and a lower median p99, but kubeloop's slowest round is below 2x
    MLServer's fastest: the cell is missed. The same for a p99 whose rounds overlap."""
    data = results()
    cell = next(c for c in data["cells"] if c["kind"] == "rest-json")
    ml = cell["mlserver"]["requests_per_s"]
    cell["kubeloop"] = figures(ml * 2.5, 4.25, 9.75)
    cell["kubeloop"]["runs"][0]["requests_per_s"] = ml * 1.9  # one slow round
    ratio = data["targets"]["throughput_ratio"]
    assert cell["kubeloop"]["requests_per_s"] >= ratio * cell["mlserver"]["requests_per_s"]
    assert report_mod.goal_met(cell, ratio) is False
    short = report_mod.short_of_target(data)
    assert len(short) == 1 and "medians 2.50x, slowest vs fastest round 1.81x" in short[0]
    section = report_mod.render_section(data)
    assert "| 2.50x | 1.81x |" in section and section.count("| missed |") == 1
    # The same cell, its rounds apart again: met.
    cell["kubeloop"] = figures(ml * 2.5, 4.25, 9.75)
    assert report_mod.goal_met(cell, ratio) is True
    # A p99 lower in the medians, but one kubeloop round above MLServer's best round.
    cell["kubeloop"]["runs"][2]["p99_ms"] = cell["mlserver"]["p99_ms"] * 0.96
    assert cell["kubeloop"]["p99_ms"] < cell["mlserver"]["p99_ms"]
    assert report_mod.goal_met(cell, ratio) is False
    # Refused requests are not judged.
    binary = next(c for c in data["cells"] if c["kind"] == "rest-binary")
    assert report_mod.goal_met(binary, ratio) is None


def test_the_rule_the_spread_and_the_commit_are_rendered() -> None:
    data = results()
    section = report_mod.render_section(data)
    assert (
        "kubeloop's slowest round is more than 2x MLServer's fastest (kubeloop's lowest "
        "req/s > 2 x MLServer's highest), and kubeloop's highest p99 of any round is below "
        "MLServer's lowest" in section
    )
    cell = data["cells"][0]
    k = cell["kubeloop"]
    rps = [r["requests_per_s"] for r in k["runs"]]
    assert f"| {k['requests_per_s']:,.0f} ({min(rps):,.0f} to {max(rps):,.0f}) |" in section
    assert "Run at commit 0123456789ab, finished 2026-12-02T02:00:00+00:00 (UTC)" in section
    assert "idle before the run (load average 0.21" in section
    data["commit"] = {"sha": "fedcba9876543210", "dirty": True, "dirty_paths": ["a", "b"]}
    data["machine"]["loadavg_start"][0] = 1.5
    section = report_mod.render_section(data)
    assert "commit fedcba987654, with uncommitted changes in 2 path(s)" in section
    assert "**not idle** before the run (load average 1.50" in section
    assert "Smoke run" not in section
    data["smoke"] = True
    assert "**Smoke run** (`--smoke`)" in report_mod.render_section(data)


@pytest.mark.parametrize("ratio", [1.0, 3.0])
def test_the_target_comes_from_the_results(ratio: float) -> None:
    data = results()
    data["targets"]["throughput_ratio"] = ratio
    short = report_mod.short_of_target(data)
    assert (len(short) == 0) if ratio == 1.0 else (len(short) == 16)
    assert f"The goal: {ratio:g}x MLServer's throughput" in report_mod.render_section(data)


def test_an_old_results_file_is_not_rendered_as_a_new_one() -> None:
    data = results()
    del data["commit"]
    with pytest.raises(ValueError, match="run the benchmark again"):
        report_mod.render_section(data)
