#!/usr/bin/env python3
"""The real-node figures of README.md, rendered from the results file that a run of the
whole real-node suite writes (`make e2e-real`: tests/results/e2e-real.json, see
e2e/real/conftest.py). Nothing between the markers is written by hand: rerun

    python3 hack/e2e_real_figures.py

to re-render it from the file alone. A figure the file lacks is shown as missing, and
one whose test did not pass says so: neither is left out or carried over from an
earlier run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "tests" / "results" / "e2e-real.json"
README = ROOT / "README.md"
START = "<!-- e2e-real-figures:start -->"
END = "<!-- e2e-real-figures:end -->"

# Every figure the paragraph shows: what a run of the whole suite records.
FIGURES = (
    "training_job_seconds",
    "model_deployment_ready_seconds",
    "drift_detected_seconds",
    "drift_onset_to_old_pods_gone_seconds",
    "gate_reject_seconds",
    "gate_promote_seconds",
    "gate_scores",
    "gate_probe",
    "hpa_scale_up_seconds",
    "hpa_scale_down_seconds",
    "canary_rollback_message",
    "canary_probe",
)


def missing(name: str) -> str:
    return f"**missing** (no `{name}` in the results file)"


class Figures:
    """The figures of one results file, each formatted or shown as missing."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.figures: dict[str, Any] = results.get("figures") or {}
        self.tests: dict[str, str] = results.get("tests") or {}

    def __call__(self, name: str, fmt: Callable[[Any], str] = str) -> str:
        entry = self.figures.get(name)
        if entry is None:
            return missing(name)
        try:
            text = fmt(entry["value"])
        except (KeyError, IndexError, TypeError, ValueError):
            return f"**unreadable** (`{name}`: {json.dumps(entry['value'])[:80]})"
        outcome = self.tests.get(entry.get("test", ""), "not run")
        if outcome != "passed":
            said = {"failed": "failed", "skipped": "was skipped"}.get(outcome, "did not run")
            text += f" (from `{entry.get('test') or 'an unknown test'}`, which {said})"
        return text


def seconds(value: Any) -> str:
    return f"{float(value):.1f} s"


def minutes(value: float) -> str:
    whole = round(value)
    return f"{whole // 60} min {whole % 60} s"


def answers(values: list[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def run_line(results: dict[str, Any]) -> str:
    commit = results.get("commit")
    where = f"commit `{commit[:12]}`" if commit else "an unknown commit"
    if results.get("dirty"):
        where += " with uncommitted changes"
    tests = results.get("tests") or {}
    passed = sum(1 for outcome in tests.values() if outcome == "passed")
    others = sorted({o for o in tests.values() if o != "passed"})
    counts = f"{passed} of {len(tests)} tests passed"
    if others:
        counts += " (" + ", ".join(
            f"{sum(1 for o in tests.values() if o == other)} {other}" for other in others) + ")"
    date = str(results.get("date") or "an unknown date").replace("T", " ").replace("Z", " UTC")
    took = f" in {minutes(results['duration_s'])}" if "duration_s" in results else ""
    return (f"What the real-node tests measured in the run recorded in "
            f"`tests/results/e2e-real.json` ({where}, {date}; {counts}{took}; this paragraph "
            f"is rendered from that file by `hack/e2e_real_figures.py`):")


def render(results: dict[str, Any]) -> str:
    fig = Figures(results)

    def gate_score(which: str) -> Callable[[Any], str]:
        return lambda v: f"{float(v[which][1]):.3f} against {float(v[which][0]):.3f}"

    def gate_probe(v: Any) -> str:
        return (f"{v['requests']} requests of {len(v['rows'])} shifted rows through the "
                f"Service got the champion's answers {answers(v['champion'])} after the "
                f"rejection (the rejected model's: {answers(v['rejected'])}) and the promoted "
                f"model's {answers(v['promoted'])} after the rollout")

    def canary_probe(v: Any) -> str:
        return (f"{v['requests']} requests of the probe rows {v['rows']} through the Service "
                f"got v1's answers {answers(v['v1'])} after the rollback and v2's "
                f"{answers(v['v2'])} after the promotion")

    text = " ".join([
        run_line(results),
        "a TrainingJob of `train.py` from apply to Succeeded "
        f"{fig('training_job_seconds', seconds)};",
        f"a 2-replica ModelDeployment from apply to Ready "
        f"{fig('model_deployment_ready_seconds', seconds)};",
        f"drift detected {fig('drift_detected_seconds', seconds)} after the first shifted "
        "request (3 s check interval);",
        "**from the first shifted request to the last pod of the old model gone, through "
        "retraining in a pod and the rollout: "
        f"{fig('drift_onset_to_old_pods_gone_seconds', seconds)}**;",
        "with the evaluation gate, a retrain on mislabelled new data rejected (accuracy "
        f"{fig('gate_scores', gate_score('rejected'))} for the serving model on the new holdout) "
        f"{fig('gate_reject_seconds', seconds)} after its monitor was created, and one trained "
        f"on the new data promoted ({fig('gate_scores', gate_score('promoted'))}) in "
        f"{fig('gate_promote_seconds', seconds)}, both evaluated in a real pod; "
        f"{fig('gate_probe', gate_probe)};",
        f"HPA scale-up under load {fig('hpa_scale_up_seconds', seconds)}, scale-down after the "
        f"load {fig('hpa_scale_down_seconds', seconds)} (a 20 s downscale stabilization in the "
        "local cluster);",
        "a progressive canary that fails on part of its inputs rolled back on "
        f"{fig('canary_rollback_message', lambda v: '`' + str(v) + '`')} (10 s window, two "
        "server processes per pod, traffic through the Service), and a v2 trained on another "
        "split of the data promoted through its steps with every answer a 200; "
        f"{fig('canary_probe', canary_probe)}.",
    ])
    return f"{START}\n{wrap(text)}\n{END}"


def wrap(text: str, width: int = 88) -> str:
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} block to render into")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    readme.write_text(before + section + after)


def main() -> int:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    write_readme(README, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
