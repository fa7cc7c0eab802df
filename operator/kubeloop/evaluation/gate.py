"""The gate: given two scores, may the challenger replace the champion?

Pure: no models, no files. The rules, in order:

1. A NaN score (challenger's, or the champion's) never passes: ``NotBetter``.
2. With a floor, the challenger must reach it: ``challenger >= floor`` for a metric
   where higher is better, ``challenger <= floor`` (a ceiling) where lower is; else
   ``BelowFloor``.
3. Without a champion (the first model), that is all: ``NoChampion``, passed.
4. With one, the improvement (``challenger - champion``, or ``champion - challenger``
   where lower is better: positive is better either way) must be at least
   ``min_improvement``: ``Improved``, else ``NotBetter``. 0 means "at least as good";
   a negative value tolerates a regression that small.

Comparisons forgive floating-point noise (a relative 1e-9): 0.3 - 0.2 improves by the
0.1 asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubeloop import conditions
from kubeloop.evaluation import EvaluationError
from kubeloop.evaluation.metrics import direction

# The reasons are also those of the DriftMonitor's RetrainAccepted condition.
IMPROVED = conditions.IMPROVED
NO_CHAMPION = conditions.NO_CHAMPION
NOT_BETTER = conditions.NOT_BETTER
BELOW_FLOOR = conditions.BELOW_FLOOR
REL_TOLERANCE = 1e-9
ABS_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Verdict:
    """The gate's decision; ``reason`` is one CamelCase word for a condition reason."""

    passed: bool
    reason: str
    message: str
    improvement: float | None
    """Signed so that positive is better whatever the direction; None without a
    champion (or with a NaN score)."""


def decide(
    metric: str,
    champion: float | None,
    challenger: float,
    min_improvement: float = 0.0,
    floor: float | None = None,
) -> Verdict:
    """Decide whether ``challenger`` passes; see the module's rules."""
    if not math.isfinite(min_improvement):
        raise EvaluationError(f"min improvement must be a finite number, not {min_improvement}")
    if floor is not None and not math.isfinite(floor):
        raise EvaluationError(f"the floor must be a finite number, not {floor}")
    higher = direction(metric) == "higher"
    scores = f"challenger {metric} {_num(challenger)}"
    improvement = None
    if champion is not None:
        scores += f", champion {_num(champion)} ({'higher' if higher else 'lower'} is better)"
        if not (math.isnan(challenger) or math.isnan(champion)):
            improvement = challenger - champion if higher else champion - challenger

    if math.isnan(challenger) or (champion is not None and math.isnan(champion)):
        return Verdict(False, NOT_BETTER, f"{scores}: a NaN score never passes", None)
    if floor is not None and not _at_least(challenger - floor if higher else floor - challenger, 0):
        relation = "at least" if higher else "at most"
        message = f"{scores}: the challenger must score {relation} the floor {_num(floor)}"
        return Verdict(False, BELOW_FLOOR, message, improvement)
    if champion is None or improvement is None:
        within = "" if floor is None else f", within the floor {_num(floor)}"
        return Verdict(True, NO_CHAMPION, f"{scores}: no champion to beat{within}", None)
    summary = (
        f"{scores}: improvement {_num(improvement, signed=True)}, "
        f"required {_num(min_improvement, signed=True)}"
    )
    if _at_least(improvement, min_improvement):
        return Verdict(True, IMPROVED, summary, improvement)
    return Verdict(False, NOT_BETTER, summary, improvement)


def _at_least(value: float, threshold: float) -> bool:
    """``value >= threshold``, forgiving floating-point noise; False for NaN."""
    return value >= threshold or math.isclose(
        value, threshold, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE
    )


def _num(value: float, signed: bool = False) -> str:
    """A score for a message: enough digits to tell close scores apart."""
    return f"{value:+.6g}" if signed else f"{value:.6g}"
