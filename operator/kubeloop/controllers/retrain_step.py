"""The retrain loop as a pure state machine: `step(status, observed) -> (status, actions)`.

The record is the monitor's status (`retrainCount`, `lastRetrain`, `retrains`); what
the step reads of the cluster is in `Observed` (gathered by controllers/retrain.py from
the store, with an API read where the store may lag); what it asks for is in `Actions`,
carried out by controllers/execute.py. Nothing here reads a clock, a global or the API.

The table (`lastRetrain.result`, what is observed → the next result, what is done):

    (none or ended), a retrain is wanted      → Running: count it, apply TrainingJob
    Running, TrainingJob not yet created      → Running: apply it (a crash in between)
    Running, its name held by another's       → Failed (RetrainFailed, not adopted)
    Running, created and gone                 → Failed (RetrainFailed: deleted)
    Running, TrainingJob Failed               → Failed (RetrainFailed)
    Running, a search ended, no best trial    → Failed (RetrainFailed)
    Running, a search ended with a best trial → as Succeeded, with that trial's model
    Running, Succeeded, no gate               → promote (below)
    Running, Succeeded, a gate                → Evaluating: apply the evaluation Job
    Evaluating, the challenger is the champion→ EvaluationFailed
    Evaluating, the gate removed              → Succeeded (EvaluationCancelled)
    Evaluating, Job not finished              → Evaluating
    Evaluating, finished, no verdict yet      → Evaluating, look again in 1 s (grace)
    Evaluating, no verdict / an error         → EvaluationFailed, with why
    Evaluating, not better                    → Rejected
    Evaluating, passed, champion replaced     → Succeeded (ChampionChanged)
    Evaluating, passed                        → promote (below)
    promote: not asked / nothing to patch     → Succeeded
    promote: a shadow gate, not yet tried     → Shadowing: annotate the deployment
    promote: a shadow gate, spec.shadow taken → EvaluationFailed (ShadowInUse)
    Shadowing, gate/note removed, target gone → Succeeded (ShadowTrialCancelled): note off
    Shadowing, champion replaced              → Succeeded (ChampionChanged): note off
    Shadowing, too few labelled requests      → Shadowing; past the timeout → Rejected
    Shadowing, enough, does not meet require  → Rejected: note off
    Shadowing, enough, meets require          → promote (below), the note off with it
    promote: a canary with steps              → RollingOut: patch the canary
    promote: otherwise                        → Promoted: patch the model (or canary)
    RollingOut, passed every step             → Promoted
    RollingOut, another canary                → Superseded
    RollingOut, rolled back or aborted        → RolledBack

(controllers/retrain_shadow.py: the trial's moves and verdict.)

A create or patch the API server refuses ends the retrain (`on_refused`); any other
failure (a lost connection, a 5xx) leaves the status unwritten and the step is taken
again with backoff.
"""

from __future__ import annotations

from typing import Any

from kubeloop import conditions as c
from kubeloop.api.driftmonitor import DriftMonitorStatus, Evaluation, RetrainRecord
from kubeloop.controllers import promotion_note, retrain_verdict
from kubeloop.controllers.common import refused, rfc3339
from kubeloop.controllers.k8sread import job_finished, terminated, termination_message
from kubeloop.controllers.retrain_actions import (
    EVALUATING,
    EVALUATION_FAILED,
    FAILED,
    IN_FLIGHT,
    PROMOTED,
    REJECTED,
    ROLLED_BACK,
    ROLLING_OUT,
    RUNNING,
    SHADOWING,
    SUCCEEDED,
    SUPERSEDED,
    VERDICT_GRACE,
    Actions,
    Create,
    Observed,
    Promote,
)
from kubeloop.controllers.retrain_render import (
    EVAL_JOB,
    EXPERIMENT,
    TRAINING_JOB,
    promotion_patch,
    render_evaluation,
    render_retrain,
)
from kubeloop.controllers.retrain_search import searched
from kubeloop.controllers.retrain_shadow_step import ShadowSteps
from kubeloop.kube import KubeError
from kubeloop.names import CHAMPION_ANNOTATION, SHADOW_TRIAL_ANNOTATION
from kubeloop.render import evaluation as render_eval


def step(status: DriftMonitorStatus, obs: Observed) -> tuple[DriftMonitorStatus, Actions]:
    """The next state of the monitor's loop and what to do for it (pure)."""
    status = status.model_copy(deep=True)
    acts = Actions()
    _Step(status, obs, acts).run()
    return status, acts


class _Step(ShadowSteps):
    def run(self) -> None:
        last = self.status.last_retrain
        if last is not None and last.result in IN_FLIGHT:
            # One move per step: what a move creates or patches is observed by the next.
            if last.result == RUNNING:
                self._training(last)
            elif last.result == EVALUATING:
                self._evaluation(last)
            elif last.result == SHADOWING:
                self._trial(last)
            else:
                self._rollout(last)
            return
        if self.obs.wants_retrain and self.obs.spec.on_drift.retrain is not None:
            self._start()

    # --- Running ---------------------------------------------------------------------

    def _start(self) -> None:
        obs, status = self.obs, self.status
        status.retrain_count = obs.next_number
        last = RetrainRecord(training_job=obs.next_name, time=rfc3339(obs.now), result=RUNNING)
        status.last_retrain = last
        self.acts.status_first = self.acts.started = True
        self._create_retrain(last)
        taken = f" ({', '.join(obs.skipped)} exists and is not this monitor's)"
        what = EXPERIMENT if last.experiment else TRAINING_JOB
        words = f"created {what} {last.training_job}{taken if obs.skipped else ''}"
        self.acts.events.append(("Normal", "RetrainStarted", words))

    def _create_retrain(self, last: RetrainRecord) -> None:
        obj = render_retrain(self.obs.spec, self.obs.monitor, last.training_job)
        what = obj["kind"]  # the record says what is made (the spec may have changed)
        last.experiment = last.training_job if what == EXPERIMENT else None

        def on_refused(err: KubeError) -> bool:
            if not (refused(err) or err.status == 403):
                return False
            self._event("Warning", "RetrainFailed", f"{what} {last.training_job}: {err}")
            self._conclude(last, FAILED, f"refused by the API server: {err}")
            return True

        self.acts.creates.append(Create(obj, what, on_refused))

    def _training(self, last: RetrainRecord) -> None:
        obs = self.obs
        tj = obs.experiment if last.experiment else obs.training_job
        what = EXPERIMENT if last.experiment else TRAINING_JOB
        if tj is None:
            if last.created and obs.gone:
                why = (
                    f"{what} {last.training_job} was deleted before it ended; not "
                    "created again, not promoted"
                )
                self._event("Warning", "RetrainFailed", why)
                self._conclude(last, FAILED, why)
            elif obs.taken is not None:
                message = f"{obs.taken} exists and is not this monitor's: not adopted, not promoted"
                self._event("Warning", "RetrainFailed", message)
                self._conclude(last, FAILED, message)
            elif not last.created and obs.spec.on_drift.retrain is not None:
                # Counted but not created (a crash in between): create it now.
                self._create_retrain(last)
            return
        last.created = True
        if last.experiment:
            self._searched(last, tj)
            return
        tj_status = tj.get("status") or {}
        phase = tj_status.get("phase")
        if phase == "Failed":
            why = (
                f"TrainingJob {last.training_job} failed: {tj_status.get('message', '')}; "
                "not promoted"
            )
            self._event("Warning", "RetrainFailed", why)
            self._conclude(last, FAILED, why)
        elif phase == "Succeeded":
            last.model_uri = tj_status.get("modelUri")
            self._ran(last)

    def _ran(self, last: RetrainRecord) -> None:
        if self.obs.spec.on_drift.evaluate is not None and last.model_uri:
            self._start_evaluation(last)
        else:
            self._promote(last)

    def _searched(self, last: RetrainRecord, search: dict[str, Any]) -> None:
        """A search that ended: its best trial is the run, its model the retrained one."""
        ended = searched(str(last.experiment), search)
        if ended is None:
            return
        if ended.failure is not None:
            self._event("Warning", "RetrainFailed", ended.failure)
            self._conclude(last, FAILED, ended.failure)
            return
        last.training_job, last.model_uri = str(ended.trial), ended.model_uri
        self._event("Normal", "RetrainSearched", ended.message)
        self._ran(last)

    # --- Evaluating --------------------------------------------------------------------

    def _start_evaluation(self, last: RetrainRecord) -> None:
        obs = self.obs
        evaluate = obs.spec.on_drift.evaluate
        assert evaluate is not None and last.model_uri is not None
        champion = ((obs.target or {}).get("status") or {}).get("activeModelUri")
        name = render_eval.job_name(last.training_job)
        if obs.evaluation_job is not None:
            # Created before a restart that lost the status write: its champion stands.
            annotations = obs.evaluation_job["metadata"].get("annotations") or {}
            champion = annotations.get(CHAMPION_ANNOTATION) or None
        last.result = EVALUATING
        last.evaluation = Evaluation(job=name, metric=evaluate.metric, champion_uri=champion)
        if champion is not None and champion == last.model_uri:
            message = (
                f"the retrain wrote its model to {champion}, where the serving model is: put "
                "{trainingJob} in the template's output.uri so that each retrain has its own"
            )
            self._failed(last, message, message)
            return
        if not self._create_evaluation(last):
            return
        against = f"the champion {champion}" if champion else "no champion (only the floor)"
        self._event(
            "Normal",
            "EvaluationStarted",
            f"Job {name} scores {last.model_uri} against {against} on {evaluate.metric}",
        )

    def _create_evaluation(self, last: RetrainRecord) -> bool:
        """The Job unless it exists (the same name after a crash); False when it ended."""
        obs, ev = self.obs, last.evaluation
        assert ev is not None and last.model_uri is not None
        if obs.evaluation_job is not None:
            return True
        if obs.evaluation_taken:
            message = f"Job {ev.job} exists and is not this monitor's: not adopted"
            self._failed(last, message, f"evaluation Job {ev.job}: {message}")
            return False

        def on_refused(err: KubeError) -> bool:
            if not (refused(err) or err.status == 403):
                return False
            self._failed(last, str(err), f"evaluation Job {ev.job}: {err}")
            return True

        job = render_evaluation(
            obs.spec, obs.monitor, last, obs.image, obs.evaluation_scheduling, obs.live_rows
        )
        self.acts.creates.append(Create(job, EVAL_JOB, on_refused))
        return True

    def _evaluation(self, last: RetrainRecord) -> None:
        obs, ev = self.obs, last.evaluation
        assert ev is not None
        if obs.spec.on_drift.evaluate is None:
            # The gate was taken out of the spec meanwhile: no verdict, so no promotion.
            message = "onDrift.evaluate was removed during the evaluation; not promoted"
            ev.passed, ev.reason, ev.message = False, c.EVALUATION_CANCELLED, message
            self._event("Warning", c.EVALUATION_CANCELLED, f"{last.model_uri}: {message}")
            self._conclude(last, SUCCEEDED)
            return
        job = obs.evaluation_job
        if job is None:
            # Lost (a crash, or its TTL): the same Job again.
            self._create_evaluation(last)
            return
        done = job_finished(job)
        if done is None:
            return
        pod = obs.evaluation_pod
        verdict = retrain_verdict.parse_verdict(termination_message(pod, render_eval.CONTAINER))
        if verdict is None and not terminated(pod, render_eval.CONTAINER):
            wait = VERDICT_GRACE - retrain_verdict.seconds_since_done(done, job, obs.now)
            if wait > 0:
                # Its pod, with the verdict, has not been seen ended yet.
                self.acts.requeue_after = min(wait, 1.0)
                return
        if verdict is None or "error" in verdict:
            why = str((verdict or {}).get("error") or retrain_verdict.no_verdict(done, pod))
            self._failed(
                last,
                why,
                f"evaluation Job {ev.job} gave no verdict: {why}; {last.model_uri} is not promoted",
            )
            return
        ev.champion, ev.challenger = verdict.get("champion"), verdict.get("challenger")
        ev.passed, ev.reason = bool(verdict["passed"]), str(verdict.get("reason") or "")
        ev.message, ev.live = str(verdict.get("message") or ""), verdict.get("live")
        if not ev.passed:
            keeps = f"; {ev.champion_uri} keeps serving" if ev.champion_uri else ""
            self._event(
                "Warning",
                REJECTED,
                f"{last.model_uri} rejected by the evaluation gate: {ev.message}{keeps}",
            )
            self._conclude(last, REJECTED)
            return
        serving = ((obs.target or {}).get("status") or {}).get("activeModelUri")
        if serving != ev.champion_uri:
            # The verdict is about a model that no longer serves: it does not apply.
            ev.passed, ev.reason = False, c.CHAMPION_CHANGED
            ev.message = (
                f"{ev.message}; but the deployment now serves {serving}, not the champion "
                f"{ev.champion_uri} it was scored against: not promoted"
            )
            self._event("Warning", c.CHAMPION_CHANGED, f"{last.model_uri}: {ev.message}")
            self._conclude(last, SUCCEEDED)
            return
        self._event("Normal", "EvaluationPassed", f"{last.model_uri}: {ev.message}")
        self._promote(last)

    def _failed(self, last: RetrainRecord, message: str, event: str) -> None:
        ev = last.evaluation
        assert ev is not None
        ev.passed, ev.reason, ev.message = False, EVALUATION_FAILED, message
        self._event("Warning", EVALUATION_FAILED, event)
        self._conclude(last, EVALUATION_FAILED)

    # --- Promotion and rollout -------------------------------------------------------

    def _promote(self, last: RetrainRecord, tried: bool = False) -> None:
        obs = self.obs
        target, uri, md = obs.target, last.model_uri, obs.spec.model_deployment
        if not (obs.spec.on_drift.promote and uri and target is not None):
            self._conclude(last, SUCCEEDED)
            return
        on_drift = obs.spec.on_drift
        if on_drift.shadow is not None and not tried:
            self._start_trial(last, target)
            return
        name = obs.monitor["metadata"]["name"]
        patch = promotion_patch(target, uri, name, last, on_drift.promote_with)
        if tried:
            # The trial's note goes with the promotion, in the same patch.
            patch["metadata"]["annotations"][SHADOW_TRIAL_ANNOTATION] = None
        events_before = len(self.acts.events)

        def on_refused(err: KubeError) -> bool:
            if not retrain_verdict.promotion_refused(err):
                return False
            del self.acts.events[events_before:]
            self._event("Warning", "PromotionFailed", str(err))
            self._conclude(last, SUCCEEDED)
            return True

        self.acts.promote = Promote(md, patch, on_refused)
        if ((target.get("spec") or {}).get("canary") or {}).get("steps"):
            self._event(
                "Normal",
                ROLLING_OUT,
                f"{uri} is the canary of ModelDeployment {md}: promoted once it passes every step",
            )
            last.result = ROLLING_OUT
            return
        canary = promotion_note.field_of(target.get("spec") or {}) == promotion_note.CANARY_MODEL
        where = "as canary" if canary else "as the model"
        if on_drift.promote_with == "Annotation":
            where += " (in its kubeloop.io/promotion annotation; its spec is unchanged)"
        self._event("Normal", PROMOTED, f"ModelDeployment {md} now serves {uri} {where}")
        self._conclude(last, PROMOTED)

    def _rollout(self, last: RetrainRecord) -> None:
        """The model is the canary of a ModelDeployment with steps: Promoted only once it
        passed every step, RolledBack when its analysis failed or it was aborted."""
        target, md, uri = self.obs.target, self.obs.spec.model_deployment, last.model_uri
        # The canary it serves: a promotion kept in the annotation stands in for Git's.
        md_spec = promotion_note.served_raw(
            (target or {}).get("spec") or {}, promotion_note.standing(target or {})
        )
        md_status = (target or {}).get("status") or {}
        canary = md_status.get("canary") or {}
        # The stable serves it, and no step is under way (Promoted, or Idle once
        # spec.model was brought to it).
        promoted = md_status.get("activeModelUri") == uri and canary.get("state") in (
            "Promoted",
            "Idle",
            None,
        )
        candidate = ((md_spec.get("canary") or {}).get("model") or {}).get("uri")
        if candidate == uri and not (md_spec.get("canary") or {}).get("steps"):
            # The steps were removed: a fixed canary, promoted by hand, as without steps.
            promoted = True
        if promoted:
            self._event(
                "Normal", PROMOTED, f"ModelDeployment {md} serves {uri}: it passed every step"
            )
            self._conclude(last, PROMOTED)
        elif target is None or candidate != uri:
            self._event(
                "Warning", SUPERSEDED, f"{uri} is no longer the canary of ModelDeployment {md}"
            )
            self._conclude(last, SUPERSEDED)
        elif canary.get("modelUri") == uri and canary.get("state") in ("RolledBack", "Aborted"):
            message = f"the canary {uri} was rolled back: {canary.get('message', '')}"
            self._event("Warning", ROLLED_BACK, message)
            self._conclude(last, ROLLED_BACK)
