"""The shadow trial of a retrain (`onDrift.shadow`), pure: when it may start, how it is
followed, and the verdict on the labelled requests both models answered.

The figures are the deployment's own `status.shadow.labelled` (docs/shadow.md): counted
by the stable's pods since they began mirroring to this challenger, with the paired
test they carry (McNemar's exact test for classifiers, Student's paired t on the
absolute errors for regressors). The verdict:

- `Better`: the challenger's metric is better than the champion's by at least `margin`
  and the two-sided p-value is below `significance` (Improved); else NotBetter (the
  difference is smaller than the margin) or NotSignificant.
- `NotWorse`: the challenger is worse by no more than `margin` (else Worse) and not
  significantly worse: worse at all with a p-value below `significance` is Worse too.
  This is "not shown worse" on the figures of the status, not an equivalence test.

controllers/retrain_step.py calls `start` and `follow` and carries out what they say.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.common import duration_seconds
from kubeloop.api.driftmonitor import RetrainRecord, ShadowGate, ShadowTrial
from kubeloop.controllers import shadow_trial
from kubeloop.controllers.common import parse_time, rfc3339

# Results of a move (the record's result is the step's to set).
WAIT, PASSED, REJECTED, ENDED = "wait", "passed", "rejected", "ended"
# How often a trial short of labels looks at its timeout (the deployment's status
# changes wake it sooner).
LOOK_AGAIN = 60.0


@dataclass
class Move:
    outcome: str  # WAIT, PASSED, REJECTED, ENDED (no verdict: cancelled, failed)
    event: tuple[str, str, str] | None = None
    requeue_after: float | None = None
    failed: bool = False  # ENDED because the trial could not run (EvaluationFailed)


def _serving(target: dict[str, Any] | None) -> str | None:
    return ((target or {}).get("status") or {}).get("activeModelUri")


def start(
    last: RetrainRecord, gate: ShadowGate, target: dict[str, Any], now: dt.datetime
) -> Move:
    """The trial begins: its record, or why it cannot run. The caller patches the note."""
    serving = _serving(target)
    trial = ShadowTrial(champion_uri=serving, started=rfc3339(now))
    last.shadow = trial
    own = ((target.get("spec") or {}).get("shadow") or {}).get("model")
    if own:
        what = own.get("uri") or "a model of its own"
        return _end(
            trial,
            c.SHADOW_IN_USE,
            f"the deployment's spec.shadow has {what}: the trial of {last.model_uri} cannot "
            "run beside it; not promoted",
            failed=True,
        )
    if serving is not None and serving == last.model_uri:
        return _end(
            trial,
            c.SHADOW_IN_USE,
            f"{serving} is already the served model: a trial compares another model",
            failed=True,
        )
    return Move(
        WAIT,
        (
            "Normal",
            c.SHADOW_TRIAL,
            f"{last.model_uri} runs as the shadow of {target['metadata']['name']} until "
            f"{gate.min_labelled} labelled requests were answered by both",
        ),
    )


def follow(
    last: RetrainRecord, gate: ShadowGate | None, target: dict[str, Any] | None, now: dt.datetime
) -> Move:
    """A trial under way: cancelled, still waiting, or judged."""
    trial = last.shadow
    assert trial is not None
    if gate is None:
        return _end(trial, c.SHADOW_TRIAL_CANCELLED, "onDrift.shadow was removed during the trial")
    if target is None:
        return _end(trial, c.SHADOW_TRIAL_CANCELLED, "the ModelDeployment is gone")
    note = shadow_trial.read(target)
    if note is None or note.uri != last.model_uri:
        return _end(
            trial,
            c.SHADOW_TRIAL_CANCELLED,
            "the deployment's kubeloop.io/shadow-trial annotation was removed or replaced",
        )
    if _serving(target) != trial.champion_uri:
        return _end(
            trial,
            c.CHAMPION_CHANGED,
            f"the deployment now serves {_serving(target)}, not the champion "
            f"{trial.champion_uri} the trial compares with",
        )
    spec_shadow = ((target.get("spec") or {}).get("shadow") or {}).get("model")
    if spec_shadow:
        return _end(
            trial,
            c.SHADOW_IN_USE,
            "a shadow was set in the deployment's spec.shadow during the trial",
            failed=True,
        )
    shadow = (target.get("status") or {}).get("shadow") or {}
    labelled = shadow.get("labelled") or {} if shadow.get("modelUri") == last.model_uri else {}
    samples = labelled.get("samples") or 0
    trial.samples = int(samples)
    if samples >= gate.min_labelled:
        return judge(trial, gate, labelled)
    started = parse_time(trial.started) or now
    left = duration_seconds(gate.timeout) - (now - started).total_seconds()
    if left <= 0:
        trial.passed, trial.reason = False, c.TOO_FEW_LABELS
        trial.message = (
            f"{samples} of {gate.min_labelled} labelled requests within {gate.timeout}"
        )
        return Move(REJECTED)
    return Move(WAIT, requeue_after=min(left, LOOK_AGAIN))


def judge(trial: ShadowTrial, gate: ShadowGate, labelled: dict[str, Any]) -> Move:
    """The verdict on the labelled requests (the deployment's `status.shadow.labelled`)."""
    if labelled.get("championAccuracy") is not None:
        trial.metric = "accuracy"
        trial.champion = float(labelled["championAccuracy"])
        trial.challenger = float(labelled.get("shadowAccuracy") or 0.0)
        gain = trial.challenger - trial.champion
    else:
        trial.metric = "mae"
        trial.champion = float(labelled.get("championMAE") or 0.0)
        trial.challenger = float(labelled.get("shadowMAE") or 0.0)
        gain = trial.champion - trial.challenger
    # Accuracies are ratios of counts: 42/60 - 36/60 is 0.0999...98 in floats, which
    # must still meet a margin of 0.1. Nine decimals are far finer than any count.
    gain = round(gain, 9)
    trial.test = labelled.get("test")
    p = labelled.get("pValue")
    trial.p_value = None if p is None else float(p)
    significant = trial.p_value is not None and trial.p_value < gate.significance
    figures = (
        f"{trial.metric} on {trial.samples} labelled requests: challenger {trial.challenger:.4g}, "
        f"champion {trial.champion:.4g}, {trial.test or 'no test'} p={_p(trial.p_value)}"
    )
    if gate.require == "Better":
        if gain < gate.margin or gain <= 0:
            why = f"better by {gain:.4g}, less than the margin {gate.margin:g}"
            reason = c.NOT_BETTER
        elif not significant:
            reason, why = c.NOT_SIGNIFICANT, f"not significant at {gate.significance:g}"
        else:
            reason, why = c.IMPROVED, f"significantly better at {gate.significance:g}"
    elif gain < -gate.margin:
        reason, why = c.WORSE, f"worse by {-gain:.4g}, more than the margin {gate.margin:g}"
    elif gain < 0 and significant:
        reason, why = c.WORSE, f"significantly worse at {gate.significance:g}"
    else:
        reason, why = c.NOT_WORSE, f"not worse by more than {gate.margin:g}"
    trial.passed = reason in (c.IMPROVED, c.NOT_WORSE)
    trial.reason, trial.message = reason, f"{figures}: {why}"
    return Move(PASSED if trial.passed else REJECTED)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _end(trial: ShadowTrial, reason: str, message: str, failed: bool = False) -> Move:
    trial.passed, trial.reason, trial.message = False, reason, message
    return Move(ENDED, failed=failed)
