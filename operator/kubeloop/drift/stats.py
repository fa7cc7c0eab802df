"""Drift statistics over all features at once.

Binned inputs are two count arrays ``ref`` and ``cur`` of shape ``(features, bins)``:
row ``f`` holds the per-bin counts of feature ``f`` on the reference profile's bins.
Features with fewer bins are padded with trailing bins that are zero in *both* arrays;
every statistic here ignores a bin that is empty on both sides (it adds nothing to a
divergence, moves no CDF, and is left out of the chi-square degrees of freedom), so
padding never changes a result. Counts may be floats (Prometheus ``increase()`` is).

Invalid input raises ``ValueError``; a statistic never comes back as a silent NaN:

* NaN, infinite or negative counts, arrays that are not 2-D or not the same shape:
  ``ValueError``.
* A feature whose reference or current counts sum to zero has no distribution to
  compare: :class:`InsufficientData` (a ``ValueError``) naming the feature rows. The
  caller decides what "too few samples" means above zero (``minSamples``).
* A feature with a single non-empty bin (a constant feature, a single category) cannot
  drift within that bin: every distance is 0 and every p-value 1 when both sides sit in
  it; when they sit in different bins the usual formulas apply.

Raw-sample inputs (:func:`ks_raw`, :func:`wasserstein_raw`) are sequences of 1-D arrays,
one per feature, of any lengths. NaN values are dropped (count them with
``np.isnan`` before calling if the number matters); the statistics equal SciPy's on the
remaining values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

Method = Literal["psi", "ks", "wasserstein", "jensenshannon", "chi2"]
METHODS: tuple[Method, ...] = get_args(Method)

# Methods whose score is a p-value test: drift is p < threshold. For the others the
# score is a distance and drift is score >= threshold.
P_VALUE_METHODS: frozenset[Method] = frozenset({"ks", "chi2"})

# How p-values of several features are corrected for testing many at once: "bh"
# (Benjamini-Hochberg: a feature drifts when its adjusted p-value is below the
# threshold, which bounds the expected share of false alarms among the features called
# drifted, the false discovery rate, by the threshold) or "none" (each p-value against
# the threshold alone: with 20 unchanged features at 0.05, about one false alarm a check).
Correction = Literal["bh", "none"]
CORRECTIONS: tuple[Correction, ...] = get_args(Correction)

# Methods that need ordered bins: meaningless on categories.
ORDERED_METHODS: frozenset[Method] = frozenset({"ks", "wasserstein"})

DEFAULT_THRESHOLDS: dict[Method, float] = {
    # PSI >= 0.2: the credit-scoring rule of thumb for a significant shift (0.1 to 0.2
    # being "moderate"). Evidently 0.7 flags at the moderate 0.1 already.
    "psi": 0.2,
    # Tests: drift when p < 0.05, Evidently's default for KS and chi-square.
    "ks": 0.05,
    "chi2": 0.05,
    # Evidently's default for the Wasserstein distance normalised by the reference
    # standard deviation (see wasserstein()).
    "wasserstein": 0.1,
    # Evidently's default for the Jensen-Shannon distance.
    "jensenshannon": 0.1,
}

# PSI takes log(cur / ref) per bin; an empty bin on one side would make it infinite.
# A zero proportion is replaced by 1e-4, without renormalising, which caps one bin's
# contribution at (1 - 1e-4) * ln(1e4) ~ 9.2. Evidently does the same (it switches to a
# millionth of the smallest proportion when that is itself below 1e-4).
PSI_EPSILON = 1e-4

# Chi-square needs a non-zero expected count wherever something was observed. A
# reference bin that is empty while the current one is not gets half a count (the
# Haldane-Anscombe correction) before proportions are taken. A proportion floor like
# PSI's would not do: with a million current rows, a 1e-4 floor expects 100 rows in a
# bin the reference never saw and flags drift on a single stray value.
CHI2_PSEUDO_COUNT = 0.5

# Evidently divides the Wasserstein distance by the reference standard deviation and
# floors that at 0.001 so that a constant reference does not divide by zero.
WASSERSTEIN_STD_FLOOR = 1e-3

FloatArray = npt.NDArray[np.float64]


class InsufficientData(ValueError):
    """Some features have no reference or no current observations at all."""

    def __init__(self, features: Sequence[int], side: str, names: Sequence[str] = ()) -> None:
        self.features = tuple(int(f) for f in features)
        self.side = side
        what = f"features {list(names)}" if names else f"feature rows {list(self.features)}"
        super().__init__(f"no {side} observations for {what}")


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict; ``p_value`` is None for distance methods."""

    method: Method
    score: float
    p_value: float | None
    threshold: float
    drifted: bool


def check_method(method: str) -> Method:
    for known in METHODS:
        if method == known:
            return known
    raise ValueError(f"unknown drift method {method!r}; expected one of {', '.join(METHODS)}")


def _counts(ref: npt.ArrayLike, cur: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    if r.ndim != 2 or c.ndim != 2:
        raise ValueError(f"counts must be 2-D (features, bins); got shapes {r.shape} and {c.shape}")
    if r.shape != c.shape:
        raise ValueError(f"reference counts {r.shape} and current counts {c.shape} differ")
    if r.shape[1] == 0:
        raise ValueError("counts have no bins")
    for side, a in (("reference", r), ("current", c)):
        if np.isnan(a).any():
            raise ValueError(f"{side} counts contain NaN")
        if np.isinf(a).any():
            raise ValueError(f"{side} counts contain infinite values")
        if (a < 0).any():
            raise ValueError(f"{side} counts contain negative values")
    for side, a in (("reference", r), ("current", c)):
        empty = np.flatnonzero(a.sum(axis=1) == 0)
        if empty.size:
            raise InsufficientData(empty.tolist(), side)
    return r, c


def _proportions(counts: FloatArray) -> FloatArray:
    return counts / counts.sum(axis=1, keepdims=True)


def psi(ref: npt.ArrayLike, cur: npt.ArrayLike) -> FloatArray:
    """Population stability index per feature: sum((q - p) * ln(q / p))."""
    r, c = _counts(ref, cur)
    p = _proportions(r)
    q = _proportions(c)
    p = np.where(p == 0, PSI_EPSILON, p)
    q = np.where(q == 0, PSI_EPSILON, q)
    result: FloatArray = np.sum((q - p) * np.log(q / p), axis=1)
    return result


def _rel_entr(x: FloatArray, y: FloatArray) -> FloatArray:
    # x * ln(x / y) with 0 * ln(0) = 0; y > 0 wherever x > 0 in our callers.
    safe_x = np.where(x > 0, x, 1.0)
    safe_y = np.where(x > 0, y, 1.0)
    result: FloatArray = np.where(x > 0, x * np.log(safe_x / safe_y), 0.0)
    return result


def jensenshannon(ref: npt.ArrayLike, cur: npt.ArrayLike) -> FloatArray:
    """Jensen-Shannon *distance* in base 2, so it lies in [0, 1].

    Equals ``scipy.spatial.distance.jensenshannon(r, c, base=2)``. Evidently calls SciPy
    with the natural logarithm; its values are ``sqrt(ln 2) ~ 0.83`` times these.
    """
    r, c = _counts(ref, cur)
    p = _proportions(r)
    q = _proportions(c)
    m = (p + q) / 2
    divergence = np.sum(_rel_entr(p, m) + _rel_entr(q, m), axis=1) / (2 * math.log(2))
    result: FloatArray = np.sqrt(np.maximum(divergence, 0.0))
    return result


def chi2_sf(statistic: npt.ArrayLike, dof: npt.ArrayLike) -> FloatArray:
    """Survival function of the chi-square distribution for integer degrees of freedom.

    Uses the closed forms (a finite Poisson sum, plus erfc for odd dof), so no SciPy is
    needed at run time; each term is positive, so precision holds in both tails.
    ``dof == 0`` means a point mass at 0: the survival function is 0 for x > 0 and
    defined as 1 at x == 0 (nothing to test).
    """
    x = np.asarray(statistic, dtype=np.float64)
    k = np.asarray(dof, dtype=np.int64)
    x, k = np.broadcast_arrays(x, k)
    if (k < 0).any() or (x < 0).any() or np.isnan(x).any():
        raise ValueError("chi-square needs x >= 0 and dof >= 0")
    half = x / 2
    odd = (k % 2) == 1
    # Q(k/2, x/2) = erfc(sqrt(x/2)) [odd only] + exp(-x/2) * sum_j (x/2)^a_j / Gamma(a_j+1)
    # with a_j = j (even k, j < k/2) or j + 1/2 (odd k, j < (k-1)/2).
    terms = int(k.max(initial=0)) // 2
    j = np.arange(terms, dtype=np.float64)
    a = j[None, :] + np.where(odd.ravel(), 0.5, 0.0)[:, None]
    n_terms = np.where(odd, (k - 1) // 2, k // 2).ravel()
    used = j[None, :] < n_terms[:, None]
    h = half.ravel()[:, None]
    # x == 0 gives log(0) = -inf; its a == 0 term is 1 and every other term 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        power = np.where(a > 0, a * np.log(h), 0.0)
    log_terms = power - h - _lgamma(a + 1)
    poisson = np.sum(np.where(used, np.exp(log_terms), 0.0), axis=1).reshape(x.shape)
    erfc_part = np.where(odd, _erfc(np.sqrt(half)), 0.0)
    result = erfc_part + poisson
    result = np.where((k == 0) & (x == 0), 1.0, result)
    clipped: FloatArray = np.clip(result, 0.0, 1.0)
    return clipped


_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def chi2(ref: npt.ArrayLike, cur: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Pearson goodness-of-fit of the current counts to the reference proportions.

    Expected counts are the reference proportions times the current total, like
    ``scipy.stats.chisquare(cur, ref / ref.sum() * cur.sum())``, with which it agrees
    whenever every reference bin is non-empty. Bins empty on both sides are left out
    (and out of the degrees of freedom); see CHI2_PSEUDO_COUNT for reference-empty bins.
    Returns (statistic, p-value).

    The reference proportions are taken as exact, but they are a sample too: with m
    current and n reference observations the statistic runs about 1 + m/n times too
    high, so a reference no larger than the window gives false alarms. Keep the
    reference at least ten times the window, or use ks, whose p-value accounts for both
    sizes.
    """
    r, c = _counts(ref, cur)
    used = (r > 0) | (c > 0)
    r = np.where((r == 0) & (c > 0), CHI2_PSEUDO_COUNT, r)
    expected = _proportions(r) * c.sum(axis=1, keepdims=True)
    safe_expected = np.where(used, expected, 1.0)
    statistic: FloatArray = np.sum(np.where(used, (c - expected) ** 2 / safe_expected, 0.0), axis=1)
    dof = used.sum(axis=1) - 1
    return statistic, chi2_sf(statistic, dof)


def kolmogorov_sf(z: npt.ArrayLike) -> FloatArray:
    """Survival function of the Kolmogorov distribution (limit of sqrt(n) * D_n).

    Equals ``scipy.stats.kstwobign.sf``. Two series, each used where it converges fast.
    """
    lam = np.asarray(z, dtype=np.float64)
    k = np.arange(1, 101, dtype=np.float64)
    large = np.maximum(lam, 1.0)[..., None]
    alternating = 2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * k**2 * large**2), axis=-1)
    small = np.clip(lam, 1e-3, 1.0)[..., None]
    theta = np.sum(np.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * small**2)), axis=-1)
    cdf = math.sqrt(2 * math.pi) / small[..., 0] * theta
    result = np.where(lam >= 1.0, alternating, 1.0 - cdf)
    clipped: FloatArray = np.clip(result, 0.0, 1.0)
    return clipped


def ks_pvalue(statistic: npt.ArrayLike, n: npt.ArrayLike, m: npt.ArrayLike) -> FloatArray:
    """Asymptotic two-sided p-value of the two-sample KS statistic with sizes n and m.

    Like ``scipy.stats.ks_2samp(method='asymp')`` the one-sample distribution is
    evaluated at the effective size ``en = round(n * m / (n + m))``. SciPy evaluates it
    exactly (Simard & L'Ecuyer); we use Kolmogorov's limit at a shifted argument,
    ``Q(z + 1/(6 sqrt(en)) + (z - 1)/(4 en))`` with ``z = sqrt(en) * D`` (Vrbik 2018's
    small-sample correction), which stays within ``0.03 / en`` of SciPy's value and,
    unlike an additive correction term, keeps its relative accuracy deep in the tail.
    """
    d = np.asarray(statistic, dtype=np.float64)
    n_f = np.asarray(n, dtype=np.float64)
    m_f = np.asarray(m, dtype=np.float64)
    en = np.maximum(np.round(n_f * m_f / (n_f + m_f)), 1.0)
    z = np.sqrt(en) * d
    p = kolmogorov_sf(z + 1 / (6 * np.sqrt(en)) + (z - 1) / (4 * en))
    clipped: FloatArray = np.where(d <= 0, 1.0, p)
    return clipped


def ks(ref: npt.ArrayLike, cur: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Kolmogorov-Smirnov on ordered bins: the largest CDF gap at the bins' upper edges.

    This is the raw-sample statistic evaluated only at bin edges, so it never exceeds
    the raw one (binning can hide a gap inside a bin). Returns (statistic, p-value)
    with n, m the two totals.
    """
    r, c = _counts(ref, cur)
    gap = np.abs(np.cumsum(_proportions(r), axis=1) - np.cumsum(_proportions(c), axis=1))
    statistic: FloatArray = gap.max(axis=1)
    return statistic, ks_pvalue(statistic, r.sum(axis=1), c.sum(axis=1))


def _weighted_std(positions: FloatArray, weights: FloatArray) -> FloatArray:
    mean = np.sum(positions * weights, axis=1, keepdims=True)
    result: FloatArray = np.sqrt(np.sum(weights * (positions - mean) ** 2, axis=1))
    return result


def wasserstein(
    ref: npt.ArrayLike,
    cur: npt.ArrayLike,
    positions: npt.ArrayLike,
    normalize: bool = True,
) -> FloatArray:
    """Wasserstein-1 distance with each bin's mass placed at its position.

    ``positions`` has the counts' shape, non-decreasing along each row (padding bins
    repeat the last position). The raw distance equals
    ``scipy.stats.wasserstein_distance(pos, pos, ref, cur)``: the area between the two
    binned CDFs. With ``normalize`` it is divided by the reference's standard deviation
    on the same positions (floored at WASSERSTEIN_STD_FLOOR), as Evidently does, so the
    threshold does not depend on the feature's units.
    """
    r, c = _counts(ref, cur)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != r.shape:
        raise ValueError(f"positions {pos.shape} and counts {r.shape} differ")
    if not np.isfinite(pos).all():
        raise ValueError("bin positions must be finite")
    steps = np.diff(pos, axis=1)
    if (steps < 0).any():
        raise ValueError("bin positions must be non-decreasing along each feature")
    p = _proportions(r)
    gap = np.abs(np.cumsum(p, axis=1) - np.cumsum(_proportions(c), axis=1))
    distance: FloatArray = np.sum(gap[:, :-1] * steps, axis=1)
    if normalize:
        distance = distance / np.maximum(_weighted_std(pos, p), WASSERSTEIN_STD_FLOOR)
    return distance


def _raw_pairs(
    ref: Sequence[npt.ArrayLike], cur: Sequence[npt.ArrayLike]
) -> Iterator[tuple[FloatArray, FloatArray]]:
    """Each feature's two samples, NaN dropped and sorted, one feature at a time so that
    only one feature's sorted copies are alive (a million rows x 50 features would hold
    800 MB of them)."""
    if len(ref) != len(cur):
        raise ValueError(f"{len(ref)} reference features but {len(cur)} current features")
    for side, samples in (("reference", ref), ("current", cur)):
        sizes = [np.count_nonzero(~np.isnan(np.asarray(s, dtype=np.float64))) for s in samples]
        empty = [i for i, size in enumerate(sizes) if size == 0]
        if empty:
            raise InsufficientData(empty, side)
    for r, c in zip(ref, cur, strict=True):
        u = np.asarray(r, dtype=np.float64).ravel()
        v = np.asarray(c, dtype=np.float64).ravel()
        yield np.sort(u[~np.isnan(u)]), np.sort(v[~np.isnan(v)])


def _ks_statistic(u: FloatArray, v: FloatArray) -> float:
    # Both CDFs at every observed value; side='right' counts ties on the value itself.
    points = np.concatenate([u, v])
    gap = np.abs(
        np.searchsorted(u, points, side="right") / u.size
        - np.searchsorted(v, points, side="right") / v.size
    )
    return float(gap.max())


def ks_raw(
    ref: Sequence[npt.ArrayLike], cur: Sequence[npt.ArrayLike]
) -> tuple[FloatArray, FloatArray]:
    """Two-sample KS on raw samples per feature: (statistic, asymptotic p-value).

    The statistic equals ``scipy.stats.ks_2samp``'s exactly; the p-value is
    :func:`ks_pvalue`'s. Infinite values are ordinary (extreme) sample values here.
    """
    rows = [(_ks_statistic(u, v), u.size, v.size) for u, v in _raw_pairs(ref, cur)]
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return table[:, 0], ks_pvalue(table[:, 0], table[:, 1], table[:, 2])


def _wasserstein_pair(u: FloatArray, v: FloatArray) -> float:
    points = np.concatenate([u, v])
    points.sort(kind="mergesort")
    deltas = np.diff(points)
    gap = np.abs(
        np.searchsorted(u, points[:-1], side="right") / u.size
        - np.searchsorted(v, points[:-1], side="right") / v.size
    )
    return float(np.sum(gap * deltas))


def wasserstein_raw(
    ref: Sequence[npt.ArrayLike], cur: Sequence[npt.ArrayLike], normalize: bool = True
) -> FloatArray:
    """Wasserstein-1 distance on raw samples per feature.

    Equals ``scipy.stats.wasserstein_distance`` (divided, with ``normalize``, by the
    reference's population standard deviation floored at WASSERSTEIN_STD_FLOOR, like
    Evidently). Infinite values make the distance unbounded: ``ValueError``.
    """
    rows = []
    for i, (u, v) in enumerate(_raw_pairs(ref, cur)):
        if np.isinf(u[[0, -1]]).any() or np.isinf(v[[0, -1]]).any():
            raise ValueError(f"feature row {i}: infinite values have no Wasserstein distance")
        rows.append((_wasserstein_pair(u, v), u.std()))
    table = np.array(rows, dtype=np.float64).reshape(-1, 2)
    if normalize:
        return table[:, 0] / np.maximum(table[:, 1], WASSERSTEIN_STD_FLOOR)
    distance: FloatArray = table[:, 0]
    return distance


def verdicts(
    method: Method,
    score: FloatArray,
    p_value: FloatArray | None,
    threshold: float | None = None,
) -> list[FeatureDrift]:
    """Per-feature verdicts from scores: p < threshold for tests, score >= threshold else."""
    limit = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if not math.isfinite(limit) or limit < 0:
        raise ValueError(f"threshold must be a finite non-negative number, got {threshold}")
    if p_value is not None:
        return [
            FeatureDrift(method, float(s), float(p), limit, bool(p < limit))
            for s, p in zip(score, p_value, strict=True)
        ]
    return [FeatureDrift(method, float(s), None, limit, bool(s >= limit)) for s in score]


def binned_drift(
    ref: npt.ArrayLike,
    cur: npt.ArrayLike,
    method: Method,
    threshold: float | None = None,
    positions: npt.ArrayLike | None = None,
) -> list[FeatureDrift]:
    """Score every feature's bins with one method and judge it against the threshold.

    ``positions`` is needed by ``wasserstein`` only (see :func:`wasserstein`); ``ks``
    and ``wasserstein`` assume the bins are ordered.
    """
    if method == "psi":
        return verdicts(method, psi(ref, cur), None, threshold)
    if method == "jensenshannon":
        return verdicts(method, jensenshannon(ref, cur), None, threshold)
    if method == "chi2":
        return verdicts(method, *chi2(ref, cur), threshold)
    if method == "ks":
        return verdicts(method, *ks(ref, cur), threshold)
    if positions is None:
        raise ValueError("the wasserstein method needs bin positions")
    return verdicts(method, wasserstein(ref, cur, positions), None, threshold)


def benjamini_hochberg(p_values: Iterable[float]) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values: feature ``i`` drifts at false discovery
    rate ``q`` when its adjusted p-value is below ``q``. Equals SciPy's
    ``false_discovery_control(p, method="bh")``."""
    p = np.asarray(list(p_values), dtype=np.float64)
    if p.ndim != 1 or (p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1)):
        raise ValueError("p-values must be a flat list of numbers in [0, 1]")
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    # The running minimum from the largest p-value down keeps adjusted values monotone.
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out: FloatArray = np.empty(m)
    out[order] = adjusted
    return out
