#!/usr/bin/env python3
"""Model server benchmark: ``kubeloop serve`` (feature histograms on) against MLServer,
side by side in one run, on loopback, serving the same joblib files through the same
Open Inference Protocol v2 requests.

Both servers run one process pinned to one core (kubeloop ``--workers 1``; MLServer
``parallel_workers: 0``, inference in the server process) and the load generator runs
on the other core, so neither steals the other's CPU. Both batch adaptively with the
same settings: the same ``max_batch_time``, and the same cap in requests (MLServer's
``max_batch_size`` counts requests, kubeloop's rows, so kubeloop runs one server per
request size, its row cap that many requests of that size). MLServer runs with
``debug: false`` (no access log; Kubeloop writes none either), everything else its
default, metrics included. Every answer is checked against scikit-learn's own predict.

The grid: two models from examples/train/train.py (the example's gradient-boosting
classifier, and logistic regression, the cheapest scikit-learn predict, which shows the
servers' own overhead), 1 and 64 rows per request, 16 and 64 connections, and three
request kinds: REST with a JSON body, REST with the binary tensor extension (tritonclient's
default body, built by tritonclient itself), and gRPC (raw tensor contents, as tritonclient
sends them). wrk drives REST; bench/grpcload (a small Go closed-loop generator on
google.golang.org/grpc, built by bench/build-grpcload.sh) drives gRPC; both keep one
request in flight per connection. Every server starts up front and idles while another
is measured; each cell warms both up, then measures them in rounds (5 by default), the
order of the servers reversed every round, and the first round's order alternating from
cell to cell, so that neither server always goes first. The figures are medians over
rounds, with each round's figures kept: the rendered section shows the range, and a cell
meets the goal only when Kubeloop's worst round beats MLServer's best.

Before measuring, each server process is checked for the HTTP parser and event loop it
has loaded (its native modules in /proc/PID/maps): MLServer must run on httptools and
uvloop (uvicorn[standard], which bench/serving_bench.sh installs), or the run stops. The
results record them, with the commit (and whether the working tree was dirty) and the
UTC date.

    bash bench/serving_bench.sh            # the run of record (about 45 minutes)
    bash bench/serving_bench.sh --smoke    # one cell per request kind, 1 s rounds, to a
                                           # scratch results file; no README change

Two more tables: batching on against off (gradient boosting, 16 connections of one row,
REST JSON), and the ceiling, scikit-learn's own ``predict`` with no server, on the same
core. Results go to bench/results/serving.json and to the "Model server" section of
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import requests
from sklearn.datasets import load_iris

REPO = Path(__file__).resolve().parents[1]
LUA = REPO / "bench" / "serving_bench.lua"
TRAIN = REPO / "examples" / "train" / "train.py"
RESULTS = REPO / "bench" / "results" / "serving.json"
README = REPO / "bench" / "README.md"
SECTION_START = "<!-- serving-bench:start -->"
SECTION_END = "<!-- serving-bench:end -->"
ESTIMATORS = ("gradient-boosting", "logistic-regression")
ROWS = (1, 64)
CONNECTIONS = (16, 64)
KINDS = ("rest-json", "rest-binary", "grpc")
CEILING_ROWS = (1, 16, 64)
NO_BATCHING = "gradient-boosting"  # the model of the batching on/off table
BATCHING_CONNECTIONS = 16  # and its connections (one row per request, REST JSON)
TARGET_RATIO = 2.0  # the goal: this many times MLServer's throughput, lower p99
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
SERVER_CPU = "0"
LOAD_CPU = "1"
IDLE_LOAD = 0.5  # the 1-minute load average under which the machine counts as idle


@dataclass
class Server:
    label: str
    process: subprocess.Popen[bytes]
    base_url: str
    grpc_address: str
    model_names: dict[str, str] = field(default_factory=dict)
    """Model name to infer on, per estimator."""

    def infer_url(self, estimator: str) -> str:
        return f"{self.base_url}/v2/models/{self.model_names[estimator]}/infer"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Bodies:
    """One request, in each kind, for one number of rows."""

    rows: np.ndarray
    json: bytes
    binary: bytes
    binary_header_length: int
    grpc: dict[str, bytes]
    """Serialised ModelInferRequest per model name (the name is inside the message)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def train(workdir: Path, estimators: tuple[str, ...] = ESTIMATORS) -> dict[str, Path]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "operator"), env.get("PYTHONPATH")) if p
    )
    dirs = {}
    for estimator in estimators:
        out = workdir / "models" / estimator
        subprocess.run(
            [sys.executable, str(TRAIN), "--output", str(out), "--estimator", estimator],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        dirs[estimator] = out
    return dirs


def start_process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Any:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as a whole
        )


def start_kubeloop(
    label: str, estimator: str, model_dir: Path, workdir: Path, batch_size: int, wait_ms: float
) -> Server:
    port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "kubeloop", "serve", "--model-dir", str(model_dir)]
    argv += ["--name", estimator, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--grpc-port", str(grpc_port), "--workers", "1"]
    argv += ["--max-batch-size", str(batch_size), "--max-batch-wait-ms", str(wait_ms)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELOOP_")}
    process = start_process(argv, workdir / f"{label.replace('/', '-')}.log", env)
    return Server(
        label, process, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", {estimator: estimator}
    )


def mlserver_model(repo: Path, name: str, model_dir: Path, batching: dict[str, Any]) -> None:
    (repo / name).mkdir(parents=True)
    (repo / name / "model.joblib").write_bytes((model_dir / "model.joblib").read_bytes())
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    } | batching
    (repo / name / "model-settings.json").write_text(json.dumps(settings))


def start_mlserver(
    mlserver: str, models: dict[str, Path], workdir: Path, batching: dict[str, Any]
) -> tuple[Server, Server]:
    """One MLServer process serving every model with batching on, and the no-batching
    model under its own name; returned as two views of the same process."""
    repo = workdir / "mlserver"
    for estimator, model_dir in models.items():
        mlserver_model(repo, estimator, model_dir, batching)
    mlserver_model(repo, f"{NO_BATCHING}-unbatched", models[NO_BATCHING], {})
    port, grpc_port = free_port(), free_port()
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
    }
    (repo / "settings.json").write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
    process = start_process([mlserver, "start", str(repo)], workdir / "mlserver.log", env)
    base, address = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    batched = Server("mlserver", process, base, address, {e: e for e in models})
    unbatched = Server(
        "mlserver/unbatched", process, base, address, {NO_BATCHING: f"{NO_BATCHING}-unbatched"}
    )
    return batched, unbatched


def wait_ready(server: Server, deadline_s: float = 180.0) -> None:
    deadline = time.monotonic() + deadline_s
    for name in server.model_names.values():
        while True:
            if server.process.poll() is not None:
                raise SystemExit(f"{server.label} exited with {server.process.returncode}")
            try:
                url = f"{server.base_url}/v2/models/{name}/ready"
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{server.label} was not ready in {deadline_s:.0f}s")
            time.sleep(0.2)


def make_bodies(rows: np.ndarray, model_names: list[str]) -> Bodies:
    from tritonclient.grpc import service_pb2
    from tritonclient.http import InferenceServerClient, InferInput

    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    body_json = json.dumps({"inputs": [tensor | {"data": rows.tolist()}]}).encode()
    binary_input = InferInput("input-0", list(rows.shape), "FP64")
    binary_input.set_data_from_numpy(rows.astype(np.float64))  # binary, as by default
    body_binary, header_length = InferenceServerClient.generate_request_body([binary_input])
    grpc_bodies = {}
    for name in model_names:
        message = service_pb2.ModelInferRequest(model_name=name)
        message.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
        message.raw_input_contents.append(rows.astype("<f8").tobytes())
        grpc_bodies[name] = message.SerializeToString()
    return Bodies(rows, body_json, body_binary, header_length or 0, grpc_bodies)


def answer(server: Server, estimator: str, kind: str, bodies: Bodies) -> list[Any]:
    """The server's predictions for the request of this kind, decoded; raises with the
    server's own message when it refuses the request."""
    if kind == "grpc":
        return grpc_answer(server, estimator, bodies)
    if kind == "rest-json":
        headers = {"Content-Type": "application/json"}
        body = bodies.json
    else:
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(bodies.binary_header_length),
        }
        body = bodies.binary
    response = requests.post(server.infer_url(estimator), data=body, headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    header_length = response.headers.get("Inference-Header-Content-Length")
    if header_length is None:
        output = next(o for o in response.json()["outputs"] if o["name"] == "predict")
        return list(np.ravel(output["data"]))
    from tritonclient.http import InferResult

    result = InferResult.from_response_body(response.content, False, int(header_length))
    return list(np.ravel(result.as_numpy("predict")))


def grpc_answer(server: Server, estimator: str, bodies: Bodies) -> list[Any]:
    from tritonclient.grpc import service_pb2

    name = server.model_names[estimator]
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(INFER_METHOD)
        raw = call(bodies.grpc[name], timeout=10)
    reply = service_pb2.ModelInferResponse.FromString(raw)
    for index, output in enumerate(reply.outputs):
        if output.name != "predict":
            continue
        if reply.raw_output_contents:
            dtype = {"INT64": "<i8", "INT32": "<i4", "FP64": "<f8", "FP32": "<f4"}
            data = reply.raw_output_contents[index]
            return list(np.frombuffer(data, dtype=dtype[output.datatype]))
        contents = output.contents
        for typed in ("int64_contents", "int_contents", "fp64_contents", "fp32_contents"):
            values = list(getattr(contents, typed))
            if values:
                return values
    raise RuntimeError(f"no 'predict' output in {reply}")


def parse_summary(stdout: str) -> dict[str, Any]:
    line = next(x for x in stdout.splitlines() if x.startswith("BENCH_JSON "))
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(v for k, v in raw.items() if k.startswith("errors_") and isinstance(v, int))
    # wrk counts answers with a non-2xx status among its requests; only 2xx ones count here.
    answered = raw["requests"] - (raw["errors_status"] if "errors_connect" in raw else 0)
    return {
        "requests_per_s": answered / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "raw": raw,
    }


def load(
    server: Server,
    estimator: str,
    kind: str,
    workdir: Path,
    bodies: Bodies,
    grpcload: str,
    seconds: int,
    connections: int,
) -> dict[str, Any]:
    """One closed-loop run of `seconds` at `connections`, on the load core."""
    pin = ["taskset", "-c", LOAD_CPU]
    if kind == "grpc":
        body_file = workdir / "body.grpc"
        body_file.write_bytes(bodies.grpc[server.model_names[estimator]])
        argv = [*pin, grpcload, "-addr", server.grpc_address, "-method", INFER_METHOD]
        argv += ["-body", str(body_file), "-c", str(connections), "-d", str(seconds)]
        env = {**os.environ, "GOMAXPROCS": "1"}
    else:
        body_file = workdir / "body.http"
        binary = kind == "rest-binary"
        body_file.write_bytes(bodies.binary if binary else bodies.json)
        argv = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
        argv += ["-s", str(LUA), server.infer_url(estimator)]
        header = str(bodies.binary_header_length) if binary else ""
        env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_HEADER_LENGTH": header}
    result = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return parse_summary(result.stdout)


SUMMARY_KEYS = ("requests_per_s", "p50_ms", "p99_ms")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds, and each figure's range (lowest, highest round)."""
    return {
        key: round(statistics.median(r[key] for r in runs), 3) for key in SUMMARY_KEYS
    } | {
        "range": {
            key: [round(min(r[key] for r in runs), 3), round(max(r[key] for r in runs), 3)]
            for key in SUMMARY_KEYS
        },
        "errors": sum(r["errors"] for r in runs),
    }


def round_orders(keys: list[str], rounds: int, reverse_first: bool) -> list[list[str]]:
    """The contenders' order in each round: reversed every round, the first round
    reversed when `reverse_first` (which alternates from cell to cell)."""
    orders = []
    for index in range(rounds):
        order = list(keys)
        if (index + reverse_first) % 2:
            order.reverse()
        orders.append(order)
    return orders


def measure(
    contenders: dict[str, Server],
    estimator: str,
    kind: str,
    rows: int,
    connections: int,
    bodies: Bodies,
    workdir: Path,
    args: argparse.Namespace,
    expected: list[Any],
    reverse_first: bool = False,
) -> dict[str, Any]:
    """One cell: every contender's answer checked against `expected` (the model's own),
    a warm-up, then rounds with the contenders' order reversed every round. A contender
    that refuses the request is recorded as unsupported, with its message."""
    cell: dict[str, Any] = {
        "model": estimator,
        "rows": rows,
        "connections": connections,
        "kind": kind,
    }
    answers: dict[str, list[Any]] = {}
    for key, server in list(contenders.items()):
        try:
            answers[key] = answer(server, estimator, kind, bodies)
        except (RuntimeError, grpc.RpcError) as exc:
            cell[key] = {"unsupported": str(exc)[:300]}
            del contenders[key]
    # Every answer must be scikit-learn's own, on the same rows, without a server.
    for key, predicted in answers.items():
        if [str(x) for x in predicted] != [str(x) for x in expected]:
            raise SystemExit(f"{estimator} {kind}: {key} answers {predicted}, not {expected}")
    run = {
        "workdir": workdir,
        "bodies": bodies,
        "grpcload": args.grpcload,
        "connections": connections,
    }
    orders = round_orders(list(contenders), args.rounds, reverse_first)
    for key in orders[0]:
        load(contenders[key], estimator, kind, seconds=args.warmup, **run)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in contenders}
    for order in orders:
        for key in order:
            runs[key].append(load(contenders[key], estimator, kind, seconds=args.duration, **run))
    for key, measured in runs.items():
        cell[key] = summarise(measured) | {"runs": measured}
    cell["orders"] = orders
    cell["loadavg_after"] = loadavg()
    cell["with_errors"] = [k for k in runs if cell[k]["errors"]]
    print(
        f"{estimator}, {rows} rows, {connections} connections, {kind}: "
        + "; ".join(
            f"{key} {cell[key]['requests_per_s']:,.0f} req/s "
            f"({cell[key]['range']['requests_per_s'][0]:,.0f}-"
            f"{cell[key]['range']['requests_per_s'][1]:,.0f}), "
            f"p99 {cell[key]['p99_ms']:.1f} ms"
            for key in runs
        ),
        file=sys.stderr,
    )
    return cell


def ceiling(model_dir: Path, rows: np.ndarray, seconds: float, rounds: int) -> dict[str, Any]:
    """scikit-learn's own predict on `rows`, no server, on the server core: median
    calls/s over rounds (run in a pinned child process)."""
    script = (
        "import sys, time, json, joblib, numpy as np\n"
        "model = joblib.load(sys.argv[1])\n"
        "rows = np.asarray(json.loads(sys.argv[2]), dtype=np.float64)\n"
        "seconds, rounds = float(sys.argv[3]), int(sys.argv[4])\n"
        "model.predict(rows)\n"
        "rates = []\n"
        "for _ in range(rounds):\n"
        "    calls, start = 0, time.perf_counter()\n"
        "    while (elapsed := time.perf_counter() - start) < seconds:\n"
        "        model.predict(rows); calls += 1\n"
        "    rates.append(calls / elapsed)\n"
        "print(json.dumps(rates))\n"
    )
    argv = ["taskset", "-c", SERVER_CPU, sys.executable, "-c", script]
    argv += [str(model_dir / "model.joblib"), json.dumps(rows.tolist()), str(seconds), str(rounds)]
    rates: list[float] = json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)
    calls = statistics.median(rates)
    return {"calls_per_s": round(calls, 1), "rows_per_s": round(calls * len(rows), 1)}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


VERSION_SCRIPT = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
def have(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return None
print(json.dumps({p: have(p) for p in sys.argv[1:]}))
"""


def versions_in(python: str, packages: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions (None: absent) in the interpreter `python`."""
    out = subprocess.run([python, "-c", VERSION_SCRIPT, *packages], check=True, capture_output=True)
    found: dict[str, str | None] = json.loads(out.stdout)
    return found


def http_stacks(mlserver: str) -> dict[str, dict[str, str | None]]:
    """What parses HTTP in each server: kubeloop's aiohttp (its C parser or the Python
    one) with orjson for JSON bodies; MLServer's uvicorn with httptools (C) when
    installed, else h11 (pure Python), on uvloop when installed."""
    from aiohttp import http_parser

    kubeloop = versions_in(
        sys.executable,
        ("aiohttp", "grpcio", "orjson", "scikit-learn", "numpy", "prometheus-client"),
    )
    kubeloop["aiohttp parser"] = http_parser.HttpRequestParser.__module__
    packages = ("mlserver", "mlserver-sklearn", "scikit-learn", "uvicorn", "fastapi", "grpcio")
    mlserver_side = versions_in(
        str(Path(mlserver).with_name("python")), (*packages, "uvloop", "httptools", "h11", "orjson")
    )
    return {"kubeloop": kubeloop, "mlserver": mlserver_side}


def stack_from_maps(maps: str) -> dict[str, Any]:
    """The HTTP parser and event loop a server process has loaded, from its memory map
    (/proc/PID/maps): the native modules of httptools, uvloop and aiohttp's C parser.
    uvicorn's automatic choices (which MLServer keeps) take httptools and uvloop when
    they import; aiohttp imports its C parser unless told not to, and then uses it."""
    libs = sorted(
        {
            line.split()[-1]
            for line in maps.splitlines()
            if len(line.split()) >= 6 and ".so" in line.split()[-1]
        }
    )

    def loaded(fragment: str) -> str | None:
        return next((lib for lib in libs if fragment in lib), None)

    found = {
        "httptools": loaded("/httptools/parser/"),
        "uvloop": loaded("/uvloop/loop"),
        "aiohttp_c_parser": loaded("/aiohttp/_http_parser"),
    }
    return {
        "loaded": {k: Path(v).name for k, v in found.items() if v},
        "event_loop": "uvloop" if found["uvloop"] else "asyncio (standard library)",
        "uvicorn_http_parser": "httptools (C)" if found["httptools"] else "h11 (pure Python)",
        "aiohttp_http_parser": (
            "aiohttp's C parser (llhttp)" if found["aiohttp_c_parser"] else "pure Python"
        ),
    }


def runtime_stack(server: Server) -> dict[str, Any]:
    """What `server`'s process parses HTTP with and loops on, as loaded at run time."""
    found = stack_from_maps(Path(f"/proc/{server.process.pid}/maps").read_text())
    mlserver = server.label.startswith("mlserver")
    return {
        "http_parser": found["uvicorn_http_parser" if mlserver else "aiohttp_http_parser"],
        "event_loop": found["event_loop"],
        "native_modules": found["loaded"],
    }


def git_commit() -> dict[str, Any]:
    """HEAD, and whether the working tree differs from it (the paths that do)."""
    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
        ).stdout

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {
        "sha": git("rev-parse", "HEAD").strip(),
        "dirty": bool(changed),
        "dirty_paths": changed[:50],
    }


def wait_idle(limit_s: float) -> list[float]:
    """The load averages once the 1-minute one is under IDLE_LOAD, waiting up to
    `limit_s`; the run stops if the machine stays busy."""
    deadline = time.monotonic() + limit_s
    while (load_now := loadavg())[0] >= IDLE_LOAD:
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"the machine is busy (load average {load_now[0]:.2f}, not under "
                f"{IDLE_LOAD}): a run of record needs an idle machine (--allow-busy to "
                "measure anyway, recorded as not idle)"
            )
        time.sleep(10)
    return load_now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlserver", required=True, help="the mlserver executable")
    parser.add_argument("--grpcload", required=True, help="the grpcload executable")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per cell")
    parser.add_argument("--rounds", type=int, default=5, help="measured runs per cell")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="requests merged at most: MLServer's max_batch_size; kubeloop's row cap is "
        "this many of the largest requests",
    )
    parser.add_argument("--batch-wait-ms", type=float, default=1.0, help="max_batch_time, both")
    parser.add_argument("--no-readme", action="store_true", help="only write the JSON")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file")
    parser.add_argument(
        "--allow-busy", action="store_true", help="measure even if the machine is not idle"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the script: one model, 1-row requests, 16 connections, every request "
        "kind, 1 s warm-up, 2 rounds of 1 s, into a scratch results file, no README",
    )
    args = parser.parse_args()
    estimators: tuple[str, ...] = ESTIMATORS
    rows_grid: tuple[int, ...] = ROWS
    connections_grid: tuple[int, ...] = CONNECTIONS
    ceiling_rows: tuple[int, ...] = CEILING_ROWS
    if args.smoke:
        estimators, rows_grid, connections_grid, ceiling_rows = (NO_BATCHING,), (1,), (16,), (1,)
        args.duration, args.warmup, args.rounds = 1, 1, 2
        args.no_readme, args.allow_busy = True, True
        if args.results == RESULTS:
            args.results = Path(tempfile.gettempdir()) / "serving-smoke.json"

    from serving_bench_report import render_section, write_readme

    iris = load_iris().data
    rng = np.random.default_rng(0)
    samples = {1: iris[[75]], 16: iris[rng.choice(len(iris), 16, replace=False)]}
    samples[64] = iris[rng.choice(len(iris), 64, replace=False)]
    batching = {"max_batch_size": args.batch_size, "max_batch_time": args.batch_wait_ms / 1000}

    # MLServer's max_batch_size counts requests, kubeloop's --max-batch-size rows: the
    # same cap in requests is the request cap times the rows of each request, so kubeloop
    # runs one server per request size.
    def row_cap(rows: int) -> int:
        return int(args.batch_size * rows)

    loadavg_start = loadavg() if args.allow_busy else wait_idle(300)
    commit = git_commit()
    started = time.monotonic()
    cells: list[dict[str, Any]] = []
    unbatched_cells: list[dict[str, Any]] = []
    ceilings = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        models = train(workdir, estimators)
        own = {e: joblib.load(d / "model.joblib") for e, d in models.items()}
        for estimator in estimators:
            for rows in ceiling_rows:
                figures = ceiling(models[estimator], samples[rows], args.duration, args.rounds)
                ceilings.append({"model": estimator, "rows": rows} | figures)
        servers: list[Server] = []
        stacks: dict[str, dict[str, Any]] = {}
        try:
            kubeloop = {
                (e, rows): start_kubeloop(
                    f"kubeloop/{e}/{rows}", e, d, workdir, row_cap(rows), args.batch_wait_ms
                )
                for e, d in models.items()
                for rows in rows_grid
            }
            kubeloop_off = start_kubeloop(
                "kubeloop/unbatched", NO_BATCHING, models[NO_BATCHING], workdir, 1, 0
            )
            kubeloop_wait0 = start_kubeloop(
                "kubeloop/wait-0", NO_BATCHING, models[NO_BATCHING], workdir, row_cap(1), 0
            )
            mlserver, mlserver_off = start_mlserver(args.mlserver, models, workdir, batching)
            servers = [*kubeloop.values(), kubeloop_off, kubeloop_wait0, mlserver]
            for server in [*servers, mlserver_off]:
                wait_ready(server)
            stacks = {server.label: runtime_stack(server) for server in servers}
            if stacks["mlserver"]["http_parser"] != "httptools (C)" or (
                stacks["mlserver"]["event_loop"] != "uvloop"
            ):
                raise SystemExit(
                    f"MLServer runs on {stacks['mlserver']}, not httptools and uvloop: "
                    "install uvicorn[standard] in its virtualenv (bench/serving_bench.sh does)"
                )
            names = [*models, f"{NO_BATCHING}-unbatched"]
            bodies = {rows: make_bodies(samples[rows], names) for rows in rows_grid}
            for estimator in estimators:
                for rows in rows_grid:
                    expected = list(own[estimator].predict(samples[rows]))
                    for connections in connections_grid:
                        for kind in KINDS:
                            pair = {"kubeloop": kubeloop[estimator, rows], "mlserver": mlserver}
                            cells.append(
                                measure(
                                    pair,
                                    estimator,
                                    kind,
                                    rows,
                                    connections,
                                    bodies[rows],
                                    workdir,
                                    args,
                                    expected,
                                    reverse_first=len(cells) % 2 == 1,
                                )
                            )
            # Batching on and off, side by side in the same rounds.
            contenders = {
                "kubeloop": kubeloop[NO_BATCHING, 1],
                "kubeloop-wait-0": kubeloop_wait0,
                "kubeloop-unbatched": kubeloop_off,
                "mlserver": mlserver,
                "mlserver-unbatched": mlserver_off,
            }
            expected = list(own[NO_BATCHING].predict(samples[1]))
            unbatched_cells.append(
                measure(
                    contenders,
                    NO_BATCHING,
                    "rest-json",
                    1,
                    BATCHING_CONNECTIONS,
                    bodies[1],
                    workdir,
                    args,
                    expected,
                )
            )
        finally:
            for server in servers:
                server.stop()

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "smoke": args.smoke,
        "elapsed_s": round(time.monotonic() - started),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "round_order": "reversed every round; the first round's order alternates from cell "
        "to cell",
        "met_rule": "kubeloop's lowest round req/s > throughput_ratio x MLServer's highest, "
        "and kubeloop's highest round p99 < MLServer's lowest",
        "batching": batching,
        "kubeloop_max_batch_rows": {str(rows): row_cap(rows) for rows in rows_grid},
        "pinning": {"servers": SERVER_CPU, "load_generator": LOAD_CPU},
        "load_generators": {
            "rest": "wrk -t1 (one request in flight per connection)",
            "grpc": "bench/grpcload, GOMAXPROCS=1 (one call in flight per connection)",
        },
        "targets": {"throughput_ratio": TARGET_RATIO, "lower_p99": True},
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": loadavg(),
            "idle_load": IDLE_LOAD,
            "python": platform.python_version(),
        },
        "runtime_stacks": stacks,
        "versions": {
            **http_stacks(args.mlserver),
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1],
            "grpcload": Path(args.grpcload).name,
        },
        "mlserver_settings": {"parallel_workers": 0, "debug": False} | batching,
        "cells": cells,
        "unbatched": unbatched_cells,
        "ceiling": ceilings,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1) + "\n")
    section = render_section(report)
    if not args.no_readme:
        write_readme(README, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
