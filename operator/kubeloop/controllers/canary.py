"""The canary of a ModelDeployment: its share of traffic, its steps and its verdicts.

Two modes. Without `steps` the canary keeps the fixed `trafficPercent` a user set; with
`analysis` it is judged every interval and rolled back when it fails. With `steps` it
moves from step to step while each passes on live metrics, and the last step (100)
promotes: the stable Deployment rolls to the canary's model (`status.promotion`) and
the canary goes to zero. A failed step, a missed deadline or `abort` rolls it back.

`decide()` is pure: it reads the previous status, what the cluster shows and the
latest judgement (`kubeloop.canary.measure`), and returns the new canary status.
"""

from __future__ import annotations

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import (
    CanaryStatus,
    Promotion,
)
from kubeloop.canary.judge import FAIL, HOLD, PASS
from kubeloop.canary.measure import Measured
from kubeloop.controllers.canary_judgement import judgement
from kubeloop.controllers.canary_state import (
    ABORTED,
    ANALYZING,
    AVAILABLE,
    HOLDING,
    IDLE,
    JUDGED,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    UNDER_WAY,
    WAITING,
    Decision,
    Event,
    Inputs,
    World,
    analysis_of,
    current_promotion,
    judging,
    serves,
)
from kubeloop.controllers.common import parse_time, rfc3339
from kubeloop.controllers.k8sread import deployment_available as available
from kubeloop.controllers.k8sread import deployment_ready as ready
from kubeloop.controllers.k8sread import rolled_out

# What other modules read of the canary (its states and the tracks' readings).
__all__ = [
    "ABORTED",
    "ANALYZING",
    "AVAILABLE",
    "HOLDING",
    "IDLE",
    "JUDGED",
    "PAUSED",
    "PROGRESSING",
    "PROMOTED",
    "PROMOTING",
    "ROLLED_BACK",
    "UNDER_WAY",
    "WAITING",
    "Decision",
    "Event",
    "Inputs",
    "World",
    "analysis_of",
    "available",
    "current_promotion",
    "decide",
    "judgement",
    "judging",
    "ready",
    "rolled_out",
    "serves",
]


def _step_text(step: int, steps: list[int]) -> str:
    return f"step {step} of {len(steps)} ({steps[step - 1]}% of traffic)"


def decide(inp: Inputs) -> Decision:
    """The canary's next state, for a resolved canary model."""
    if inp.canary.steps:
        return _progressive(inp)
    out = _fixed(inp)
    out.promotion = inp.promotion
    return out


def _base_status(inp: Inputs) -> CanaryStatus:
    prev, same = inp.prev, inp.prev.model_uri == inp.uri
    return CanaryStatus(
        model_uri=inp.uri,
        start_time=prev.start_time if same and prev.start_time else rfc3339(inp.now),
        step=prev.step if same else None,
        step_start_time=prev.step_start_time if same else None,
        analysis=prev.analysis if same else None,
    )


def _stopped(status: CanaryStatus, state: str, message: str, reason: str) -> Decision:
    status.state, status.message = state, message
    status.replicas, status.actual_traffic_percent = 0, 0
    return Decision(status, None, True, c.Cond(c.CANARY_AVAILABLE, False, reason, message))


def _transition(inp: Inputs, state: str, event: Event) -> list[Event]:
    """The event, when the canary enters `state` (not again on every pass)."""
    same = inp.prev.model_uri == inp.uri
    return [] if same and inp.prev.state == state else [event]


def _abort(inp: Inputs, status: CanaryStatus) -> Decision:
    message = (
        f"canary {inp.uri} aborted by spec.canary.abort; the stable model "
        f"{inp.stable_uri} serves all traffic"
    )
    out = _stopped(status, ABORTED, message, c.CANARY_ABORTED)
    out.events = _transition(inp, ABORTED, ("Warning", c.CANARY_ABORTED, message))
    return out


def _kept_back(inp: Inputs, status: CanaryStatus) -> Decision | None:
    """States that hold whatever else happens: rolled back, aborted, the stable's own."""
    prev, same = inp.prev, inp.prev.model_uri == inp.uri
    if same and prev.state == ROLLED_BACK:
        return _stopped(
            status, ROLLED_BACK, prev.message or "canary rolled back", c.CANARY_ROLLED_BACK
        )
    if inp.canary.abort:
        return _abort(inp, status)
    if inp.uri == inp.stable_uri:
        message = f"the canary's model {inp.uri} is the stable's: nothing to compare"
        return _stopped(status, IDLE, message, c.CANARY_NO_TRAFFIC)
    return None


def _rolled_back(inp: Inputs, status: CanaryStatus, why: str) -> Decision:
    message = f"{why}; rolled back, the stable model {inp.stable_uri} serves all traffic"
    out = _stopped(status, ROLLED_BACK, message, c.CANARY_ROLLED_BACK)
    out.events = [("Warning", c.CANARY_ROLLED_BACK, message)]
    return out


def _deadline(inp: Inputs, status: CanaryStatus, share: int, since: str | None) -> Decision:
    """Pods of this share are not available yet: wait, or roll back past the deadline."""
    want = inp.replicas_for(share)
    have = ready(inp.world.canary)
    deadline = inp.canary.progress_deadline_seconds
    elapsed = (inp.now - (parse_time(since) or inp.now)).total_seconds()
    if elapsed >= deadline:
        why = inp.world.crash or f"{have} of {want} canary replicas ready"
        return _rolled_back(
            inp, status, f"canary {inp.uri} not available within {deadline}s ({why})"
        )
    status.state = PROGRESSING
    status.message = f"{have} of {want} canary replicas ready"
    cond = c.Cond(c.CANARY_AVAILABLE, False, c.CANARY_PROGRESSING, status.message)
    return Decision(status, share, True, cond, requeue_after=deadline - elapsed, under_way=True)


def _fixed(inp: Inputs) -> Decision:
    """A fixed share; rolled back on a failed judgement when `analysis` is set."""
    status = _base_status(inp)
    status.step = status.step_start_time = None
    share = inp.canary.traffic_percent
    status.traffic_percent = share
    held = _kept_back(inp, status)
    if held is not None:
        held.status.traffic_percent = share  # type: ignore[union-attr]
        return held
    if share == 0:
        message = f"trafficPercent is 0: canary {inp.uri} is kept at zero replicas"
        out = _stopped(status, IDLE, message, c.CANARY_NO_TRAFFIC)
        out.status.traffic_percent = share  # type: ignore[union-attr]
        return out
    if inp.prev.model_uri == inp.uri and inp.prev.state in (ABORTED, IDLE):
        status.start_time = rfc3339(inp.now)  # a new start: the deadline counts from now
    measured = _verdict_for(inp, None)
    if measured is not None and measured.verdict.decision == FAIL and inp.prev.state == AVAILABLE:
        status.analysis = judgement(measured, inp.now)
        return _rolled_back(inp, status, f"canary {inp.uri}: {measured.verdict.message}")
    if available(inp.world.canary) < inp.replicas_for(share):
        if inp.prev.model_uri == inp.uri and inp.prev.state == AVAILABLE:
            return _dipped(inp, status, share, AVAILABLE)
        out = _deadline(inp, status, share, status.start_time)
        out.under_way = False  # a fixed canary never holds the resource in progress
        out.route_share = None  # no weight on the route before its pods are ready
        return out
    status.state, status.message = AVAILABLE, ""
    out = Decision(status, share, True, c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_AVAILABLE_REASON))
    if inp.canary.analysis is None or inp.canary.paused:
        return out
    if measured is not None:
        status.analysis = judgement(measured, inp.now)
    out.requeue_after = inp.due_in if inp.due_in is not None else 0.5
    return out


def _verdict_for(inp: Inputs, step: int | None) -> Measured | None:
    """The judgement, when it was made on this canary model and step."""
    measured = inp.measured
    if measured is None or measured.uri != inp.uri or measured.step != step:
        return None
    return measured


def _dipped(inp: Inputs, status: CanaryStatus, share: int, state: str) -> Decision:
    """Pods lost after the step was available (an eviction, a node drain, the HPA adding
    replicas): no deadline, the state holds; a canary whose pods crash is rolled back."""
    if inp.world.crash:
        return _rolled_back(inp, status, f"canary {inp.uri} cannot serve: {inp.world.crash}")
    want, have = inp.replicas_for(share), ready(inp.world.canary)
    status.state = state
    status.message = inp.prev.message
    cond = c.Cond(
        c.CANARY_AVAILABLE, False, c.CANARY_PROGRESSING, f"{have} of {want} canary replicas ready"
    )
    return Decision(
        status, share, True, cond, requeue_after=inp.due_in, under_way=bool(inp.canary.steps)
    )


def _progressive(inp: Inputs) -> Decision:
    steps, uri = inp.canary.steps, inp.uri
    status = _base_status(inp)
    promotion = inp.promotion
    promoting = promotion is not None and promotion.uri == uri
    if promoting and (serves(inp.world.stable, uri) or inp.prev.state == PROMOTED):
        return _promoted(inp, status)
    if promoting and inp.canary.abort:
        inp.stable_uri = inp.model_uri
        return _abort(inp, status)
    if promoting:
        return _promoting(inp, status)
    held = _kept_back(inp, status)
    if held is not None:
        held.promotion = promotion
        return held
    # A new model, or one that starts over: aborted and cleared, idle, or promoted before
    # spec.model changed (that promotion no longer stands).
    restart = (
        inp.prev.model_uri != uri
        or inp.prev.step is None
        or inp.prev.state in (ABORTED, IDLE, WAITING, PROMOTED, PROMOTING)
    )
    events: list[Event] = []
    if restart:
        status.step, status.step_start_time, status.analysis = 1, rfc3339(inp.now), None
        events.append(("Normal", c.CANARY_STARTED, f"canary {uri}: {_step_text(1, steps)}"))
    step = status.step or 1
    below = len(steps) - 1  # steps end at 100, the promotion; the schema wants two or more
    had = inp.prev.traffic_percent
    changed = not restart and had is not None and step <= below and steps[step - 1] != had
    if step > below or changed:
        # `steps` changed under way: go on from the last step at or below the share the
        # canary had (never straight to 100), and measure it afresh.
        step = max([i + 1 for i, w in enumerate(steps[:below]) if w <= (had or 0)] or [1])
        status.step_start_time = rfc3339(inp.now)
        status.analysis = None
    status.step = step
    if below < 1:
        return _promote(inp, status, events, f"canary {uri} has no step below 100")
    out = _at_step(inp, status, step)
    out.events = events + out.events
    out.promotion = inp.promotion  # set by _promote when this step passed
    return out


def _promoted(inp: Inputs, status: CanaryStatus) -> Decision:
    """The stable serves the canary's model. The canary keeps its pods until the stable
    has all of its replicas, so that the serving capacity never drops."""
    message = f"canary {inp.uri} passed every step and is the stable model"
    status.analysis = inp.prev.analysis
    out = _stopped(status, PROMOTED, message, c.CANARY_PROMOTED)
    out.events = _transition(inp, PROMOTED, ("Normal", c.CANARY_PROMOTED, message))
    out.promotion = inp.promotion
    if available(inp.world.stable) < inp.stable_total:
        out.keep_canary = ready(inp.world.canary)
        out.requeue_after = 2.0
    return out


def _at_step(inp: Inputs, status: CanaryStatus, step: int) -> Decision:
    steps, uri = inp.canary.steps, inp.uri
    share = steps[step - 1]
    status.traffic_percent = share
    where = _step_text(step, steps)
    same_step = inp.prev.model_uri == uri and inp.prev.step == step
    judged_here = same_step and inp.prev.state in JUDGED
    measured = _verdict_for(inp, step) if judged_here else None
    if measured is not None and measured.verdict.decision == FAIL:
        status.analysis = judgement(measured, inp.now)
        return _rolled_back(inp, status, f"canary {uri} failed {where}: {measured.verdict.message}")
    if available(inp.world.canary) < inp.replicas_for(share):
        if same_step and inp.prev.state in (*JUDGED, PAUSED):
            return _dipped(inp, status, share, inp.prev.state or ANALYZING)
        out = _deadline(inp, status, share, status.step_start_time)
        # The route carries what the ready pods can: the step before, or nothing yet.
        out.route_share = steps[step - 2] if step > 1 and ready(inp.world.canary) else None
        return out
    if inp.canary.paused:
        status.state, status.message = PAUSED, f"paused at {where}"
        cond = c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_PAUSED, status.message)
        out = Decision(status, share, True, cond, under_way=True)
        out.events = _transition(
            inp, PAUSED, ("Normal", c.CANARY_PAUSED, f"canary {uri} {status.message}")
        )
        return out
    if not judged_here:
        status.state, status.message = ANALYZING, f"measuring {where}"
        cond = c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_ANALYZING, status.message)
        out = Decision(status, share, True, cond, requeue_after=0.5, under_way=True)
        if inp.prev.state == PAUSED and inp.prev.model_uri == uri:
            out.events = [("Normal", c.CANARY_RESUMED, f"canary {uri} resumed at {where}")]
        return out
    if measured is None:
        status.state, status.message = inp.prev.state, inp.prev.message
        reason = c.CANARY_HOLDING if inp.prev.state == HOLDING else c.CANARY_ANALYZING
        cond = c.Cond(c.CANARY_AVAILABLE, True, reason, status.message or "")
        requeue = inp.due_in if inp.due_in is not None else 0.5
        return Decision(status, share, True, cond, requeue_after=requeue, under_way=True)
    status.analysis = judgement(measured, inp.now)
    verdict = measured.verdict
    if verdict.decision == HOLD:
        status.state, status.message = HOLDING, f"holding {where}: {verdict.message}"
        cond = c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_HOLDING, status.message)
        out = Decision(status, share, True, cond, requeue_after=inp.due_in, under_way=True)
        out.events = _transition(
            inp, HOLDING, ("Normal", c.CANARY_HOLDING, f"canary {uri} {status.message}")
        )
        return out
    assert verdict.decision == PASS
    passed = f"{where} passed: {verdict.message}"
    following = steps[step]
    if following >= 100:
        return _promote(inp, status, [], f"canary {uri} {passed}")
    status.step, status.step_start_time = step + 1, rfc3339(inp.now)
    status.state = PROGRESSING
    status.traffic_percent = following
    status.message = f"{passed}; now {_step_text(step + 1, steps)}"
    cond = c.Cond(c.CANARY_AVAILABLE, False, c.CANARY_PROGRESSING, status.message)
    out = Decision(status, following, True, cond, requeue_after=0.5, under_way=True)
    out.route_share = share  # the new share goes to the route once its pods are ready
    out.events = [("Normal", c.CANARY_STEP_PASSED, f"canary {uri} {status.message}")]
    return out


def _promote(inp: Inputs, status: CanaryStatus, events: list[Event], why: str) -> Decision:
    """The last step: the stable rolls to the canary's model."""
    inp.promotion = Promotion(uri=inp.uri, replaces=inp.model_uri, time=rfc3339(inp.now))
    out = _promoting(inp, status)
    message = f"{why}; promoting: the stable Deployment rolls to {inp.uri}"
    out.events = [*events, ("Normal", c.CANARY_PROMOTING, message)]
    return out


def _promoting(inp: Inputs, status: CanaryStatus) -> Decision:
    """The stable rolls to the canary's model; the canary keeps its share meanwhile."""
    steps = inp.canary.steps
    below = [s for s in steps if s < 100]
    share = below[-1] if below else None
    status.step, status.traffic_percent = len(steps), share or 0
    status.state = PROMOTING
    status.message = f"the stable Deployment rolls to {inp.uri}"
    cond = c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_PROMOTING, status.message)
    return Decision(status, share, True, cond, promotion=inp.promotion, under_way=True)
