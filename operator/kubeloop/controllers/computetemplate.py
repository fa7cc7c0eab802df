"""ComputeTemplates: applying one to the resource that names it (or the default), and
the template's own status: how many pods of its shape fit on the cluster now and at
most, and which resources use it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubeloop import compute, podsecurity
from kubeloop import conditions as c
from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.api.common import CommonStatus
from kubeloop.api.computetemplate import (
    AppliedTemplate,
    ComputeTemplateSpec,
    ComputeTemplateStatus,
    TemplateUser,
)
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.controllers.common import Ctx, rfc3339
from kubeloop.controllers.execute import Plan, execute
from kubeloop.controllers.registration import Controller
from kubeloop.controllers.runtime import Key, Result
from kubeloop.kube import KubeError

log = logging.getLogger("kubeloop.computetemplate")

KIND = compute.KIND
REFRESH_SECONDS = 30.0
MAX_USERS_LISTED = 20
ENDED = ("Succeeded", "Failed")
# Runs end; a ModelDeployment never does.
RUNS = ("TrainingJob", "BatchPrediction")
USERS = (*RUNS, "ModelDeployment")
# Set once listing pods is refused (the chart's countAllPods off): not asked again.
_pods_forbidden: list[bool] = []


@dataclass
class Applied:
    """A resource's spec with its template applied, or why it cannot be."""

    spec: Any
    template: AppliedTemplate | None = None
    blocked: c.Cond | None = None  # Ready False with the reason, when it cannot run
    stalled: bool = False
    changed: bool = False  # the live template differs from the one recorded


def templates(ctx: Ctx) -> dict[str, dict[str, Any]]:
    return {t["metadata"]["name"]: t for t in ctx.store.all(KIND)}


def _missing(name: str) -> c.Cond:
    return c.Cond(
        c.READY,
        False,
        c.COMPUTE_TEMPLATE_NOT_FOUND,
        f"ComputeTemplate {name} does not exist (yet): nothing runs until it does",
    )


def for_training(
    ctx: Ctx,
    spec: TrainingJobSpec,
    recorded: AppliedTemplate | None,
    started: bool,
    namespace: str,
) -> Applied:
    """The spec with its template applied (below), or why it cannot run: a conflict
    with the template, or pods beyond what Pod Security restricted and the template
    allow (kubeloop/podsecurity.py)."""
    applied = _run_template(ctx, spec, recorded, started, compute.for_training)
    if applied.blocked is not None:
        return applied
    allowed = podsecurity.allowance(spec.compute, _named(applied), namespace)
    return _secured(applied, podsecurity.training(spec, "spec", namespace, allowed))


def _named(applied: Applied) -> ComputeTemplateSpec | None:
    return applied.template.spec if applied.template is not None else None


def _secured(applied: Applied, refusals: list[str]) -> Applied:
    if not refusals:
        return applied
    cond = c.Cond(c.READY, False, c.POD_SECURITY_REFUSED, "; ".join(refusals))
    return Applied(applied.spec, blocked=cond, stalled=True)


def for_batch(
    ctx: Ctx, spec: BatchPredictionSpec, recorded: AppliedTemplate | None, started: bool
) -> Applied:
    """As for_training, for a BatchPrediction (its pods are Kubeloop's own, restricted
    by construction: no Pod Security check to add)."""
    return _run_template(ctx, spec, recorded, started, compute.for_batch)


def _run_template(
    ctx: Ctx,
    spec: Any,
    recorded: AppliedTemplate | None,
    started: bool,
    merge: Callable[[Any, str, ComputeTemplateSpec], tuple[Any, list[str]]],
) -> Applied:
    """A run keeps the template it recorded at its start; a new one takes the named
    template (or the default) as it is now. A run that started with no template keeps
    running without one (a default added later is for new runs)."""
    if started and recorded is None:
        return Applied(spec)
    name, obj = compute.choose(spec.compute, templates(ctx))
    if recorded is not None and spec.compute in (None, recorded.name):
        name, obj = recorded.name, templates(ctx).get(recorded.name)
        live = ComputeTemplateSpec.model_validate((obj or {}).get("spec") or {})
        template, changed = recorded, obj is None or live != recorded.spec
    elif name is None:
        return Applied(spec)
    elif obj is None:
        return Applied(spec, blocked=_missing(name))
    else:
        template = AppliedTemplate(
            name=name, spec=ComputeTemplateSpec.model_validate(obj.get("spec") or {})
        )
        changed = False
    merged, errors = merge(spec, name, template.spec)
    if errors:
        return Applied(spec, blocked=_conflict(errors), stalled=True)
    return Applied(merged, template, changed=changed)


def for_serving(ctx: Ctx, spec: ModelDeploymentSpec, namespace: str) -> Applied:
    """As for_training; replicas follow the template as it is now (a change rolls
    them out)."""
    applied = _serving_template(ctx, spec)
    if applied.blocked is not None:
        return applied
    allowed = podsecurity.allowance(spec.compute, _named(applied), namespace)
    return _secured(applied, podsecurity.serving(spec, namespace, allowed))


def _serving_template(ctx: Ctx, spec: ModelDeploymentSpec) -> Applied:
    name, obj = compute.choose(spec.compute, templates(ctx))
    if name is None:
        return Applied(spec)
    if obj is None:
        return Applied(spec, blocked=_missing(name))
    template = ComputeTemplateSpec.model_validate(obj.get("spec") or {})
    merged, errors = compute.for_serving(spec, name, template)
    if errors:
        return Applied(spec, blocked=_conflict(errors), stalled=True)
    return Applied(merged, AppliedTemplate(name=name, spec=template))


def _conflict(errors: list[str]) -> c.Cond:
    return c.Cond(c.READY, False, c.COMPUTE_TEMPLATE_CONFLICT, "; ".join(errors))


def condition(applied: Applied) -> c.Cond | None:
    """The `ComputeTemplate` condition of a resource that uses one."""
    if applied.template is None:
        return None
    name = applied.template.name
    if applied.changed:
        return c.Cond(
            c.COMPUTE_TEMPLATE,
            False,
            c.COMPUTE_TEMPLATE_CHANGED,
            f"ComputeTemplate {name} changed (or was deleted) after this run started; the "
            "run keeps the settings it started with (status.compute)",
        )
    return c.Cond(c.COMPUTE_TEMPLATE, True, c.COMPUTE_TEMPLATE_APPLIED, f"uses {name}")


def conditions(applied: Applied) -> list[c.Cond]:
    cond = condition(applied)
    return [] if cond is None else [cond]


def held(
    body: dict[str, Any], applied: Applied, status_model: type[CommonStatus]
) -> Plan[CommonStatus]:
    """Why a resource cannot use its template, and nothing else to do: a missing
    template is a wait (it may come), a conflict needs a change (Stalled). What the
    status held stays (a run that started keeps its counts)."""
    assert applied.blocked is not None
    cond = applied.blocked
    extra = c.STALLED if applied.stalled else c.RECONCILING
    prev = body.get("status") or {}
    status = status_model.model_validate(prev)
    # A run that started keeps its phase (its Job is left alone); anything else says
    # it waits, or failed when a change of spec is needed.
    started = bool(prev.get("jobName"))
    status.phase = prev.get("phase") if started else (c.FAILED if applied.stalled else c.PENDING)
    status.message = cond.message
    out = Plan(status=status, conds=[cond, c.Cond(extra, True, cond.reason, cond.message)])
    before = next(
        (x.get("reason") for x in prev.get("conditions", []) if x["type"] == c.READY), None
    )
    if before != cond.reason:
        kind = "Warning" if applied.stalled else "Normal"
        out.events.append((kind, cond.reason, cond.message))
    return out


async def hold(
    ctx: Ctx, body: dict[str, Any], applied: Applied, status_model: type[CommonStatus]
) -> Result | None:
    await execute(ctx, body, held(body, applied, status_model))
    return None


# --- The template's own status --------------------------------------------------------


def users(ctx: Ctx, name: str) -> list[TemplateUser]:
    """Active runs (TrainingJobs, BatchPredictions: not ended) and ModelDeployments
    whose template is `name`."""
    found = []
    all_templates = templates(ctx)
    for kind in USERS:
        for obj in ctx.store.all(kind):
            status = obj.get("status") or {}
            if kind in RUNS and status.get("phase") in ENDED:
                continue
            uses = (status.get("compute") or {}).get("name") or compute.choose(
                (obj.get("spec") or {}).get("compute"), all_templates
            )[0]
            if uses == name:
                meta = obj["metadata"]
                user = TemplateUser(kind=kind, namespace=meta["namespace"], name=meta["name"])
                found.append(user)
    return sorted(found, key=lambda u: (u.namespace, u.kind, u.name))


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, _, name = key
    body = ctx.store.get(KIND, "", name)
    if body is None:
        return None
    pods = None
    if not _pods_forbidden:
        try:
            # Every pod that holds node resources, whoever made it: what is left now.
            pods = await ctx.kube.list("v1", "Pod")
        except KubeError as exc:
            if exc.status == 403:
                # computeTemplates.countAllPods is off: count fitsMax only, from now on.
                _pods_forbidden.append(True)
            log.warning("Cannot list pods to count what fits now: %s", exc)
    decided = plan(body, ctx.store.all("Node"), pods, users(ctx, name), ctx.clock())
    return await execute(ctx, body, decided)


def plan(
    body: dict[str, Any],
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]] | None,
    using: list[TemplateUser],
    now: dt.datetime,
) -> Plan[ComputeTemplateStatus]:
    """How many pods of the template's shape fit (now: None when pods cannot be
    listed), and who uses it; the time of the last change of these counts."""
    spec = ComputeTemplateSpec.model_validate(body.get("spec") or {})
    status = ComputeTemplateStatus(observed_generation=body["metadata"].get("generation"))
    fit = compute.count_fit(spec, nodes, compute.requested_per_node(pods or []))
    status.fits_max = fit.max
    status.fits_now = fit.now if pods is not None else None
    status.in_use = len(using)
    status.used_by = using[:MAX_USERS_LISTED]
    message = f"{fit.now if pods is not None else '?'} of {fit.max} fit now; {len(using)} in use"
    status.phase, status.message = "Ready", message
    prev = body.get("status") or {}
    new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    new["observedGeneration"] = status.observed_generation
    changed = _counts(new) != _counts(prev)
    status.last_update_time = rfc3339(now) if changed else prev.get("lastUpdateTime")
    conds = [c.Cond(c.READY, True, c.COUNTED, message)]
    # A template's status is its counts: written as they change (the throttle holds back
    # none), with no Event (its phase is Ready from the start).
    return Plan(
        status=status,
        conds=conds,
        requeue_after=REFRESH_SECONDS,
        quiet_start=True,
        urgent=COUNTS,
    )


COUNTS = ("fitsNow", "fitsMax", "inUse", "usedBy")


def _counts(status: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(status.get(k) for k in ("observedGeneration", *COUNTS))


def takers(ctx: Ctx, kind: str, name: str) -> list[Key]:
    """Resources of `kind` to look at again when template `name` changes: those naming
    it, and those naming none (the default may have changed). Ended runs are records; a
    ModelDeployment is never ended (one held as Failed by its template recovers)."""
    keys: list[Key] = []
    for obj in ctx.store.all(kind):
        named = (obj.get("spec") or {}).get("compute")
        phase = (obj.get("status") or {}).get("phase")
        if named in (name, None) and (kind not in RUNS or phase not in ENDED):
            keys.append((kind, obj["metadata"]["namespace"], obj["metadata"]["name"]))
    return keys


def _dependents(ctx: Ctx, kind: str, obj: dict[str, Any]) -> list[Key]:
    """A run that starts or ends changes what fits of the template it uses."""
    if kind not in USERS:
        return []
    used = ((obj.get("status") or {}).get("compute") or {}).get("name") or (
        obj.get("spec") or {}
    ).get("compute")
    return [(KIND, "", used)] if used else []


def _all(ctx: Ctx) -> list[Key]:
    return [(KIND, "", t["metadata"]["name"]) for t in ctx.store.all(KIND)]


CONTROLLER = Controller(
    kind=KIND,
    plural="computetemplates",
    reconcile=reconcile,
    cluster_scoped=True,
    dependents=_dependents,
    on_capacity=_all,
    wake_delay=1.0,
    # What the resources read of a template is its spec, and that it exists.
    wake_on_delete=True,
)
