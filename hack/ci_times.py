#!/usr/bin/env python3
"""The README's CI times, measured: `.ci/run` in a fresh clone of this checkout's HEAD,
cold (every cache empty: $KUBELOOP_CACHE, Go's module and build caches, pip's and npm's,
all pointed at a new folder) or warm (the machine's caches as they are), its log parsed
into tests/results/ci-<mode>.json: the commit, the UTC start, the total, every suite's
summary line and every lane's start and end. The README's CI block is rendered from
those files (`render`).

    python3 hack/ci_times.py run cold|warm     # minutes; the machine should be idle
    python3 hack/ci_times.py parse cold|warm LOG COMMIT START_UTC EXIT_CODE  # a saved log
    python3 hack/ci_times.py render            # README.md's block from the results

Stdlib only, like hack/cluster.py. Debian's packages stay installed between runs: a
cold run here does not time their download (`apt-get`), which a new machine pays once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "tests" / "results"
README = ROOT / "README.md"
BUDGET_MINUTES = {"cold": 70, "warm": 40}
START, END = "<!-- ci-times:start -->", "<!-- ci-times:end -->"

SUITE = re.compile(r"-m pytest (\S+)|rbac_necessity\.py --shard (\d+/\d+)")
SUMMARY = re.compile(r"^=*\s*(\d+ (?:passed|failed|error)[^=]*?) in ([\d.]+)s")
LANE = re.compile(r"^== (lane-\w+)(?::.*)? (passed )?\((\d\d:\d\d:\d\d)\)$")
RULE = re.compile(r"^\S*/\S+\s+[\d.]+s\s+(\S.*)$")
TOOK = re.compile(r"^== CI took (\d+)s$")


def parse(log: str) -> dict[str, object]:
    """Suites (command, summary, seconds), lanes (start, end) and the total of a log."""
    suites: list[dict[str, object]] = []
    lanes: dict[str, dict[str, str]] = {}
    current: dict[str, object] | None = None
    total = None
    for line in log.splitlines():
        line = line.rstrip()
        found = SUITE.search(line)
        if found and not line.startswith(("=", " ")):
            current = {"suite": found.group(1) or f"rbac-necessity {found.group(2)}"}
            suites.append(current)
            continue
        summary = SUMMARY.match(line)
        if summary and current is not None:
            current.update(summary=summary.group(1).strip(" ,"),
                           seconds=round(float(summary.group(2)), 1))
            continue
        rule = RULE.match(line)
        if rule and current is not None and str(current["suite"]).startswith("rbac"):
            verdicts = current.setdefault("verdicts", {})
            assert isinstance(verdicts, dict)
            verdicts[rule.group(1)] = verdicts.get(rule.group(1), 0) + 1
            continue
        lane = LANE.match(line)
        if lane:
            lanes.setdefault(lane.group(1), {})["end" if lane.group(2) else "start"] = \
                lane.group(3)
            continue
        took = TOOK.match(line)
        if took:
            total = int(took.group(1))
    for info in lanes.values():
        if "start" in info and "end" in info:
            start, end = (dt.datetime.strptime(info[k], "%H:%M:%S") for k in ("start", "end"))
            info["seconds"] = str(int((end - start).total_seconds()) % 86400)
    return {"total_seconds": total, "suites": suites, "lanes": lanes}


def record(mode: str, log: str, commit: str, started: str, exit_code: int | None) -> Path:
    parsed = parse(log)
    out = RESULTS / f"ci-{mode}.json"
    out.write_text(json.dumps({
        "mode": mode,
        "commit": commit,
        "started": started,
        "exit_code": exit_code,
        "cpus": os.cpu_count(),
        "budget_minutes": BUDGET_MINUTES[mode],
        "protocol": "hack/ci_times.py: .ci/run in a fresh clone of the commit; cold = "
                    "KUBELOOP_CACHE, GOMODCACHE, GOCACHE, PIP_CACHE_DIR and npm's cache "
                    "all empty (Debian's packages already installed); warm = the "
                    "machine's caches as a cold run left them",
        **parsed,
    }, indent=1) + "\n")
    return out


def run(mode: str) -> int:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix=f"kubeloop-ci-{mode}-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = dict(os.environ)
    if mode == "cold":
        empty = work / "caches"
        env.update(KUBELOOP_CACHE=str(empty / "kubeloop"), GOMODCACHE=str(empty / "gomod"),
                   GOCACHE=str(empty / "gobuild"), PIP_CACHE_DIR=str(empty / "pip"),
                   npm_config_cache=str(empty / "npm"))
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    begin = time.monotonic()
    proc = subprocess.run([str(clone / ".ci" / "run")], cwd=clone, env=env,
                          capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (work / "ci.log").write_text(log)
    out = record(mode, log, commit, started, proc.returncode)
    print(f"{mode}: exit {proc.returncode} in {time.monotonic() - begin:.0f}s; log "
          f"{work / 'ci.log'}; results {out}")
    return proc.returncode


def minutes(seconds: object) -> str:
    if not isinstance(seconds, (int, float, str)) or seconds in ("", None):
        return "not measured"
    whole = int(float(seconds))
    return f"{whole // 60} min {whole % 60} s"


def outcome(suite: dict[str, object]) -> str:
    """A pytest suite's summary and length; the RBAC check's verdicts (one per rule)."""
    verdicts = suite.get("verdicts")
    if isinstance(verdicts, dict):
        return ", ".join(f"{count} rules {verdict}" for verdict, count in verdicts.items())
    if "summary" not in suite:
        return "no summary (did not finish)"
    return f"{suite['summary']} in {minutes(suite.get('seconds'))}"


def render_block() -> str:
    lines = [START, "| `.ci/run` in a fresh clone (2 cores) | budget | measured | commit, "
             "date | suites |", "| --- | --- | --- | --- | --- |"]
    for mode in ("cold", "warm"):
        path = RESULTS / f"ci-{mode}.json"
        if not path.is_file():
            lines.append(f"| {mode} | ≤ {BUDGET_MINUTES[mode]} min | not measured | | |")
            continue
        data = json.loads(path.read_text())
        total = data.get("total_seconds")
        if data.get("exit_code") != 0:  # a failed run's length says nothing of the budget
            judged = f"exit {data.get('exit_code')}: failed, budget not judged"
        elif isinstance(total, int) and total <= 60 * data["budget_minutes"]:
            judged = "within budget, passed"
        else:
            judged = "OVER budget, passed"
        suites = "; ".join(f"{s['suite']}: {outcome(s)}" for s in data.get("suites", []))
        lanes = ", ".join(f"{name} {minutes(info.get('seconds'))}"
                          for name, info in sorted(data.get("lanes", {}).items()))
        lines.append(
            f"| {mode} | ≤ {data['budget_minutes']} min | **{minutes(total)}** ({judged}) "
            f"| `{str(data['commit'])[:12]}`, {data['started']} | "
            f"{suites}; lanes: {lanes} |")
    lines.append(END)
    return "\n".join(lines)


def render() -> None:
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"README.md has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + render_block() + tail)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "run" and argv[1] in BUDGET_MINUTES:
        return run(argv[1])
    if len(argv) == 6 and argv[0] == "parse" and argv[1] in BUDGET_MINUTES:
        print(record(argv[1], Path(argv[2]).read_text(), argv[3], argv[4], int(argv[5])))
        return 0
    if argv == ["render"]:
        render()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
