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


def short_of_target(report: dict[str, Any]) -> list[str]:
    """Cells where kubeloop has less than the target ratio of MLServer's throughput or a
    p99 no lower (MLServer's own figures on the same request; cells it refused are left
    out)."""
    ratio = report["targets"]["throughput_ratio"]
    short = []
    for cell in report["cells"]:
        k, m = cell["kubeloop"], cell["mlserver"]
        if _refused(m) or _refused(k):
            continue
        if k["requests_per_s"] < ratio * m["requests_per_s"] or k["p99_ms"] >= m["p99_ms"]:
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
    cell = report["unbatched"][0]
    wait_ms = report["batching"]["max_batch_time"] * 1000
    size = f"{report['batching']['max_batch_size']} requests"
    rows = [
        ("kubeloop", f"on (max {size}, wait {wait_ms:g} ms)", "kubeloop"),
        ("kubeloop", f"on (max {size}, wait 0: the default)", "kubeloop-wait-0"),
        ("kubeloop", "off (`--max-batch-size 1`)", "kubeloop-unbatched"),
        ("MLServer", f"on (max {size}, wait {wait_ms:g} ms)", "mlserver"),
        ("MLServer", "off (no batching settings)", "mlserver-unbatched"),
    ]
    off = {"kubeloop": cell["kubeloop-unbatched"], "MLServer": cell["mlserver-unbatched"]}
    lines = [
        "| server | batching | req/s (median) | each round | p50 / p99 ms | vs off | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, setting, key in rows:
        figures = cell[key]
        gain = figures["requests_per_s"] / off[server]["requests_per_s"]
        rounds = " / ".join(f"{r['requests_per_s']:,.0f}" for r in figures.get("runs", []))
        lines.append(
            f"| {server} | {setting} | {figures['requests_per_s']:,.0f} | {rounds or '-'} | "
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


def _stacks(versions: dict[str, Any]) -> str:
    k, m = versions["kubeloop"], versions["mlserver"]
    parser = "C" if k.get("aiohttp parser", "").endswith("_http_parser") else "pure Python"
    ml_parser = (
        f"httptools {m['httptools']} (C)"
        if m.get("httptools")
        else f"h11 {m.get('h11')} (pure Python)"
    )
    loop = f"uvloop {m['uvloop']}" if m.get("uvloop") else "asyncio"
    json_k = f"orjson {k['orjson']}" if k.get("orjson") else "the standard json module"
    return (
        f"kubeloop: aiohttp {k['aiohttp']} ({parser} HTTP parser), {json_k} for JSON "
        f"bodies, grpcio {k['grpcio']}; MLServer: uvicorn {m['uvicorn']} / FastAPI "
        f"{m['fastapi']}, HTTP parsed by {ml_parser}, on {loop}, grpcio {m['grpcio']}"
    )


def render_section(report: dict[str, Any]) -> str:
    versions = report["versions"]
    machine = report["machine"]
    batching = report["batching"]
    pins = report["pinning"]
    generators = report["load_generators"]
    cells = report["cells"]
    refused = next(
        ((c["kind"], c["mlserver"]["unsupported"]) for c in cells if _refused(c["mlserver"])),
        None,
    )
    short = short_of_target(report)
    errors = [
        f"{c['model']} {c['rows']} x {c['connections']} {KIND_NAMES[c['kind']]}: "
        + ", ".join(c["with_errors"])
        for c in [*cells, *report["unbatched"]]
        if c.get("with_errors")
    ]
    caps = ", ".join(
        f"{cap} rows for {rows}-row requests"
        for rows, cap in sorted(
            report["kubeloop_max_batch_rows"].items(), key=lambda kv: int(kv[0])
        )
    )
    target = report["targets"]["throughput_ratio"]
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
        f"`--max-batch-size` rows, so kubeloop runs one server per request size: {caps}). "
        "One process each (kubeloop `--workers 1`; MLServer `parallel_workers: 0`, "
        f"`debug: false`, metrics on) pinned to CPU {pins['servers']}; the load generator "
        f"on CPU {pins['load_generator']}: REST {generators['rest']}, wrk {versions['wrk']}; "
        f"gRPC {generators['grpc']}, Go, google.golang.org/grpc "
        f"{versions['grpcload'].removeprefix('grpcload-')}, one HTTP/2 connection each, "
        f"connected before the clock starts. HTTP stacks: {_stacks(versions)}. "
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
        "carries `raw_input_contents`, as tritonclient's gRPC client sends them. Before a "
        "cell is measured, each server's answer to its request is checked against "
        "scikit-learn's own `predict` on the same rows. req/s counts answers with a 2xx "
        "status (gRPC: OK) only.",
        "",
        *main_table(report),
        "",
    ]
    if refused:
        kind, message = refused
        lines += [
            f"MLServer refuses the {KIND_NAMES[kind]} request (`{message.strip()[:160]}`): "
            "those rows compare kubeloop's figures with MLServer's on the JSON body of the "
            "same request, what a tritonclient user has to switch to.",
            "",
        ]
    lines += [
        f"Short of the goal ({target:g}x MLServer's throughput with a lower p99, on the "
        "same request) in this run: " + ("; ".join(short) if short else "none") + ".",
        "",
        "Cells with failed requests: " + ("; ".join(errors) if errors else "none") + ".",
        "",
        "### Batching on and off",
        "",
        f"{report['unbatched'][0]['model']}, {report['unbatched'][0]['connections']} "
        f"connections of {report['unbatched'][0]['rows']} row(s) each, "
        f"{KIND_NAMES[report['unbatched'][0]['kind']]}; all five measured in the same "
        "rounds:",
        "",
        *batching_table(report),
        "",
        "### The ceiling: scikit-learn's predict with no server",
        "",
        f"The same model files and rows, `predict` called in a loop on CPU {pins['servers']} "
        f"({report['rounds']} x {report['duration_s']} s, median). A server that merges "
        "one-row requests into one call can pass the one-row ceiling; the line for the "
        "batch it forms is its limit then.",
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
