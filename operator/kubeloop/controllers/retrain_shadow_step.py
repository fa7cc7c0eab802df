"""The shadow trial's moves in the retrain step (`onDrift.shadow`): start it by
annotating the deployment, follow it, and end it (promoted with the note removed in the
same patch, or rejected, cancelled or failed with the note removed). The pure decisions
are controllers/retrain_shadow.py's; this is the part of the step that records them."""

from __future__ import annotations

from typing import Any

from kubeloop.api.driftmonitor import RetrainRecord
from kubeloop.controllers import retrain_shadow, retrain_verdict, shadow_trial
from kubeloop.controllers.retrain_actions import (
    EVALUATION_FAILED,
    REJECTED,
    SHADOWING,
    SUCCEEDED,
    Promote,
)
from kubeloop.controllers.retrain_stepbase import StepBase
from kubeloop.kube import KubeError
from kubeloop.names import SHADOW_TRIAL_ANNOTATION


class ShadowSteps(StepBase):
    def _start_trial(self, last: RetrainRecord, target: dict[str, Any]) -> None:
        gate = self.obs.spec.on_drift.shadow
        assert gate is not None and last.model_uri is not None
        move = retrain_shadow.start(last, gate, target, self.obs.now)
        if move.outcome != retrain_shadow.WAIT:
            self._trial_over(last, move, patch=False)
            return
        last.result = SHADOWING
        monitor = self.obs.monitor["metadata"]["name"]
        note = shadow_trial.note(last.model_uri, monitor, last.training_job, gate)
        patch = {"metadata": {"annotations": {SHADOW_TRIAL_ANNOTATION: note}}}
        events_before = len(self.acts.events)

        def on_refused(err: KubeError) -> bool:
            if not retrain_verdict.promotion_refused(err):
                return False
            del self.acts.events[events_before:]
            assert last.shadow is not None
            last.shadow.message = f"the trial's annotation was refused: {err}"
            last.shadow.passed, last.shadow.reason = False, EVALUATION_FAILED
            self._event("Warning", EVALUATION_FAILED, last.shadow.message)
            self._conclude(last, EVALUATION_FAILED)
            return True

        self.acts.promote = Promote(self.obs.spec.model_deployment, patch, on_refused)
        if move.event is not None:
            self._event(*move.event)

    def _trial(self, last: RetrainRecord) -> None:
        obs = self.obs
        move = retrain_shadow.follow(last, obs.spec.on_drift.shadow, obs.target, obs.now)
        if move.outcome == retrain_shadow.WAIT:
            self.acts.requeue_after = move.requeue_after
        elif move.outcome == retrain_shadow.PASSED:
            assert last.shadow is not None
            self._event("Normal", "ShadowTrialPassed", f"{last.model_uri}: {last.shadow.message}")
            self._promote(last, tried=True)
        else:
            self._trial_over(last, move, patch=obs.target is not None)

    def _trial_over(self, last: RetrainRecord, move: retrain_shadow.Move, patch: bool) -> None:
        """Rejected, cancelled or failed: the champion stays, the note (if any) goes."""
        trial = last.shadow
        assert trial is not None
        if move.outcome == retrain_shadow.REJECTED:
            result, kind, reason = REJECTED, "Warning", REJECTED
            keeps = f"; {trial.champion_uri} keeps serving" if trial.champion_uri else ""
            words = f"{last.model_uri} rejected by the shadow trial: {trial.message}{keeps}"
        else:
            result = EVALUATION_FAILED if move.failed else SUCCEEDED
            kind, reason = "Warning", str(trial.reason)
            words = f"{last.model_uri}: {trial.message}; not promoted"
        self._event(kind, reason, words)
        self._conclude(last, result)
        if patch:
            self.acts.promote = Promote(
                self.obs.spec.model_deployment,
                shadow_trial.end_patch(),
                retrain_verdict.promotion_refused,
            )
