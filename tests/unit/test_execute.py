"""The decisions of `execute`, shared by every kind: which applies write nothing, which
status changes wait, which Events a move announces (and that a re-run announces none)."""

from __future__ import annotations

from typing import Any

from kubeloop import conditions as c
from kubeloop.controllers.execute import (
    ALL,
    STATUS_MIN_INTERVAL,
    events_for,
    hold_back,
    unchanged,
)


def status(phase: str, reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    ready = "True" if phase in ("Running", "Ready") else "False"
    return {
        "phase": phase,
        "message": message,
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}],
        **extra,
    }


RENDERED = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "s", "namespace": "n", "labels": {"a": "1"}},
    "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"a": "1"}},
}


def test_an_apply_is_skipped_only_when_the_store_has_every_rendered_field() -> None:
    # What the API server adds (defaults, status, uid) does not count.
    served = {
        **RENDERED,
        "metadata": {**RENDERED["metadata"], "uid": "u", "resourceVersion": "7"},
        "spec": {
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "selector": {"a": "1"},
            "clusterIP": "10.0.0.1",
        },
        "status": {},
    }
    assert unchanged(served, RENDERED)
    assert not unchanged(None, RENDERED)
    changed = {**served, "spec": {**served["spec"], "selector": {"a": "2"}}}
    assert not unchanged(changed, RENDERED)
    # A list is compared whole: one item more or less is a change.
    more = {**served, "spec": {**served["spec"], "ports": served["spec"]["ports"] * 2}}
    assert not unchanged(more, RENDERED)
    label_gone = {**served, "metadata": {"name": "s", "namespace": "n", "labels": {}}}
    assert not unchanged(label_gone, RENDERED)


def test_a_minor_status_change_waits_for_the_interval() -> None:
    before = status("Running", "Running", "1 of 2 workers running")
    after = status("Running", "Running", "2 of 2 workers running")
    assert hold_back(before, after, since_write=1.0) == STATUS_MIN_INTERVAL - 1.0
    assert hold_back(before, after, since_write=STATUS_MIN_INTERVAL + 1) == 0.0
    assert hold_back(before, after) == 0.0  # never written by this operator


def test_a_change_of_phase_condition_or_urgent_field_is_written_at_once() -> None:
    before = status("Pending", "Pending")
    assert hold_back(before, status("Running", "Running"), since_write=0.0) == 0.0
    assert hold_back(before, status("Pending", "WaitingForScheduler"), since_write=0.0) == 0.0
    newer = {**before, "observedGeneration": 2}
    assert hold_back(before, newer, since_write=0.0) == 0.0
    stepped = {**before, "canary": {"step": 2, "replicas": 3}}
    was = {**before, "canary": {"step": 1, "replicas": 3}}
    assert hold_back(was, stepped, urgent=("canary.step",), since_write=0.0) == 0.0
    assert hold_back(was, stepped, since_write=0.0) > 0  # not urgent: a count
    # Events go out with the status that says why.
    assert hold_back(before, {**before, "message": "x"}, events=True, since_write=0.0) == 0.0
    # Nothing to write: nothing to wait for.
    assert hold_back(before, dict(before), since_write=0.0) == 0.0


CONDS_RUNNING = [c.Cond(c.READY, True, c.RUNNING, "2 of 2 workers running")]


def test_a_change_of_phase_is_announced_with_the_conditions_reason() -> None:
    before, after = status("Pending", "Pending"), status("Running", "Running", "2 of 2")
    assert events_for(before, after, CONDS_RUNNING) == [("Normal", "Running", "2 of 2")]
    failed = status("Failed", "BackoffLimitExceeded", "worker 0 failed: exit code 3")
    conds = [
        c.Cond(c.READY, False, c.BACKOFF_LIMIT_EXCEEDED, "worker 0 failed"),
        c.Cond(c.STALLED, True, c.BACKOFF_LIMIT_EXCEEDED, "worker 0 failed"),
    ]
    assert events_for(after, failed, conds) == [
        ("Warning", "BackoffLimitExceeded", "worker 0 failed: exit code 3")
    ]


def test_no_move_no_event_so_a_rerun_repeats_nothing() -> None:
    """A re-run starts from the status that was written: the same plan announces
    nothing again, its own Events included."""
    written = status("Running", "Running", "2 of 2")
    assert events_for(written, dict(written), CONDS_RUNNING) == []
    planned = [("Normal", "CanaryStarted", "canary m: step 1 of 3")]
    assert events_for(written, dict(written), CONDS_RUNNING, planned) == []


def test_a_move_is_announced_against_the_status_the_pass_began_with() -> None:
    """The final write of a pass that already wrote its status (status first, or a step
    mid-pass) is a no-op; the move is still announced, once: `execute` compares with
    the status the object had when the pass began."""
    began = status("Running", "Running")
    restarting = status("Restarting", "Restarting", "worker 0 failed; restarting")
    conds = [c.Cond(c.READY, False, c.RESTARTING, "worker 0 failed; restarting")]
    assert events_for(began, restarting, conds) == [
        ("Warning", "Restarting", "worker 0 failed; restarting")
    ]


def test_planned_events_stand_for_the_transition() -> None:
    before, after = status("Progressing", "CanaryAnalyzing"), status("Ready", "Reconciled")
    planned = [("Normal", "CanaryPromoted", "canary m passed every step")]
    conds = [c.Cond(c.READY, True, c.RECONCILED, "serving m")]
    assert events_for(before, after, conds, planned) == planned
    # And they go out with any move of the status, not only a change of phase.
    same_phase = status("Progressing", "CanaryAnalyzing", "measuring step 2 of 3")
    assert events_for(before, same_phase, conds, planned) == planned


def test_a_quiet_start_announces_only_what_is_stuck() -> None:
    pending = status("Pending", "Pending", "creating Job t-r0")
    conds = [c.Cond(c.READY, False, c.PENDING, "creating Job t-r0")]
    assert events_for({}, pending, conds, quiet_start=True) == []
    assert events_for({}, pending, conds) == [("Normal", "Pending", "creating Job t-r0")]
    stuck = [
        c.Cond(c.READY, False, c.UNSCHEDULABLE, "no node has 9 GPUs"),
        c.Cond(c.STALLED, True, c.UNSCHEDULABLE, "no node has 9 GPUs"),
    ]
    unschedulable = status("Pending", "Unschedulable", "no node has 9 GPUs")
    assert events_for({}, unschedulable, stuck, quiet_start=True) == [
        ("Warning", "Unschedulable", "no node has 9 GPUs")
    ]
    # Only the start is quiet: a later move into Pending is announced.
    conds_again = [c.Cond(c.READY, False, c.PENDING, "resuming")]
    assert events_for(
        status("Suspended", "Suspended"),
        status("Pending", "Pending"),
        conds_again,
        quiet_start=True,
    ) == [("Normal", "Pending", "")]


def test_a_change_of_reason_within_a_phase_is_announced_only_when_asked() -> None:
    before = status("Degraded", "SourceUnavailable", "no endpoint")
    after = status("Degraded", "SourceInvalid", "bad metrics")
    conds = [
        c.Cond(c.READY, False, c.SOURCE_INVALID, "bad metrics"),
        c.Cond(c.STALLED, True, c.SOURCE_INVALID, "bad metrics"),
    ]
    assert events_for(before, after, conds) == []
    assert events_for(before, after, conds, announce_reason=True) == [
        ("Warning", "SourceInvalid", "bad metrics")
    ]
    # The same reason with another message is no news.
    again = status("Degraded", "SourceInvalid", "bad metrics, still")
    assert events_for(after, again, conds, announce_reason=True) == []


def test_a_kind_may_have_every_change_written_at_once() -> None:
    before = status("Ready", "Reconciled", "serving m", readyReplicas=1)
    after = status("Ready", "Reconciled", "serving m", readyReplicas=2)
    assert hold_back(before, after, since_write=0.0) > 0
    assert hold_back(before, after, urgent=(ALL,), since_write=0.0) == 0.0
