#!/usr/bin/env python3
"""Where the operator's CPU goes under a TrainingJob burst, before and after a change.

    python bench/profile_operator.py --baseline REV [--jobs 300] [--reps 3]

Two contenders in the same run: the operator of git revision REV (checked out in a
temporary worktree) and the operator of this checkout. Per repetition, for each in
turn (the order alternating): a fresh local control plane (hack/cluster.py), the
operator as its own process (`kubeloop run`, default settings), py-spy sampling it
(100 Hz, threads on CPU), and a burst of N single-worker CPU TrainingJobs
created at once by 16 client threads, until every one is Succeeded (kwok runs the
pods). Measured: the operator's CPU seconds from the first create to the last
Succeeded (/proc, user + system) per job, the time to all Succeeded, and py-spy's
samples, merged over repetitions into inclusive shares per function.

Results: bench/results/operator-profile.json and the "Operator profile" section of
bench/README.md (rendered from the file; `--render-only` re-renders it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from operator_bench import ROOT, Bed, Recorder, create_burst, free_port, proc_stats, wait_until
from operator_bench import _up as metrics_up

RESULTS = ROOT / "bench" / "results" / "operator-profile.json"
README = ROOT / "bench" / "README.md"
START = "<!-- operator-profile:start -->"
END = "<!-- operator-profile:end -->"
TOP = 15
# Frames under every sample (the entry point, the event loop): left out of the top list.
ENTRY_FRAMES = (
    "<frozen runpy>",
    "asyncio/base_events.py",
    "asyncio/runners.py",
    "asyncio/events.py",
    "kubeloop/__main__.py",
    "kubeloop/cli.py",
)
KEPT = 300  # functions kept per run in the results file (the rest are a long tail)
# Groups of frames, by where their code lives (inclusive: a sample counts once per group).
GROUPS = {
    "Kopf's diff base (kopf/_cogs/configs/diffbase.py)": ("kopf/_cogs/configs/diffbase.py",),
    "Kopf's event processing (kopf/_core/reactor/processing.py)": (
        "kopf/_core/reactor/processing.py",
    ),
    "JSON decoding (json/decoder.py)": ("json/decoder.py",),
    "Kubeloop's reconciles (kubeloop/controllers/)": ("kubeloop/controllers/",),
    "Kubeloop's API client (kubeloop/kube.py)": ("kubeloop/kube.py",),
}


KUBELOOP_RUN = [sys.executable, "-m", "kubeloop", "run", "--log-format", "text"]


def _job_complete(_: str, job: dict[str, Any]) -> str | None:
    """The TrainingJob whose Job this is, once the Job is Complete."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Complete" and cond.get("status") == "True":
            return (job["metadata"].get("labels") or {}).get("kubeloop.io/training-job")
    return None


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: pip install py-spy==0.4.3 (make bench-profile)")
    return found


def frame_key(frame: str) -> str:
    """`function (path/file.py)` from py-spy's `function (/abs/path/file.py:line)`."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "/operator/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def read_profile(path: Path) -> dict[str, Any]:
    """Inclusive sample counts per function and per group from a py-spy raw file
    (folded stacks: `frame;frame;... count`)."""
    functions: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        keys = {frame_key(f) for f in stack.split(";") if f}
        for key in keys:
            functions[key] += count
        for group, markers in GROUPS.items():
            if any(any(m in key for m in markers) for key in keys):
                groups[group] += count
    kept = dict(functions.most_common(KEPT))
    return {"samples": total, "functions": kept, "groups": dict(groups)}


def merge(profiles: list[dict[str, Any]]) -> dict[str, Any]:
    functions: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for p in profiles:
        functions.update(p["functions"])
        groups.update(p["groups"])
    return {
        "samples": sum(p["samples"] for p in profiles),
        "functions": dict(functions),
        "groups": dict(groups),
    }


def source_of(operator_dir: Path) -> str:
    """The kubeloop package a process started with this PYTHONPATH imports."""
    env = {**os.environ, "PYTHONPATH": str(operator_dir)}
    out = subprocess.run(
        [sys.executable, "-c", "import kubeloop; print(kubeloop.__file__)"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not out.startswith(str(operator_dir)):
        raise SystemExit(f"PYTHONPATH={operator_dir} imports kubeloop from {out}")
    return out


def burst(operator_dir: Path, label: str, jobs: int, rep: int, work: Path) -> dict[str, Any]:
    bed = Bed()
    try:
        ns = bed.namespace(f"profile-{rep}")
        port = free_port()
        env = {**os.environ, "KUBECONFIG": bed.kubeconfig, "PYTHONPATH": str(operator_dir)}
        log = work / f"{label}-{rep}.log"
        with log.open("wb") as out:
            op = subprocess.Popen(
                [*KUBELOOP_RUN, "--metrics-port", str(port), "--health-port", "0"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        spy = None
        try:
            wait_until(lambda: metrics_up(port), 60, "operator metrics")
            raw = work / f"{label}-{rep}.txt"
            record = ["record", "--pid", str(op.pid), "--rate", "100", "--format", "raw"]
            spy = subprocess.Popen(
                [py_spy(), *record, "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            done = Recorder(
                bed,
                bed.custom.list_namespaced_custom_object,
                ("kubeloop.io", "v1alpha1", ns, "trainingjobs"),
                {
                    "done": lambda t, o: (
                        (o.get("status") or {}).get("phase") == "Succeeded"
                        and o["metadata"]["name"]
                    )
                },
            )
            # When each run's Job completed (the cluster's part), to tell the operator's
            # part of "all Succeeded" (Job Complete -> TrainingJob Succeeded) from the
            # control plane's and kwok's (create -> Job Complete), which vary run to run.
            completed = Recorder(
                bed,
                client.BatchV1Api(bed.api).list_namespaced_job,
                (ns,),
                {"complete": _job_complete},
            )
            bodies = [
                {
                    "apiVersion": "kubeloop.io/v1alpha1",
                    "kind": "TrainingJob",
                    "metadata": {"name": f"job-{i:04d}"},
                    "spec": {"image": "bench:1", "resources": {"cpu": "10m"}},
                }
                for i in range(jobs)
            ]
            cpu_before, _ = proc_stats(op.pid)
            start = time.monotonic()
            create_burst(bed, ns, "trainingjobs", "kubeloop.io", "v1alpha1", bodies)
            wait_until(lambda: len(done.times["done"]) >= jobs, 900, f"{label} burst")
            elapsed = max(done.times["done"].values()) - start
            cpu_after, rss = proc_stats(op.pid)
            done.stop()
            completed.stop()
            finished = done.times["done"]
            complete = completed.times["complete"]
            lags = sorted(finished[n] - complete[n] for n in finished if n in complete)
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            profile = read_profile(raw)
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            op.terminate()
            op.wait(30)
    finally:
        bed.down()
    cpu = cpu_after - cpu_before
    last_complete = max(complete.values()) - start if complete else float("nan")
    lag = statistics.median(lags) if lags else float("nan")
    print(
        f"{label} rep {rep}: {jobs} Succeeded in {elapsed:.1f}s (last Job Complete at "
        f"{last_complete:.1f}s; Job Complete -> Succeeded median {lag:.2f}s), operator CPU "
        f"{cpu:.1f}s ({1000 * cpu / jobs:.0f} ms/job), {profile['samples']} samples",
        file=sys.stderr,
    )
    return {
        "rep": rep,
        "all_succeeded_s": round(elapsed, 2),
        "last_job_complete_s": round(last_complete, 2),
        "succeeded_after_complete_s": round(lag, 3),
        "succeeded_after_complete_max_s": round(lags[-1], 3) if lags else None,
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_job": round(1000 * cpu / jobs, 1),
        "rss_mb": round(rss / 2**20),
        "profile": profile,
    }


def share(profile: dict[str, Any], count: int) -> float:
    return 100.0 * count / max(profile["samples"], 1)


def render(result: dict[str, Any]) -> str:
    labels = list(result["contenders"])
    merged = {k: merge([r["profile"] for r in result["runs"][k]]) for k in labels}
    med = {
        k: {
            key: statistics.median(r[key] for r in result["runs"][k])
            for key in ("cpu_ms_per_job", "all_succeeded_s", "cpu_s")
        }
        for k in labels
    }
    # Runs recorded before these figures existed have none.
    for k in labels:
        for key in ("last_job_complete_s", "succeeded_after_complete_s"):
            values = [r[key] for r in result["runs"][k] if r.get(key) is not None]
            med[k][key] = statistics.median(values) if values else float("nan")
    lines = [
        START,
        "## Operator profile: where the CPU of a burst goes",
        "",
        f"`bench/profile_operator.py --baseline {result['baseline']}`: "
        f"{result['jobs']} single-worker TrainingJobs created at once (16 client threads) "
        "until all are Succeeded, on a fresh local control plane per run, the operator "
        "as its own process with its defaults, sampled by py-spy "
        f"{result['py_spy']} at 100 Hz (threads on CPU only). Contenders in the "
        "same run, order alternating: "
        + "; ".join(f"**{k}** = {v}" for k, v in result["contenders"].items())
        + ". Changes to `operator/` between them: "
        + _changes(result)
        + f". {result['reps']} repetitions each, medians; shares are over all samples of "
        f"all repetitions. Machine: {result['machine']['cpus']} CPUs, load average "
        f"{result['machine']['loadavg_start'][0]:.2f} before the run; {result['date']}.",
        "",
        "| contender | operator CPU per job (ms) | operator CPU (s) | all Succeeded (s) | "
        "last Job Complete (s) | Job Complete -> Succeeded (s) | samples |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in labels:
        lines.append(
            f"| {k} | {med[k]['cpu_ms_per_job']:.0f} | {med[k]['cpu_s']:.1f} | "
            f"{med[k]['all_succeeded_s']:.1f} | {med[k]['last_job_complete_s']:.1f} | "
            f"{med[k]['succeeded_after_complete_s']:.2f} | {merged[k]['samples']:,} |"
        )
    first, last = labels[0], labels[-1]
    change = med[last]["cpu_ms_per_job"] / med[first]["cpu_ms_per_job"] - 1
    word = "less" if change < 0 else "more"
    lines += [
        "",
        f"CPU per job, {last} against {first}: {100 * abs(change):.0f}% {word} "
        f"({med[first]['cpu_ms_per_job']:.0f} -> {med[last]['cpu_ms_per_job']:.0f} ms).",
        "",
        "Inclusive shares of the samples, by where the code lives:",
        "",
        "| group | " + " | ".join(labels) + " |",
        "| --- |" + " ---: |" * len(labels),
    ]
    for group in GROUPS:
        cells = [f"{share(merged[k], merged[k]['groups'].get(group, 0)):.1f}%" for k in labels]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    for k in labels:
        top = [
            (name, n)
            for name, n in sorted(merged[k]["functions"].items(), key=lambda kv: -kv[1])
            if not any(frame in name for frame in ENTRY_FRAMES)
        ][:TOP]
        lines += [
            "",
            f"Top {TOP} functions, {k} (inclusive share of samples; the entry point and "
            "the event loop, under everything, left out):",
            "",
            "| function | share |",
            "| --- | ---: |",
        ]
        lines += [f"| `{name}` | {share(merged[k], n):.1f}% |" for name, n in top]
    lines += ["", END]
    return "\n".join(lines)


def _changes(result: dict[str, Any]) -> str:
    """The commits between the contenders, by short sha and the start of their
    subject (the results file keeps them whole); a long list is counted, not shown."""
    changes = result.get("changes", [])
    if not changes:
        return "none"
    if len(changes) > 8:
        first, last = changes[-1].split(" ", 1)[0], changes[0].split(" ", 1)[0]
        return (f"{len(changes)} commits ({first} ... {last}; `git log {result['baseline']}.."
                f"{result['head']} -- operator/`, listed in the results file)")
    return "; ".join(f"`{c[:100]}{'...' if len(c) > 100 else ''}`" for c in changes)


def write_readme(section: str) -> None:
    text = README.read_text()
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision of the 'before' operator")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if args.render_only:
        write_readme(render(json.loads(RESULTS.read_text())))
        return 0
    if not args.baseline:
        parser.error("--baseline is required")
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    loadavg_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="operator-profile-"))
    tree = work / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
        check=True,
        capture_output=True,
    )
    try:
        dirs = {f"before ({revision})": tree / "operator", f"after ({head})": ROOT / "operator"}
        for d in dirs.values():
            source_of(d)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in dirs}
        for rep in range(args.reps):
            order = list(dirs) if rep % 2 == 0 else list(reversed(dirs))
            for label in order:
                runs[label].append(burst(dirs[label], label.split()[0], args.jobs, rep, work))
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
        )
    spy_version = subprocess.run(
        [py_spy(), "--version"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    changes = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--format=%h %s", f"{revision}..{head}", "--", "operator"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "changes": changes,
        "baseline": revision,
        "head": head,
        "jobs": args.jobs,
        "reps": args.reps,
        "py_spy": spy_version.removeprefix("py-spy "),
        "contenders": {
            f"before ({revision})": f"the operator at {revision}",
            f"after ({head})": f"the operator at {head}",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": list(loadavg_start),
            "python": platform.python_version(),
        },
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    section = render(result)
    write_readme(section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
