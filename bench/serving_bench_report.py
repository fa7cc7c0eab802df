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


def _rounds(figures: dict[str, Any], key: str) -> list[float]:
    """`key` in every measured round of one contender in one cell."""
    return [float(r[key]) for r in figures["runs"]]


def _spread(figures: dict[str, Any]) -> str:
    """The median req/s, and the lowest and highest round's."""
    rps = _rounds(figures, "requests_per_s")
    return f"{figures['requests_per_s']:,.0f} ({min(rps):,.0f} to {max(rps):,.0f})"


def _p99_range(figures: dict[str, Any]) -> str:
    p99 = _rounds(figures, "p99_ms")
    return f"{min(p99):.1f} to {max(p99):.1f}"


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


def goal_met(cell: dict[str, Any], ratio: float) -> bool | None:
    """Whether the cell meets the goal in every pair of rounds: kubeloop's slowest round
    is more than `ratio` times MLServer's fastest, and kubeloop's highest p99 of any round
    is below MLServer's lowest. None when either server refused the request."""
    k, m = cell["kubeloop"], cell["mlserver"]
    if _refused(m) or _refused(k):
        return None
    faster = min(_rounds(k, "requests_per_s")) > ratio * max(_rounds(m, "requests_per_s"))
    lower = max(_rounds(k, "p99_ms")) < min(_rounds(m, "p99_ms"))
    return faster and lower


def short_of_target(report: dict[str, Any]) -> list[str]:
    """Cells that do not meet the goal by `goal_met` (MLServer's own figures on the same
    request; cells it refused are left out), each with its medians and its worst-case
    figures: kubeloop's slowest round over MLServer's fastest, and the two p99s."""
    ratio = report["targets"]["throughput_ratio"]
    short = []
    for cell in report["cells"]:
        if goal_met(cell, ratio) is not False:
            continue
        k, m = cell["kubeloop"], cell["mlserver"]
        worst = min(_rounds(k, "requests_per_s")) / max(_rounds(m, "requests_per_s"))
        medians = k["requests_per_s"] / m["requests_per_s"]
        short.append(
            f"{cell['model']} {cell['rows']} row(s) x {cell['connections']} "
            f"{KIND_NAMES[cell['kind']]} (medians {medians:.2f}x, "
            f"slowest vs fastest round {worst:.2f}x; highest kubeloop p99 "
            f"{max(_rounds(k, 'p99_ms')):.1f} vs lowest MLServer p99 "
            f"{min(_rounds(m, 'p99_ms')):.1f} ms)"
        )
    return short


def main_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| model | rows | conns | request | kubeloop req/s, median (range) | "
        "MLServer req/s, median (range) | ratio of medians | kubeloop slowest / MLServer "
        "fastest round | kubeloop p50 / p99 ms (p99 range) | MLServer p50 / p99 ms "
        "(p99 range) | goal | errors |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    cells = report["cells"]
    ratio_goal = report["targets"]["throughput_ratio"]
    for cell in cells:
        k, m = cell["kubeloop"], cell["mlserver"]
        head = (
            f"| {cell['model']} | {cell['rows']} | {cell['connections']} | "
            f"{KIND_NAMES[cell['kind']]} | {_spread(k)} | "
        )
        k_latency = f"{_latency(k)} ({_p99_range(k)})"
        if _refused(m):
            twin = _json_twin(cells, cell)["mlserver"]
            ratio = k["requests_per_s"] / twin["requests_per_s"]
            worst = min(_rounds(k, "requests_per_s")) / max(_rounds(twin, "requests_per_s"))
            lines.append(
                head + f"refused | {ratio:.2f}x vs its JSON | {worst:.2f}x vs its JSON | "
                f"{k_latency} | JSON: {_latency(twin)} ({_p99_range(twin)}) | - | "
                f"{k['errors']} |"
            )
            continue
        ratio = k["requests_per_s"] / m["requests_per_s"]
        worst = min(_rounds(k, "requests_per_s")) / max(_rounds(m, "requests_per_s"))
        met = "met" if goal_met(cell, ratio_goal) else "missed"
        lines.append(
            head + f"{_spread(m)} | {ratio:.2f}x | {worst:.2f}x | {k_latency} | "
            f"{_latency(m)} ({_p99_range(m)}) | {met} | {k['errors'] + m['errors']} |"
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


def _runtime(report: dict[str, Any], server: str) -> dict[str, str]:
    """The HTTP parser and event loop every process of `server` (kubeloop, mlserver) had
    loaded, as the benchmark found them at run time; several values joined if they
    differ."""
    stacks = [v for k, v in report["runtime_stacks"].items() if k.split("/")[0] == server]
    return {
        key: " and ".join(sorted({s[key] for s in stacks}))
        for key in ("http_parser", "event_loop")
    }


def _stacks(report: dict[str, Any]) -> str:
    versions = report["versions"]
    k, m = versions["kubeloop"], versions["mlserver"]
    k_run, m_run = _runtime(report, "kubeloop"), _runtime(report, "mlserver")
    ml_parser = m_run["http_parser"]
    if ml_parser.startswith("httptools"):
        ml_parser = f"httptools {m.get('httptools')} (C)"
    elif ml_parser.startswith("h11"):
        ml_parser = f"h11 {m.get('h11')} (pure Python)"
    ml_loop = f"uvloop {m['uvloop']}" if m_run["event_loop"] == "uvloop" else m_run["event_loop"]
    json_k = f"orjson {k['orjson']}" if k.get("orjson") else "the standard json module"
    return (
        f"kubeloop: aiohttp {k['aiohttp']}, HTTP parsed by {k_run['http_parser']}, on "
        f"{k_run['event_loop']}, {json_k} for JSON bodies, grpcio {k['grpcio']}; MLServer: "
        f"uvicorn {m['uvicorn']} / FastAPI {m['fastapi']} (uvicorn[standard]), HTTP parsed "
        f"by {ml_parser}, on {ml_loop}, grpcio {m['grpcio']}. Parser and loop as loaded in "
        "each server process during the run (its native modules, from /proc/PID/maps)"
    )


def _commit(report: dict[str, Any]) -> str:
    commit = report["commit"]
    dirty = (
        f", with uncommitted changes in {len(commit['dirty_paths'])} path(s)"
        if commit["dirty"]
        else ""
    )
    return f"commit {commit['sha'][:12]}{dirty}"


def render_section(report: dict[str, Any]) -> str:
    if "commit" not in report or "runtime_stacks" not in report:
        raise ValueError(
            "a results file from before the protocol of issue 29 (no commit, no run-time "
            "stacks): run the benchmark again (bash bench/serving_bench.sh)"
        )
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
    idle = (
        "idle"
        if machine["loadavg_start"][0] < machine.get("idle_load", 0.5)
        else "**not idle**"
    )
    lines = [
        SECTION_START,
        "## Model server",
        "",
        *(
            ["**Smoke run** (`--smoke`): it checks the script; its figures are no "
             "measurement.", ""]
            if report.get("smoke")
            else []
        ),
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
        f"connected before the clock starts. HTTP stacks: {_stacks(report)}. "
        f"{report['warmup_s']} s warm-up per server per cell, then {report['rounds']} x "
        f"{report['duration_s']} s rounds, the servers' order {report['round_order']}; "
        "medians over rounds, with the range (slowest and fastest round). "
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {idle} before the run (load "
        f"average {machine['loadavg_start'][0]:.2f}; the run itself keeps both CPUs "
        f"busy: {machine['loadavg_end'][0]:.2f} at its end). Run at {_commit(report)}, "
        f"finished {report['date']} (UTC), {report['elapsed_s'] / 60:.0f} min; "
        "results in `bench/results/serving.json`.",
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
        f"The goal: {target:g}x MLServer's throughput with a lower p99, on the same "
        "request. A cell meets it only when it holds for every pair of rounds, not just "
        f"for the medians: kubeloop's slowest round is more than {target:g}x MLServer's "
        "fastest (kubeloop's lowest req/s > "
        f"{target:g} x MLServer's highest), and kubeloop's highest p99 of any round is "
        "below MLServer's lowest. Rounds that overlap leave the cell missed, whatever "
        "its medians say.",
        "",
        "Short of the goal in this run: " + ("; ".join(short) if short else "none") + ".",
        "",
        "Cells with failed requests: " + ("; ".join(errors) if errors else "none") + ".",
        "",
        "### Batching on and off",
        "",
        f"{report['unbatched'][0]['model']}, {report['unbatched'][0]['connections']} "
        f"connections of {report['unbatched'][0]['rows']} row(s) each, "
        f"{KIND_NAMES[report['unbatched'][0]['kind']]}; all five measured in the same "
        "rounds, in the table's order in the first round, the reverse in the second, and "
        "so on:",
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
