#!/usr/bin/env python3
"""Batch scoring: Kubeloop's scorer vs scikit-learn's predict on in-memory arrays (the
ceiling) vs Ray Data ``map_batches`` vs Spark ``predict_batch_udf``.

Generates a Parquet dataset once (N rows x 20 float64 features and an id, in files of
several row groups) into a cache directory outside the repository (per dataset version:
``~/.cache/kubeloop/bench/batch-data-v<V>/``), trains a gradient-boosting classifier (the
example's estimator) on a sample and writes it as a model directory, then measures, each
run in a fresh process, medians of ``--repeats`` rounds, the contenders' order reversed
every other round:

- ``sklearn``: ``predict`` and ``predict_proba`` on the whole dataset as one float64
  array already in memory (reading not timed): the ceiling, one process, one core;
- ``kubeloop-wN``: ``kubeloop batch``'s scorer (``kubeloop.batch.run.score``) with N
  worker processes over the same files, writing id, prediction and probabilities as
  Parquet, manifests and all: I/O and loading the model included (the process's imports
  are not, as for the ceiling; worker processes' are);
- ``ray`` and ``spark``: bench/batch_contenders.py in their own virtualenvs (made by
  bench/batch_bench.sh), the same model file, the same columns written as Parquet; the
  engine's start (``ray.init``, the SparkSession) is not timed, reported aside.

Each output is checked after its run (not timed): every input id exactly once, and the
prediction and probabilities equal to scikit-learn's on a sample of rows. Peak resident
memory (VmHWM) of the contender's process and of each process under it, polled from
/proc. Results: bench/results/batch.json; the README section between the batch-bench
markers is rendered from it (``--render-only`` re-renders without running).

    bash bench/batch_bench.sh [--rows 10000000] [--repeats 3]   # make bench-batch
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "batch.json"
README = REPO / "bench" / "README.md"
CONTENDERS = REPO / "bench" / "batch_contenders.py"
START_MARKER = "<!-- batch-bench:start -->"
END_MARKER = "<!-- batch-bench:end -->"
DEFAULT_CACHE = Path(os.environ.get("KUBELOOP_CACHE") or Path.home() / ".cache" / "kubeloop")
DATA_VERSION = 1  # bump when generate() changes what it writes
FEATURES = 20
FEATURE_NAMES = [f"f{j:02d}" for j in range(FEATURES)]
CLASSES = ["a", "b", "c"]
SEED = 20241201
SAMPLE_ROWS = 256  # rows checked per input file
CHILD_TIMEOUT_S = 3600


def dataset_dir(args: argparse.Namespace) -> Path:
    key = f"rows{args.rows}-f{FEATURES}-files{args.files}-rg{args.row_group_rows}-s{SEED}"
    return args.cache / "bench" / f"batch-data-v{DATA_VERSION}" / key


def generate(args: argparse.Namespace) -> Path:
    """The dataset and the model, made once per key (written aside, then renamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = dataset_dir(args)
    if (root / "done").is_file():
        return root
    print(f"generating {root}", file=sys.stderr)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    weights = rng.normal(size=(FEATURES, 3))
    per_file = -(-args.rows // args.files)
    for i in range(args.files):
        n = min(per_file, args.rows - i * per_file)
        x = rng.normal(size=(n, FEATURES))
        columns = {"id": pa.array(np.arange(i * per_file, i * per_file + n))}
        columns |= {name: pa.array(x[:, j]) for j, name in enumerate(FEATURE_NAMES)}
        pq.write_table(
            pa.table(columns), tmp / "data" / f"part-{i:03d}.parquet",
            row_group_size=args.row_group_rows,
        )
    x = rng.normal(size=(20_000, FEATURES))
    y = np.argmax(x @ weights + rng.normal(scale=0.5, size=(20_000, 3)), axis=1)
    write_model(tmp / "model", x, y)
    (tmp / "done").write_text("")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def write_model(out: Path, x: np.ndarray, y: np.ndarray) -> None:
    """A model directory as examples/train/train.py writes one (its building blocks)."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    from kubeloop.modeldir import (
        METADATA_FILE,
        MODEL_FILE,
        ModelMetadata,
        TensorSpec,
        write_manifest,
    )

    estimator = GradientBoostingClassifier(n_estimators=100, random_state=0).fit(x, y)
    out.mkdir(parents=True)
    joblib.dump(estimator, out / MODEL_FILE)
    metadata = ModelMetadata(
        name="bench",
        version="1",
        framework="scikit-learn",
        inputs=[TensorSpec(name=name, datatype="FP64", shape=[-1]) for name in FEATURE_NAMES],
        outputs=[TensorSpec(name="predict", datatype="INT64", shape=[-1])],
        classes=CLASSES,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    (out / METADATA_FILE).write_text(metadata.model_dump_json(indent=1) + "\n")
    write_manifest(out)


# --- the in-project contenders, each in a fresh process (--child) --------------------


def run_sklearn(root: Path) -> dict[str, Any]:
    import joblib
    import pyarrow.parquet as pq

    estimator = joblib.load(root / "model" / "model.joblib")
    table = pq.read_table(root / "data", columns=FEATURE_NAMES)
    x = np.column_stack([table.column(j).to_numpy() for j in range(FEATURES)])
    del table
    start = time.perf_counter()
    estimator.predict(x)
    estimator.predict_proba(x)
    return {"seconds": time.perf_counter() - start, "rows": len(x)}


def run_kubeloop(root: Path, workers: int, out: Path, batch_rows: int) -> dict[str, Any]:
    # Process start-up is not timed, as for the ceiling: the libraries imported first.
    import sklearn.ensemble  # noqa: F401

    from kubeloop.batch.features import OutputSpec
    from kubeloop.batch.run import Request, score

    request = Request(
        model_dir=str(root / "model"),
        input=str(root / "data"),
        output=str(out),
        spec=OutputSpec(passthrough=("id",)),
        batch_rows=batch_rows,
    )
    start = time.perf_counter()
    summary = score(request, 0, 1, workers)
    seconds = time.perf_counter() - start
    assert summary["output"]["rows"] == summary["rowsScored"], summary
    return {"seconds": seconds, "rows": summary["rowsScored"]}


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; JSON on stdout."""
    os.environ.setdefault("KUBELOOP_PROGRESS_PORT", "0")
    root = dataset_dir(args)
    if args.child == "sklearn":
        result = run_sklearn(root)
    else:
        workers = int(args.child.split("-w")[1])
        result = run_kubeloop(root, workers, output_dir(args, args.child), args.batch_rows)
    print(json.dumps(result))


# --- peak memory: every process under the contender's, from /proc --------------------


def read_proc(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, session id, name) of a live process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3]), name


def peak_kib(status: str) -> int:
    """VmHWM (the peak resident set) of a /proc/PID/status text, in KiB; 0 if absent."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class PeakMemory(threading.Thread):
    """Polls the peak resident memory of a process and of every process in its session
    (it is started in a session of its own, so the engine's daemons count too)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self.stopping = threading.Event()

    def members(self) -> list[tuple[int, str]]:
        found = []
        for entry in os.scandir("/proc"):
            info = read_proc(int(entry.name)) if entry.name.isdigit() else None
            if info is not None and info[1] == self.pid:
                found.append((int(entry.name), info[2]))
        return found

    def poll(self) -> None:
        for pid, name in self.members():
            try:
                kib = peak_kib(Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue
            self.peaks[pid] = (name, max(kib, self.peaks.get(pid, (name, 0))[1]))

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def summary(self) -> dict[str, Any]:
        return summarize_peaks(self.pid, self.peaks)


def summarize_peaks(main: int, peaks: dict[int, tuple[str, int]]) -> dict[str, Any]:
    """The main process's peak and the largest other process's, in MiB, with its name,
    the number of processes seen, and the largest peak per process name."""
    others = {pid: peak for pid, peak in peaks.items() if pid != main}
    largest = max(others.values(), key=lambda p: p[1], default=("", 0))
    by_name: dict[str, float] = {}
    for name, kib in peaks.values():
        by_name[name] = max(by_name.get(name, 0.0), round(kib / 1024, 1))
    return {
        "self": round(peaks.get(main, ("", 0))[1] / 1024, 1),
        "largest_worker": round(largest[1] / 1024, 1),
        "largest_worker_name": largest[0],
        "processes": len(peaks),
        "by_name": dict(sorted(by_name.items())),
    }


def end_session(sid: int) -> None:
    """Kill what the contender's session left running (an engine's daemons), by pid."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (info := read_proc(int(entry.name))) and info[1] == sid:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


# --- runs ------------------------------------------------------------------------------


def output_dir(args: argparse.Namespace, contender: str) -> Path:
    return args.cache / "bench" / "batch-out" / contender


def command(args: argparse.Namespace, contender: str) -> list[str]:
    root = dataset_dir(args)
    if contender in ("ray", "spark"):
        python = getattr(args, f"{contender}_python")
        return [
            str(python), str(CONTENDERS), contender, "--data", str(root / "data"),
            "--model", str(root / "model"), "--out", str(output_dir(args, contender)),
            "--cpus", str(args.cpus), "--batch-rows", str(args.batch_rows),
        ]
    return [sys.executable, __file__, "--child", contender, *passed_through(args)]


def run_once(args: argparse.Namespace, contender: str, estimator: Any) -> dict[str, Any]:
    out = output_dir(args, contender)
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    load = os.getloadavg()[0]
    process = subprocess.Popen(
        command(args, contender), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )
    memory = PeakMemory(process.pid)
    memory.start()
    try:
        stdout, stderr = process.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        memory.stop()
        end_session(process.pid)
    if process.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{stderr[-3000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["rows"] = args.rows
    if contender != "sklearn":
        result["check"] = verify(dataset_dir(args), out, args.rows, estimator)
        shutil.rmtree(out)
    result["peak_rss_mib"] = memory.summary()
    result["load_at_start"] = round(load, 2)
    print(f"{contender:12s} {result['rows'] / result['seconds']:12,.0f} rows/s  load {load:.2f}")
    return result


def output_files(out: Path) -> list[Path]:
    """The Parquet files of an output directory, as pyarrow's datasets see them: files
    and directories named with a leading _ or . (manifests, markers) left out."""
    return sorted(
        p for p in out.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(out).parts)
    )


def sample_inputs(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, feature rows) of SAMPLE_ROWS rows of one row group in every input file."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    ids, rows = [], []
    for path in sorted((root / "data").glob("*.parquet")):
        parquet = pq.ParquetFile(path)
        group = parquet.read_row_group(int(rng.integers(parquet.num_row_groups)))
        pick = np.sort(rng.choice(group.num_rows, min(SAMPLE_ROWS, group.num_rows), False))
        ids.append(group.column("id").to_numpy()[pick])
        rows.append(np.column_stack([group.column(n).to_numpy()[pick] for n in FEATURE_NAMES]))
    return np.concatenate(ids), np.concatenate(rows)


def verify(root: Path, out: Path, rows: int, estimator: Any) -> dict[str, Any]:
    """Every input id exactly once in the output, and the prediction and probabilities
    of the sampled rows equal to scikit-learn's; raises (the run fails) if not."""
    import pyarrow.parquet as pq

    sample_ids, sample_rows = sample_inputs(root)
    columns = ["id", "prediction", *(f"probability_{c}" for c in CLASSES)]
    ids, found = [], []
    for path in output_files(out):
        table = pq.read_table(path, columns=columns)
        file_ids = table.column("id").to_numpy()
        ids.append(file_ids)
        hit = np.isin(file_ids, sample_ids)
        if hit.any():
            found.append(np.column_stack([table.column(c).to_numpy()[hit] for c in columns]))
    all_ids = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    problems = check_ids(all_ids, rows)
    got = np.concatenate(found) if found else np.empty((0, len(columns)))
    got = got[np.argsort(got[:, 0], kind="stable")]
    order = np.argsort(sample_ids)
    expected = np.column_stack(
        [sample_ids[order], estimator.predict(sample_rows[order]),
         estimator.predict_proba(sample_rows[order])]
    )
    if got.shape != expected.shape:
        problems.append(f"{len(got)} of the {len(expected)} sampled rows found")
    elif not np.array_equal(got[:, :2], expected[:, :2]):
        problems.append("predictions differ from scikit-learn's on the sample")
    elif not np.allclose(got[:, 2:], expected[:, 2:], rtol=0, atol=1e-12):
        problems.append("probabilities differ from scikit-learn's on the sample")
    if problems:
        raise SystemExit(f"{out}: " + "; ".join(problems))
    return {"rows": int(all_ids.size), "ids_exactly_once": True, "sampled_rows_equal": len(got)}


def check_ids(ids: np.ndarray, rows: int) -> list[str]:
    """What is wrong with an output's ids, whose input holds the ids 0..rows-1 once each."""
    problems = []
    if ids.size != rows:
        problems.append(f"{ids.size} rows written for {rows} read")
    unique = np.unique(ids)
    if unique.size != ids.size:
        problems.append(f"{ids.size - unique.size} rows written twice")
    if unique.size and (unique[0] < 0 or unique[-1] >= rows):
        problems.append("ids that are not the input's")
    return problems


def round_orders(contenders: list[str], repeats: int) -> list[list[str]]:
    """Each round's order: as given, then reversed, alternately, so that a contender is
    neither always first (a cold page cache) nor always after the same neighbour."""
    return [contenders if r % 2 == 0 else contenders[::-1] for r in range(repeats)]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's runs: the median rate, each run's, and the largest peaks."""
    rates = [r["rows"] / r["seconds"] for r in runs]
    memory = [r["peak_rss_mib"] for r in runs]
    result: dict[str, Any] = {
        "rows_per_second": round(statistics.median(rates)),
        "runs_rows_per_second": [round(r) for r in rates],
        "load_at_start": [r["load_at_start"] for r in runs],
        "peak_rss_mib": max(memory, key=lambda m: (m["self"], m["largest_worker"])),
        "peak_rss_mib_largest_worker": max(m["largest_worker"] for m in memory),
    }
    if "startup_seconds" in runs[0]:
        result["startup_seconds_median"] = round(
            statistics.median(r["startup_seconds"] for r in runs), 2
        )
    if "check" in runs[0]:
        result["checks"] = [r["check"] for r in runs]
    return result


def measure(args: argparse.Namespace, contenders: list[str]) -> tuple[dict[str, Any], dict]:
    import joblib

    estimator = joblib.load(dataset_dir(args) / "model" / "model.joblib")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for order in round_orders(contenders, args.repeats):
        for name in order:
            runs[name].append(run_once(args, name, estimator))
    settings = {name: done[0]["settings"] for name, done in runs.items() if "settings" in done[0]}
    return {name: aggregate(done) for name, done in runs.items()}, settings


def passed_through(args: argparse.Namespace) -> list[str]:
    return [
        "--rows", str(args.rows), "--files", str(args.files),
        "--row-group-rows", str(args.row_group_rows), "--cache", str(args.cache),
        "--batch-rows", str(args.batch_rows),
    ]


def git_commit() -> dict[str, Any]:
    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
        ).stdout

    # Tracked files only: an untracked link to the virtualenv changes nothing measured.
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"sha": git("rev-parse", "HEAD").strip(), "dirty": any(changed)}


# --- the README section ------------------------------------------------------------------

LABELS = {"sklearn": "scikit-learn predict, in memory (the ceiling)", "ray": "Ray Data",
          "spark": "Spark"}


def label(name: str, settings: dict[str, Any]) -> str:
    if name.startswith("kubeloop-w"):
        workers = int(name.split("-w")[1])
        return f"Kubeloop scorer, {workers} worker{'s' if workers > 1 else ''}"
    version = settings.get(name, {}).get("version")
    return LABELS.get(name, name) + (f" {version}" if version else "")


def cores(name: str, document: dict[str, Any]) -> int:
    if name == "sklearn":
        return 1
    if name.startswith("kubeloop-w"):
        return int(name.split("-w")[1])
    return int(document["cpus"])


def protocol(document: dict[str, Any]) -> str:
    s = document["settings"]
    parts = [
        "`make bench-batch` (`bench/batch_bench.sh`, then `bench/batch_bench.py`): "
        f"{document['rows']:,} rows x {document['features']} float64 features and an id in "
        f"{document['files']} Parquet files of {document['row_group_rows']:,}-row row groups; "
        f"{document['model']}; every contender but the ceiling reads the files and writes "
        f"{document['outputs']}, in batches of {document['batch_rows']:,} rows.",
        f"Kubeloop: {s['kubeloop']['how']}.",
    ]
    if "ray" in s:
        r = s["ray"]
        m = r["map_batches"]
        parts.append(
            f"Ray Data {r['version']} (its batch inference guide): local `ray.init(num_cpus="
            f"{r['ray.init']['num_cpus']})`, `read_parquet`, `map_batches` with a callable class "
            f"loading the model once per actor, `concurrency={m['concurrency']}`, "
            f"`num_cpus={m['num_cpus']}` (with 1 CPU each the actors hold both CPUs and Ray "
            "Data never schedules its reads), "
            f"`batch_size={m['batch_size']}`, `batch_format=\"{m['batch_format']}\"`, "
            "`write_parquet`."
        )
    if "spark" in s:
        k = s["spark"]
        conf = ", ".join(f"`{key}={value}`" for key, value in k["conf"].items())
        parts.append(
            f"Spark {k['version']} (`pyspark.ml.functions.predict_batch_udf`): master "
            f"`{k['master']}`, {conf}; a `make_predict_fn` loading the model once per Python "
            f"worker, `batch_size={k['predict_batch_udf']['batch_size']}`, the 20 feature "
            "columns combined with `array()` and `input_tensor_shapes=[[20]]` (the docs' way "
            "for a model of one input), a struct of the prediction and the probabilities "
            "out, `PYSPARK_PYTHON` its virtualenv's, `write.parquet`."
        )
    startups = [
        f"{label(n, s)} {r['startup_seconds_median']} s"
        for n, r in document["results"].items() if "startup_seconds_median" in r
    ]
    parts.append(
        f"Each run a fresh process; medians of {document['repeats']} rounds, the order "
        "reversed every other round; rows/s include reading, loading the model, worker "
        "start and writing (the ceiling: predict and predict_proba only, the array "
        "already in memory)"
        + (f"; the engine's start is not timed ({', '.join(startups)})" if startups else "")
        + ". Every output checked after its run: each input id exactly once, prediction "
        "and probabilities equal to scikit-learn's on sampled rows. Peak memory: VmHWM of "
        "the contender's process and of the largest process of its session."
    )
    commit = document["commit"]
    parts.append(
        f"Machine: {document['machine']['cpus']} CPUs, load average "
        f"{document['machine']['load_at_start']:.2f} at the start. Commit "
        f"{commit['sha'][:12]}{' with uncommitted changes' if commit['dirty'] else ''}, "
        f"{document['generated']}; results in `bench/results/batch.json`."
    )
    return " ".join(parts)


def render(document: dict[str, Any]) -> str:
    """The README section (without its markers), from the results alone."""
    results, settings = document["results"], document["settings"]
    note = [f"**{document['note']}**", ""] if document.get("note") else []
    lines = [
        "## Batch scoring: Kubeloop vs Ray Data vs Spark", "", *note, protocol(document), "",
        "| contender | cores | rows/s (median) | each run | of the ceiling "
        "| peak MiB: process / largest other (name) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, r in results.items():
        memory = r["peak_rss_mib"]
        other = (
            f"{memory['largest_worker']:,.0f} ({memory['largest_worker_name']})"
            if memory["largest_worker"] else "-"
        )
        lines.append(
            f"| {label(name, settings)} | {cores(name, document)} | {r['rows_per_second']:,} "
            f"| {' / '.join(f'{x:,}' for x in r['runs_rows_per_second'])} "
            f"| {r['fraction_of_ceiling']:.0%} | {memory['self']:,.0f} / {other} |"
        )
    lines += ["", verdict(results)]
    return "\n".join(lines) + "\n"


def verdict(results: dict[str, Any]) -> str:
    """The issue's goals, stated from the figures: Kubeloop in one process against the
    ceiling (goal: at least 80%), and Kubeloop's best against Ray Data and Spark."""
    said = []
    if "kubeloop-w1" in results:
        fraction = results["kubeloop-w1"]["fraction_of_ceiling"]
        said.append(
            f"Kubeloop in one process: {fraction:.0%} of the ceiling's rows/s including I/O "
            f"(goal: at least 80%: {'met' if fraction >= 0.8 else 'not met'})."
        )
    kube = {n: r for n, r in results.items() if n.startswith("kubeloop-w")}
    if kube:
        best_name = max(kube, key=lambda n: kube[n]["rows_per_second"])
        best = kube[best_name]["rows_per_second"]
        for other in ("ray", "spark"):
            if other in results:
                ratio = best / results[other]["rows_per_second"]
                said.append(
                    f"{label(best_name, {})} vs {LABELS[other]}: {ratio:.2f}x "
                    f"({'ahead' if ratio > 1 else 'behind'})."
                )
    return " ".join(said)


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    block = f"{START_MARKER}\n{section}{END_MARKER}"
    if START_MARKER in text:
        head, rest = text.split(START_MARKER, 1)
        text = head + block + rest.split(END_MARKER, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group-rows", type=int, default=125_000)
    parser.add_argument("--batch-rows", type=int, default=65_536, help="rows per predict call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", default=None, help="Kubeloop's, e.g. 1,2 (default 1,cpus)")
    parser.add_argument("--ray-python", type=Path, help="Ray's virtualenv (batch_bench.sh)")
    parser.add_argument("--spark-python", type=Path, help="Spark's virtualenv (batch_bench.sh)")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="dataset cache ($KUBELOOP_CACHE)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--render-only", action="store_true", help="re-render the README")
    parser.add_argument("--note", help="a line shown above the results (e.g. a smoke run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "operator"))
    if args.child:
        child(args)
        return
    if args.render_only:
        write_readme(args.readme, render(json.loads(args.output.read_text())))
        return
    started = dt.datetime.now(dt.UTC)
    commit = git_commit()  # what is measured: the tree at the start
    load = os.getloadavg()[0]
    generate(args)
    workers = args.workers or f"1,{args.cpus}"
    contenders = ["sklearn"] + [f"kubeloop-w{w}" for w in dict.fromkeys(workers.split(","))]
    contenders += [n for n in ("ray", "spark") if getattr(args, f"{n}_python")]
    results, settings = measure(args, contenders)
    ceiling = results["sklearn"]["rows_per_second"]
    for result in results.values():
        result["fraction_of_ceiling"] = round(result["rows_per_second"] / ceiling, 3)
    settings["kubeloop"] = {
        "how": "`kubeloop.batch.run.score` (what `kubeloop batch` runs in a pod), id passed "
        "through, shards of row groups over N worker processes (one per core), "
        f"batch_rows={args.batch_rows}",
        "batch_rows": args.batch_rows,
    }
    document = {
        "generated": started.isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "load_at_start": round(load, 2)},
        "rows": args.rows,
        "features": FEATURES,
        "files": args.files,
        "row_group_rows": args.row_group_rows,
        "batch_rows": args.batch_rows,
        "cpus": args.cpus,
        "model": "GradientBoostingClassifier(n_estimators=100), 3 classes",
        "outputs": "id, prediction and 3 class probabilities (Parquet)",
        "repeats": args.repeats,
        "note": args.note,
        "seconds": round(time.time() - started.timestamp()),
        "settings": settings,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    write_readme(args.readme, render(document))
    print(f"wrote {args.output} and {args.readme}")


if __name__ == "__main__":
    main()
