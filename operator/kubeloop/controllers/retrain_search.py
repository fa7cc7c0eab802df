"""A DriftMonitor's retrain that is a search (`onDrift.retrain.experiment`): what its
Experiment's status says for the retrain (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Searched:
    """A search that ended: its best trial (the run whose model is the retrained one),
    or why there is none (`failure`)."""

    trial: str | None = None
    model_uri: str | None = None
    message: str = ""
    failure: str | None = None


def searched(experiment: str, search: dict[str, Any]) -> Searched | None:
    """None while the search runs."""
    status = search.get("status") or {}
    phase, best = status.get("phase"), status.get("bestTrial") or {}
    if phase not in ("Succeeded", "Failed"):
        return None
    if phase == "Failed" or not best.get("modelUri") or not best.get("name"):
        return Searched(
            failure=f"Experiment {experiment} ended without a best trial with a model: "
            f"{status.get('message', '')}; not promoted"
        )
    trial, uri = str(best["name"]), str(best["modelUri"])
    return Searched(
        trial,
        uri,
        f"Experiment {experiment}: best trial {trial} ({best.get('value')}), model {uri}",
    )
