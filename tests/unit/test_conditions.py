from __future__ import annotations

from kubeloop import conditions as c


def test_transition_time_kept_while_status_does_not_flip() -> None:
    first = c.merge_conditions([], [c.Cond(c.READY, False, "Pending", "a")], 1, "T1")
    second = c.merge_conditions(first, [c.Cond(c.READY, False, "Other", "b")], 2, "T2")
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["reason"] == "Other" and second[0]["observedGeneration"] == 2
    third = c.merge_conditions(second, [c.Cond(c.READY, True, "Done", "c")], 2, "T3")
    assert third[0]["lastTransitionTime"] == "T3" and third[0]["status"] == "True"


def test_conditions_not_computed_are_dropped() -> None:
    first = c.merge_conditions(
        [], [c.Cond(c.READY, False, "x"), c.Cond(c.STALLED, True, "x")], 1, "T1"
    )
    second = c.merge_conditions(first, [c.Cond(c.READY, True, "y")], 1, "T2")
    assert [x["type"] for x in second] == [c.READY]


def test_ready_is_the_and_of_its_parts_and_names_the_failing_one() -> None:
    ok = c.Cond(c.MODEL_RESOLVED, True, "Resolved", "m")
    bad = c.Cond(c.AVAILABLE, False, "PodsCrashing", "pod x crashed")
    ready = c.ready_from([ok, bad], "Reconciled", "fine")
    assert ready.status is False and ready.reason == "PodsCrashing"
    assert "Available: pod x crashed" in ready.message
    assert c.ready_from([ok], "Reconciled", "fine").status is True


def test_unknown_status_and_truncation() -> None:
    cond = c.Cond(c.READY, None, "Unknown", "x" * 5000)
    merged = c.merge_conditions([], [cond], None, "T")
    assert merged[0]["status"] == "Unknown" and len(merged[0]["message"]) == c.MAX_MESSAGE
    assert "observedGeneration" not in merged[0]
