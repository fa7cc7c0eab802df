"""`status.shadow`'s figures from the counters summed over the stable's pods: pure."""

from __future__ import annotations

from kubeloop.api.shadow import ShadowLabelled, ShadowStatus
from kubeloop.canary.figures import P99, quantile
from kubeloop.shadow.figures import ShadowSample
from kubeloop.shadow.stats import mcnemar_exact, paired_t

MCNEMAR, PAIRED_T = "mcnemar-exact", "paired-t"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _percent(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 3) if whole > 0 else None


def labelled(total: ShadowSample) -> ShadowLabelled | None:
    """Both models on the labelled pairs, with the paired test; None without labels."""
    n = int(total.labelled)
    if n == 0:
        return None
    if total.classifier:
        b, c = int(total.champion_only_right), int(total.shadow_only_right)
        both = total.both_right
        return ShadowLabelled(
            samples=n,
            champion_only_right=b,
            shadow_only_right=c,
            champion_accuracy=round((both + b) / n, 6),
            shadow_accuracy=round((both + c) / n, 6),
            test=MCNEMAR,
            p_value=mcnemar_exact(b, c),
        )
    difference = total.champion_abs_error - total.shadow_abs_error
    _, p = paired_t(n, difference, total.difference_squared)
    return ShadowLabelled(
        samples=n,
        champion_mae=round(total.champion_abs_error / n, 6),
        shadow_mae=round(total.shadow_abs_error / n, 6),
        test=PAIRED_T if p is not None else None,
        p_value=p,
    )


def figures(total: ShadowSample, pods: int) -> ShadowStatus:
    """The comparison's fields of `status.shadow` (the rest is the planner's)."""
    compared = int(total.compared)
    status = ShadowStatus(
        pods=pods,
        mirrored=int(total.mirrored),
        dropped=int(total.dropped),
        samples=compared,
        champion_error_percent=_percent(total.champion.errors, total.champion.requests),
        shadow_error_percent=_percent(total.errors, total.mirrored),
        champion_latency_p99_ms=_ms(quantile(P99, total.champion.buckets)),
        shadow_latency_p99_ms=_ms(quantile(P99, total.buckets)),
        labelled=labelled(total),
    )
    if compared and total.classifier:
        status.agreement = round(total.agreed / compared, 6)
    elif compared:
        status.mean_abs_difference = round(total.abs_difference / compared, 6)
    return status


def summary(status: ShadowStatus) -> str:
    """One line for `kubectl get mdep`."""
    if status.agreement is not None:
        line = f"agree {100 * status.agreement:.1f}% n={status.samples}"
    elif status.mean_abs_difference is not None:
        line = f"|diff| {status.mean_abs_difference:.4g} n={status.samples}"
    else:
        return status.state or ""
    if status.labelled is not None and status.labelled.p_value is not None:
        line += f" p={status.labelled.p_value:.3g}"
    return line
