"""Every write permission of the chart is needed: each (group, resource, verb) that
tests/unit/test_rbac.py lists in WRITES is taken away in turn ($KUBELOOP_RBAC_DROP, see
tests/rbac.py) and the test named for it is run; it must fail, and the API server's
refusal of that very verb on that resource must show in its output. The tests run the
operator with the chart's RBAC, and pass with all of it in the normal suite
(`make test`).

    python hack/rbac_necessity.py [--only GROUP/RESOURCE/VERB ...] [--out FILE]

Writes a results file (default tests/results/rbac-necessity.json) and exits non-zero
when a rule's test passed without it. Needs the local cluster; one pytest run a rule.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def run_one(rule: tuple[str, str, str], test: str, logs: Path) -> dict[str, object]:
    name = "/".join(rule)
    env = {**os.environ, "KUBELOOP_RBAC_DROP": name}
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-x", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output, code = f"{err.stdout or ''}{err.stderr or ''}\ntimed out after 900 s", None
    log = logs / (name.strip("/").replace("/", "_") + ".log")
    log.write_text(output)
    # The API server's own words for this very rule, not any 403 in the output.
    group, resource, verb = rule
    words = f'cannot {verb} resource "{resource}" in API group "{group}"'
    # (JSON logs and reprs escape the quotes.)
    refusals = [line.strip() for line in output.splitlines()
                if words in line.replace('\\"', '"')]
    summary = next((line for line in reversed(output.splitlines()) if line.strip()), "")
    return {
        "rule": name,
        "test": test,
        "exit_code": code,
        "failed": code not in (0, None),
        "refusal_seen": bool(refusals),
        "first_refusal": refusals[0][:300] if refusals else None,
        "summary": summary[:300],
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="GROUP/RESOURCE/VERB ...")
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
    logs = args.out.parent / "rbac-necessity-logs"
    logs.mkdir(parents=True, exist_ok=True)
    # One control plane for all the runs: each pytest session finds it running and
    # leaves it up.
    cluster = ["python3", str(ROOT / "hack" / "cluster.py")]
    started = subprocess.run([*cluster, "status"], capture_output=True).returncode != 0
    if started:
        subprocess.run([*cluster, "up"], check=True)
    results = []
    try:
        for rule in todo:
            result = run_one(rule, WRITES[rule][1], logs)
            results.append(result)
            verdict = "needed" if result["failed"] and result["refusal_seen"] else "NOT SHOWN"
            print(f"{verdict:9} {result['rule']:50} {result['seconds']:6.1f}s  "
                  f"{result['test']}", flush=True)
    finally:
        if started:
            subprocess.run([*cluster, "down"], check=False)
    args.out.write_text(json.dumps({
        "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "protocol": "one pytest run per rule with KUBELOOP_RBAC_DROP=group/resource/verb; "
                    "needed = the named test failed and the output shows the refusal",
        "results": results,
    }, indent=1) + "\n")
    return 0 if all(r["failed"] and r["refusal_seen"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
