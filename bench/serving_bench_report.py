"""The "Model server" section of bench/README.md, rendered from the results file that
bench/serving_bench.py writes (bench/results/serving.json). Nothing in the section is
written by hand: rerun `python3 bench/serving_bench_report.py` to re-render it from the
file alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SECTION_START = "<!-- serving-bench:start -->"
SECTION_END = "<!-- serving-bench:end -->"
KIND_NAMES = {"rest-json": "REST JSON", "rest-binary": "REST binary", "grpc": "gRPC"}


def _latency(figures: dict[str, Any]) -> str:
    return f"{figures['p50_ms']:.1f} / {figures['p99_ms']:.1f}"


def _refused(figures: dict[str, Any]) -> bool:
    return "unsupported" in figures


def _json_twin(cells: list[dict[str, Any]], cell: dict[str, Any]) -> dict[str, Any]:
    """The REST JSON cell with the same model, rows and connections."""
    return next(
        c
        for c in cells
        if c["kind"] == "rest-json"
        and (c["model"], c["rows"], c["connections"])
        == (cell["model"], cell["rows"], cell["connections"])
    )


def short_of_target(cells: list[dict[str, Any]]) -> list[str]:
    """Cells where kubeloop has less than 2x MLServer's throughput or a p99 no lower
    (MLServer's own figures on the same request; cells it refused are left out)."""
    short = []
    for cell in cells:
        k, m = cell["kubeloop"], cell["mlserver"]
        if _refused(m) or _refused(k):
            continue
        if k["requests_per_s"] < 2 * m["requests_per_s"] or k["p99_ms"] >= m["p99_ms"]:
            short.append(
                f"{cell['model']} {cell['rows']} row(s) x {cell['connections']} "
                f"{KIND_NAMES[cell['kind']]} ({k['requests_per_s'] / m['requests_per_s']:.2f}x, "
                f"p99 {k['p99_ms']:.1f} vs {m['p99_ms']:.1f} ms)"
            )
    return short


def main_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| model | rows | conns | request | kubeloop req/s | MLServer req/s | ratio | "
        "kubeloop p50 / p99 ms | MLServer p50 / p99 ms | errors |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    cells = report["cells"]
    for cell in cells:
        k, m = cell["kubeloop"], cell["mlserver"]
        head = (
            f"| {cell['model']} | {cell['rows']} | {cell['connections']} | "
            f"{KIND_NAMES[cell['kind']]} | {k['requests_per_s']:,.0f} | "
        )
        if _refused(m):
            twin = _json_twin(cells, cell)["mlserver"]
            ratio = k["requests_per_s"] / twin["requests_per_s"]
            lines.append(
                head + f"refused | {ratio:.2f}x vs its JSON | {_latency(k)} | "
                f"JSON: {_latency(twin)} | {k['errors']} |"
            )
            continue
        ratio = k["requests_per_s"] / m["requests_per_s"]
        lines.append(
            head + f"{m['requests_per_s']:,.0f} | {ratio:.2f}x | {_latency(k)} | "
            f"{_latency(m)} | {k['errors'] + m['errors']} |"
        )
    return lines


def batching_table(report: dict[str, Any]) -> list[str]:
    extra = report["unbatched"][0]
    on = next(
        c
        for c in report["cells"]
        if (c["model"], c["rows"], c["connections"], c["kind"])
        == (extra["model"], extra["rows"], extra["connections"], extra["kind"])
    )
    wait_ms = report["batching"]["max_batch_time"] * 1000
    size = f"{report['batching']['max_batch_size']} requests"
    rows = [
        ("kubeloop", f"on (max {size}, wait {wait_ms:g} ms)", on["kubeloop"]),
        ("kubeloop", f"on (max {size}, wait 0: the default)", extra["kubeloop-wait-0"]),
        ("kubeloop", "off (`--max-batch-size 1`)", extra["kubeloop-unbatched"]),
        ("MLServer", f"on (max {size}, wait {wait_ms:g} ms)", on["mlserver"]),
        ("MLServer", "off (no batching settings)", extra["mlserver-unbatched"]),
    ]
    off = {"kubeloop": extra["kubeloop-unbatched"], "MLServer": extra["mlserver-unbatched"]}
    lines = [
        "| server | batching | req/s | p50 / p99 ms | vs off | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for server, setting, figures in rows:
        gain = figures["requests_per_s"] / off[server]["requests_per_s"]
        lines.append(
            f"| {server} | {setting} | {figures['requests_per_s']:,.0f} | "
            f"{_latency(figures)} | {gain:.2f}x | {figures['errors']} |"
        )
    return lines


def ceiling_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| model | rows per predict | predict calls/s | rows/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in report["ceiling"]:
        lines.append(
            f"| {c['model']} | {c['rows']} | {c['calls_per_s']:,.0f} | {c['rows_per_s']:,.0f} |"
        )
    return lines


def render_section(report: dict[str, Any]) -> str:
    versions = report["versions"]
    machine = report["machine"]
    batching = report["batching"]
    cells = report["cells"]
    refused = next((c["mlserver"]["unsupported"] for c in cells if _refused(c["mlserver"])), None)
    short = short_of_target(cells)
    lines = [
        SECTION_START,
        "## Model server",
        "",
        "`make bench-serving` (`bench/serving_bench.sh`, then `bench/serving_bench.py`): "
        "`kubeloop serve` with drift histograms on against MLServer "
        f"{versions['mlserver']['mlserver']} (mlserver-sklearn), the same joblib model, "
        "the same Open Inference Protocol v2 requests, on loopback, both batching "
        "adaptively with the same settings: `max_batch_time` "
        f"{batching['max_batch_time'] * 1000:g} ms, and at most {batching['max_batch_size']} "
        "requests in a batch (MLServer's `max_batch_size` counts requests, kubeloop's "
        f"`--max-batch-size` rows: {report['kubeloop_max_batch_rows']} rows, "
        f"{batching['max_batch_size']} requests of the largest size here). One process each "
        "(kubeloop `--workers 1`; MLServer `parallel_workers: 0`, `debug: false`, metrics "
        f"on) pinned to CPU 0; the load generator on CPU 1, one request in flight per "
        "connection: wrk "
        f"{versions['wrk']} (`-t1`) for REST, `bench/grpcload` (Go, google.golang.org/grpc "
        f"{versions['grpcload'].removeprefix('grpcload-')}, one HTTP/2 connection each, "
        "`GOMAXPROCS=1`) for gRPC. HTTP stacks: kubeloop aiohttp "
        f"{versions['kubeloop']['aiohttp']} and grpcio {versions['kubeloop']['grpcio']}; "
        f"MLServer uvicorn {versions['mlserver']['uvicorn']} / FastAPI "
        f"{versions['mlserver']['fastapi']} and grpcio {versions['mlserver']['grpcio']}. "
        f"{report['warmup_s']} s warm-up per server per cell, then {report['rounds']} x "
        f"{report['duration_s']} s rounds alternating the servers; medians over rounds. "
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, load average "
        f"{machine['loadavg_start'][0]:.2f} before the run (the run itself keeps both CPUs "
        f"busy: {machine['loadavg_end'][0]:.2f} at its end); {report['date']}, "
        f"{report['elapsed_s'] / 60:.0f} minutes.",
        "",
        "Requests: REST JSON is a `data` list; REST binary is the body tritonclient builds "
        "by default (`InferInput.set_data_from_numpy`: the binary tensor extension, "
        "raw little-endian FP64 after a JSON header, outputs asked back in binary); gRPC "
        "carries `raw_input_contents`, as tritonclient's gRPC client sends them. Every "
        "server's answer is checked against the other's before a cell is measured.",
        "",
        *main_table(report),
        "",
    ]
    if refused:
        lines += [
            f"MLServer refuses the binary body (`{refused.strip()[:160]}`): its rows "
            "compare kubeloop's binary figures with MLServer's on the JSON body of the "
            "same request, what a tritonclient user has to switch to.",
            "",
        ]
    lines += [
        "Short of the goal (2x MLServer's throughput with a lower p99, on the same "
        "request) in this run: " + ("; ".join(short) if short else "none") + ".",
        "",
        "### Batching on and off",
        "",
        "Gradient boosting, 16 connections of one row each, REST JSON, in the same run:",
        "",
        *batching_table(report),
        "",
        "### The ceiling: scikit-learn's predict with no server",
        "",
        "The same model files and rows, `predict` called in a loop on CPU 0 "
        f"({report['rounds']} x {report['duration_s']} s, median). A server that batches "
        "16 one-row requests into one call can pass the one-row ceiling; the 16-row line "
        "is its limit then.",
        "",
        *ceiling_table(report),
        "",
        SECTION_END,
    ]
    return "\n".join(lines)


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    if SECTION_START in text and SECTION_END in text:
        before, rest = text.split(SECTION_START, 1)
        after = rest.split(SECTION_END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    readme.write_text(text)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    write_readme(
        here / "README.md",
        render_section(json.loads((here / "results" / "serving.json").read_text())),
    )
    sys.exit(0)
