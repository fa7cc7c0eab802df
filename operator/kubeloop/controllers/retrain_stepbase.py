"""What every part of the retrain step shares (controllers/retrain_step.py and the
shadow trial's controllers/retrain_shadow_step.py): the record, what is observed, the
actions asked for, and the two ways a move is told (an Event, the final result)."""

from __future__ import annotations

from dataclasses import dataclass

from kubeloop.api.driftmonitor import DriftMonitorStatus, RetrainRecord
from kubeloop.controllers.common import rfc3339
from kubeloop.controllers.retrain_actions import MAX_RETRAINS_KEPT, Actions, Observed

MAX_WHY = 400  # characters of a failure's words kept on the record


@dataclass
class StepBase:
    status: DriftMonitorStatus
    obs: Observed
    acts: Actions

    def _promote(self, last: RetrainRecord, tried: bool = False) -> None:
        """Point the deployment at the retrained model (`tried`: its shadow trial passed)."""
        raise NotImplementedError

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.acts.events.append((kind, reason, message))

    def _conclude(self, last: RetrainRecord, result: str, why: str | None = None) -> None:
        """The retrain's final result, and its entry in the history (newest first);
        `why` a failure's words, kept on the record (the Event that told it expires)."""
        last.result = result
        if why:
            last.message = why if len(why) <= MAX_WHY else why[: MAX_WHY - 1] + "…"
        last.finish_time = rfc3339(self.obs.now)
        kept = [r for r in self.status.retrains if r.training_job != last.training_job]
        self.status.retrains = [last.model_copy(deep=True), *kept][:MAX_RETRAINS_KEPT]
