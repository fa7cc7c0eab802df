"""The serving benchmark's protocol, without running it: the servers' order changes
every round, each cell keeps the range of its rounds, and the HTTP parser and event loop
of each server are read from what its process has loaded."""

from __future__ import annotations

import sys

from tests.kubetest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import serving_bench

SITE = "/srv/venv/lib/python3.11/site-packages"


def maps_line(path: str) -> str:
    return f"7f0000000000-7f0000001000 r-xp 00000000 08:01 1234 {path}"


def test_the_order_is_reversed_every_round_and_from_cell_to_cell() -> None:
    orders = serving_bench.round_orders(["kubeloop", "mlserver"], 5, reverse_first=False)
    assert [o[0] for o in orders] == ["kubeloop", "mlserver"] * 2 + ["kubeloop"]
    other = serving_bench.round_orders(["kubeloop", "mlserver"], 5, reverse_first=True)
    assert [o[0] for o in other] == ["mlserver", "kubeloop"] * 2 + ["mlserver"]
    # Over two neighbouring cells, each server goes first equally often.
    firsts = [o[0] for o in orders + other]
    assert firsts.count("kubeloop") == firsts.count("mlserver") == 5
    five = serving_bench.round_orders(list("abcde"), 2, reverse_first=False)
    assert five == [list("abcde"), list("edcba")]


def test_a_cell_keeps_the_range_of_its_rounds() -> None:
    runs = [
        {"requests_per_s": rps, "p50_ms": 1.0, "p99_ms": p99, "errors": 0}
        for rps, p99 in ((3903.0, 6.8), (2532.0, 9.1), (3000.0, 7.0))
    ]
    summary = serving_bench.summarise(runs)
    assert summary["requests_per_s"] == 3000.0
    assert summary["range"]["requests_per_s"] == [2532.0, 3903.0]
    assert summary["range"]["p99_ms"] == [6.8, 9.1]


def test_the_stack_is_what_the_process_has_loaded() -> None:
    mlserver = "\n".join(
        [
            maps_line(f"{SITE}/httptools/parser/parser.cpython-311-x86_64-linux-gnu.so"),
            maps_line(f"{SITE}/uvloop/loop.cpython-311-x86_64-linux-gnu.so"),
            maps_line("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "7f0000002000-7f0000003000 rw-p 00000000 00:00 0",
        ]
    )
    found = serving_bench.stack_from_maps(mlserver)
    assert found["uvicorn_http_parser"] == "httptools (C)"
    assert found["event_loop"] == "uvloop"
    assert found["loaded"]["httptools"].startswith("parser.cpython")
    # uvicorn without its standard extra: h11, and asyncio's own loop.
    bare = serving_bench.stack_from_maps(maps_line("/usr/lib/x86_64-linux-gnu/libc.so.6"))
    assert bare["uvicorn_http_parser"] == "h11 (pure Python)"
    assert bare["event_loop"] == "asyncio (standard library)"
    assert bare["aiohttp_http_parser"] == "pure Python"
    kubeloop = serving_bench.stack_from_maps(
        maps_line(f"{SITE}/aiohttp/_http_parser.cpython-311-x86_64-linux-gnu.so")
    )
    assert kubeloop["aiohttp_http_parser"] == "aiohttp's C parser (llhttp)"
    assert kubeloop["event_loop"] == "asyncio (standard library)"
