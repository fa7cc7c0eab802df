"""Paired tests of a champion and a challenger on the same labelled requests: pure,
from the counts and sums the serving pods export, no data kept per request.

- classifiers: McNemar's exact test. Only the discordant pairs count: `b` answers the
  champion alone got right, `c` the challenger alone; under "equally good" each is
  Binomial(b + c, 1/2). The two-sided p-value is ``min(1, 2 * P[X <= min(b, c)])``,
  as ``statsmodels.stats.contingency_tables.mcnemar(exact=True)`` and
  ``scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue`` give it.
- regressors: Student's paired t-test on d = |champion error| - |challenger error|,
  from n, sum(d) and sum(d^2): ``scipy.stats.ttest_rel`` on the absolute errors.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_TINY = 1e-300


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test; 1.0 with no discordant pair."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # P[X <= k] for X ~ Binomial(n, 1/2), summed in log space (n may be large).
    log_half_n = n * math.log(0.5)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n
        for i in range(k + 1)
    ]
    top = max(terms)
    cdf = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return min(1.0, 2.0 * cdf)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (``scipy.special.betainc``)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, df: float) -> float:
    """P[|T| >= |t|] for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def paired_t(n: int, total: float, squares: float) -> tuple[float | None, float | None]:
    """(t, two-sided p) of the paired t-test on differences with count `n`, sum `total`
    and sum of squares `squares`; (None, None) below two pairs. Differences all equal:
    t is infinite (p 0) unless they are all 0 (p 1)."""
    if n < 2:
        return None, None
    mean = total / n
    variance = max(squares - n * mean * mean, 0.0) / (n - 1)
    if variance <= 1e-12 * max(1.0, mean * mean):
        if abs(mean) <= 1e-12:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    t = mean / math.sqrt(variance / n)
    return t, student_t_two_sided(t, n - 1)
