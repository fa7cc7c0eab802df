"""Every write permission of the chart is needed: each (group, resource, verb) that
tests/unit/test_rbac.py lists in WRITES is taken away in turn ($KUBELOOP_RBAC_DROP, see
tests/rbac.py) and the test named for it is run. The verb is gone before anything runs
that could use it, and stays gone: the integration bed applies the chart's RBAC without
it, every `helm install`/`upgrade` of the e2e bed renders the chart through a
post-renderer that takes it out, and no operator starts before the API server refuses
the ServiceAccount that verb. While a verb is dropped the harness's own refusal checks
fail nothing; they record what was refused. A rule counts as needed only when its test
FAILS IN ITS OWN BODY, on the product's behaviour (a condition, a status, an object not
written; not an error in a fixture), and the API server's refusal of that very verb on
that resource shows in the output or the recorded refusals. The tests run the operator
with the chart's RBAC, and pass with all of it in the normal suite (`make test`).

    python hack/rbac_necessity.py [--only GROUP/RESOURCE/VERB ...] [--shard I/N] [--out FILE]

`--shard I/N` runs every N-th rule from the I-th: `make test` runs the two halves at
once, each on its own lane's cluster ($KUBELOOP_CLUSTER_DIR), and each shard merges its
rules into the one results file (under a lock), every rule with its own date and commit.

Writes a results file (default tests/results/rbac-necessity.json: each rule's verdict,
the test's failing assertion, the first refusal seen) and exits non-zero when a rule was
not shown needed. Needs the local cluster; one pytest run a rule.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.unit.test_rbac import VALUES, WRITE_VERBS, WRITES, rules  # noqa: E402


def rendered_writes() -> set[tuple[str, str, str]]:
    """Every write the chart grants under any of the value sets the RBAC test renders."""
    return {
        (group, resource, verb)
        for values in VALUES.values()
        for rule in rules(values)
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
        if verb in WRITE_VERBS
    }


def verdict(failures: list[str], errors: list[str], cases: int, refusal_seen: bool) -> str:
    """`needed` only when the one test named failed in its own body and the API server
    refused the dropped verb; otherwise what stopped it being shown."""
    if cases != 1:
        return f"NOT SHOWN: {cases} tests ran, not the one named"
    if not failures:
        return ("NOT SHOWN: the test passed" if not errors
                else "NOT SHOWN: only the harness failed (a fixture's error)")
    if not refusal_seen:
        return "NOT SHOWN: the test failed, but no refusal of this verb"
    return "needed"


def junit_outcome(xml: Path) -> tuple[int, list[str], list[str]]:
    """(test cases, failure messages of test bodies, error messages of fixtures) from
    pytest's --junitxml (a `failure` is the test's call, an `error` its setup or
    teardown)."""
    if not xml.is_file():
        return 0, [], []
    cases = ElementTree.parse(xml).getroot().iter("testcase")
    count, failures, errors = 0, [], []
    for case in cases:
        count += 1
        failures += [(f.get("message") or "").strip() for f in case.findall("failure")]
        errors += [(e.get("message") or "").strip() for e in case.findall("error")]
    return count, failures, errors


def refusals_of(rule: tuple[str, str, str], text: str) -> list[str]:
    """The lines where the API server refused this very rule (its own words), not any
    403."""
    group, resource, verb = rule
    words = f'cannot {verb} resource "{resource}" in API group "{group}"'
    # (JSON logs and reprs escape the quotes.)
    return [line.strip() for line in text.splitlines() if words in line.replace('\\"', '"')]


def run_one(rule: tuple[str, str, str], test: str, logs: Path) -> dict[str, object]:
    name = "/".join(rule)
    stem = name.strip("/").replace("/", "_")
    log, xml, recorded = (logs / f"{stem}.{ext}" for ext in ("log", "xml", "refusals"))
    for stale in (xml, recorded):
        stale.unlink(missing_ok=True)
    env = {**os.environ, "KUBELOOP_RBAC_DROP": name, "KUBELOOP_RBAC_REFUSALS": str(recorded)}
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-x", "-q", "-rfE", "-p", "no:cacheprovider",
             f"--junitxml={xml}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        # (On a timeout the captured output comes back as bytes, text=True or not.)
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else p or ""
                 for p in (err.stdout, err.stderr)]
        output, code = f"{parts[0]}{parts[1]}\ntimed out after 900 s", None
    log.write_text(output)
    cases, failures, errors = junit_outcome(xml)
    refusals = refusals_of(rule, output + "\n" + (recorded.read_text()
                                                   if recorded.is_file() else ""))
    summary = next((line for line in reversed(output.splitlines()) if line.strip()), "")
    return {
        "rule": name,
        "test": test,
        "verdict": verdict(failures, errors, cases, bool(refusals)),
        "exit_code": code,
        # The test's own failing assertion: pytest's short line and its `E` lines.
        "assertion": failures[0].splitlines()[0][:400] if failures else None,
        "e_lines": [line[:300] for line in output.splitlines() if line.startswith("E   ")][:8],
        "fixture_errors": [e.splitlines()[0][:300] for e in errors],
        "refusal_seen": bool(refusals),
        "first_refusal": refusals[0][:300] if refusals else None,
        "summary": summary[:300],
        "seconds": round(time.monotonic() - started, 1),
    }


def shard(todo: list[tuple[str, str, str]], spec: str) -> list[tuple[str, str, str]]:
    """The I-th of N interleaved shares of `todo` ("I/N", 1-based)."""
    index, _, count = spec.partition("/")
    i, n = int(index), int(count)
    if not 1 <= i <= n:
        raise SystemExit(f"--shard {spec}: expected I/N with 1 <= I <= N")
    return todo[i - 1::n]


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return f"{head}{' (dirty)' if dirty else ''}" if head else "unknown"


def write_results(out: Path, results: list[dict[str, object]], merge: bool,
                  protocol: str) -> None:
    """The results file; a shard's rules merged into what the other shards wrote."""
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept: dict[str, object] = {}
        if merge and out.is_file():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                kept = {r["rule"]: r for r in json.loads(out.read_text())["results"]}
        kept.update({str(r["rule"]): r for r in results})
        out.write_text(json.dumps({
            "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "protocol": protocol,
            "results": [kept[rule] for rule in sorted(kept)],
        }, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="GROUP/RESOURCE/VERB ...")
    parser.add_argument("--shard", default=None, help="I/N: every N-th rule from the I-th")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "results" /
                        "rbac-necessity.json")
    args = parser.parse_args()
    granted = rendered_writes()
    unlisted = sorted(granted - set(WRITES))
    if unlisted:
        print(f"writes without a named test in WRITES: {unlisted}", file=sys.stderr)
        return 2
    todo = sorted(granted)
    if args.only is not None:
        todo = [r for r in todo if "/".join(r) in set(args.only)]
    if args.shard is not None:
        todo = shard(todo, args.shard)
    logs = args.out.parent / "rbac-necessity-logs"
    logs.mkdir(parents=True, exist_ok=True)
    # One control plane for all the runs: each pytest session finds it running and
    # leaves it up.
    cluster = ["python3", str(ROOT / "hack" / "cluster.py")]
    started = subprocess.run([*cluster, "status"], capture_output=True).returncode != 0
    if started:
        subprocess.run([*cluster, "up"], check=True)
    results = []
    head = commit()
    try:
        for rule in todo:
            result = run_one(rule, WRITES[rule][1], logs)
            result["written"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            result["commit"] = head
            results.append(result)
            print(f"{result['rule']:50} {result['seconds']:6.1f}s  {result['verdict']}\n"
                  f"    {result['test']}\n    {result['assertion']}", flush=True)
    finally:
        if started:
            subprocess.run([*cluster, "down"], check=False)
    protocol = ("one pytest run per rule with KUBELOOP_RBAC_DROP=group/resource/verb: "
                    "the verb is never granted (integration: the chart's RBAC applied "
                    "without it; e2e: every helm install/upgrade post-rendered without it) "
                    "and the API server refuses it before the operator starts; the "
                    "harness's refusal checks only record; needed = the named test failed "
                    "in its own body (junit failure, not a fixture error) and the API "
                    "server's refusal of that verb shows")
    write_results(args.out, results, merge=args.shard is not None or args.only is not None,
                  protocol=protocol)
    return 0 if all(r["verdict"] == "needed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
