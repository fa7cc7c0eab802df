"""The drift statistics against SciPy and hand-computed values, and every edge case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon as scipy_js

from kubeloop.drift import stats

RNG_SEED = 20240611


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def random_counts(rng: np.random.Generator, features: int, bins: int) -> np.ndarray:
    return rng.integers(1, 500, size=(features, bins)).astype(float)


# --- PSI -------------------------------------------------------------------------------


def test_psi_matches_hand_computation() -> None:
    ref = [[50, 30, 20]]
    cur = [[30, 30, 40]]
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0.0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert stats.psi(ref, cur)[0] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.24079456, abs=1e-8)


def test_psi_replaces_empty_proportions_with_epsilon() -> None:
    ref = [[100, 0]]
    cur = [[50, 50]]
    eps = stats.PSI_EPSILON
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - eps) * math.log(0.5 / eps)
    assert stats.psi(ref, cur)[0] == pytest.approx(expected, abs=1e-12)


def test_psi_is_zero_for_equal_proportions_and_scale_free() -> None:
    ref = np.array([[1.0, 2, 3, 0], [5, 5, 0, 0]])
    assert np.array_equal(stats.psi(ref, ref * 7), [0.0, 0.0])


# --- Jensen-Shannon -----------------------------------------------------------------


def test_jensenshannon_matches_scipy_base2(rng: np.random.Generator) -> None:
    ref = random_counts(rng, 20, 12)
    cur = random_counts(rng, 20, 12)
    ref[::3, 2] = 0  # empty bins on one side
    cur[1::4, 5] = 0
    got = stats.jensenshannon(ref, cur)
    want = [scipy_js(r, c, base=2) for r, c in zip(ref, cur, strict=True)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_jensenshannon_is_one_for_disjoint_supports() -> None:
    assert stats.jensenshannon([[10, 0]], [[0, 3]])[0] == pytest.approx(1.0, abs=1e-12)


# --- chi-square -----------------------------------------------------------------------


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 10, 49, 50, 101])
def test_chi2_sf_matches_scipy(dof: int) -> None:
    x = np.array([0.0, 1e-6, 0.01, 0.5, 1, 3.84, 10, 50, 100, 400, 1500])
    got = stats.chi2_sf(x, dof)
    want = sps.chi2.sf(x, dof)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


def test_chi2_sf_with_zero_dof_is_a_point_mass() -> None:
    assert stats.chi2_sf([0.0, 2.0], 0).tolist() == [1.0, 0.0]


def test_chi2_matches_scipy_chisquare(rng: np.random.Generator) -> None:
    ref = random_counts(rng, 30, 9)
    cur = ref * rng.uniform(0.8, 1.2, size=ref.shape)
    statistic, p_value = stats.chi2(ref, cur)
    for i in range(ref.shape[0]):
        expected = ref[i] / ref[i].sum() * cur[i].sum()
        want = sps.chisquare(cur[i], expected)
        assert statistic[i] == pytest.approx(want.statistic, rel=1e-9)
        assert p_value[i] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)


def test_chi2_leaves_bins_empty_on_both_sides_out() -> None:
    ref = np.array([[40.0, 0, 35, 25, 0]])
    cur = np.array([[30.0, 0, 45, 25, 0]])
    statistic, p_value = stats.chi2(ref, cur)
    kept = [0, 2, 3]
    want = sps.chisquare(cur[0, kept], ref[0, kept] / 100 * 100)
    assert statistic[0] == pytest.approx(want.statistic, rel=1e-12)
    assert p_value[0] == pytest.approx(want.pvalue, rel=1e-9)


def test_chi2_gives_reference_empty_bins_half_a_count() -> None:
    ref = np.array([[10.0, 0]])
    cur = np.array([[5.0, 5]])
    statistic, p_value = stats.chi2(ref, cur)
    smoothed = np.array([10.0, stats.CHI2_PSEUDO_COUNT])
    want = sps.chisquare(cur[0], smoothed / smoothed.sum() * 10)
    assert statistic[0] == pytest.approx(want.statistic, rel=1e-12)
    assert p_value[0] == pytest.approx(want.pvalue, rel=1e-9)


def test_chi2_tolerates_a_stray_value_outside_the_reference_range() -> None:
    # One value in the (empty) top bin among a million must not read as drift.
    ref = np.array([[0.0, 500_000, 500_000, 0]])
    cur = np.array([[0.0, 499_700, 500_299, 1]])
    _, p_value = stats.chi2(ref, cur)
    assert p_value[0] > 0.05


# --- Kolmogorov-Smirnov ---------------------------------------------------------------


def test_kolmogorov_sf_matches_scipy_kstwobign() -> None:
    z = np.linspace(0.0, 6.0, 601)
    np.testing.assert_allclose(stats.kolmogorov_sf(z), sps.kstwobign.sf(z), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "m"), [(60, 40), (1000, 800), (20_000, 50_000), (10**6, 10**6)])
def test_ks_pvalue_close_to_scipy_asymp(n: int, m: int) -> None:
    en = round(n * m / (n + m))
    for p_target in (0.9, 0.5, 0.05, 0.01, 1e-4, 1e-12):
        d = float(sps.kstwo.isf(p_target, en))
        got = float(stats.ks_pvalue(d, n, m))
        # SciPy evaluates the exact one-sample distribution at en; the corrected limit
        # used here stays within the documented 0.03 / en of it.
        assert abs(got - p_target) < 0.03 / en, (n, m, p_target, got)


def test_ks_pvalue_keeps_relative_accuracy_in_the_tail() -> None:
    en = 500_000
    for z in (3.0, 5.0, 7.0):
        want = sps.kstwo.sf(z / math.sqrt(en), en)
        got = float(stats.ks_pvalue(z / math.sqrt(en), 2 * en, 2 * en))
        assert got == pytest.approx(want, rel=5e-3)


def test_ks_on_integer_data_equals_scipy_on_raw(rng: np.random.Generator) -> None:
    # On data that takes only the bins' values, binning loses nothing: same statistic.
    raw_ref = [rng.binomial(9, 0.5, size=3000) for _ in range(4)]
    raw_cur = [rng.binomial(9, q, size=2000) for q in (0.5, 0.52, 0.55, 0.6)]
    ref = np.array([np.bincount(r, minlength=10) for r in raw_ref], dtype=float)
    cur = np.array([np.bincount(c, minlength=10) for c in raw_cur], dtype=float)
    statistic, p_value = stats.ks(ref, cur)
    for i in range(4):
        want = sps.ks_2samp(raw_ref[i], raw_cur[i], method="asymp")
        assert statistic[i] == pytest.approx(want.statistic, abs=1e-12)
        assert p_value[i] == pytest.approx(want.pvalue, abs=0.03 / 1200)


def test_ks_raw_matches_scipy(rng: np.random.Generator) -> None:
    ref = [rng.normal(size=4000), rng.exponential(size=2500), rng.integers(0, 5, 3000)]
    cur = [rng.normal(0.05, size=3000), rng.exponential(1.1, size=5000), rng.integers(0, 5, 800)]
    statistic, p_value = stats.ks_raw(ref, cur)
    for i in range(3):
        want = sps.ks_2samp(ref[i], cur[i], method="asymp")
        assert statistic[i] == pytest.approx(want.statistic, abs=1e-12)
        en = round(len(ref[i]) * len(cur[i]) / (len(ref[i]) + len(cur[i])))
        assert p_value[i] == pytest.approx(want.pvalue, abs=0.03 / en)


def test_ks_raw_drops_nan_and_orders_infinities(rng: np.random.Generator) -> None:
    ref = rng.normal(size=1000)
    cur = rng.normal(size=900)
    ref_dirty = np.concatenate([ref, [np.nan] * 50, [np.inf, -np.inf]])
    cur_dirty = np.concatenate([cur, [np.nan] * 7, [np.inf]])
    statistic, _ = stats.ks_raw([ref_dirty], [cur_dirty])
    clean_ref = np.concatenate([ref, [np.inf, -np.inf]])
    clean_cur = np.concatenate([cur, [np.inf]])
    assert statistic[0] == pytest.approx(sps.ks_2samp(clean_ref, clean_cur).statistic, abs=1e-12)


# --- Wasserstein ----------------------------------------------------------------------


def test_wasserstein_binned_matches_scipy_with_weights(rng: np.random.Generator) -> None:
    ref = random_counts(rng, 10, 8)
    cur = random_counts(rng, 10, 8)
    cur[2, 3] = 0
    positions = np.cumsum(rng.uniform(0.1, 2.0, size=ref.shape), axis=1)
    raw = stats.wasserstein(ref, cur, positions, normalize=False)
    normed = stats.wasserstein(ref, cur, positions)
    for i in range(10):
        want = sps.wasserstein_distance(positions[i], positions[i], ref[i], cur[i])
        assert raw[i] == pytest.approx(want, abs=1e-12)
        mean = np.average(positions[i], weights=ref[i])
        std = math.sqrt(np.average((positions[i] - mean) ** 2, weights=ref[i]))
        assert normed[i] == pytest.approx(want / std, rel=1e-12)


def test_wasserstein_binned_on_integer_data_equals_raw(rng: np.random.Generator) -> None:
    raw_ref = rng.poisson(4, size=5000)
    raw_cur = rng.poisson(4.5, size=3000)
    values = np.arange(25, dtype=float)
    ref = np.bincount(raw_ref, minlength=25)[None, :25].astype(float)
    cur = np.bincount(raw_cur, minlength=25)[None, :25].astype(float)
    got = stats.wasserstein(ref, cur, values[None, :], normalize=False)[0]
    assert got == pytest.approx(sps.wasserstein_distance(raw_ref, raw_cur), abs=1e-12)


def test_wasserstein_raw_matches_scipy(rng: np.random.Generator) -> None:
    ref = [rng.normal(3, 2, size=5000), rng.gamma(2.0, size=1000)]
    cur = [rng.normal(3.4, 2, size=7000), rng.gamma(2.1, size=1500)]
    raw = stats.wasserstein_raw(ref, cur, normalize=False)
    normed = stats.wasserstein_raw(ref, cur)
    for i in range(2):
        want = sps.wasserstein_distance(ref[i], cur[i])
        assert raw[i] == pytest.approx(want, abs=1e-9)
        assert normed[i] == pytest.approx(want / np.std(ref[i]), rel=1e-12)


def test_wasserstein_raw_rejects_infinite_values() -> None:
    with pytest.raises(ValueError, match="infinite"):
        stats.wasserstein_raw([np.array([0.0, np.inf])], [np.array([1.0])])


def test_wasserstein_floors_a_constant_reference_std() -> None:
    got = stats.wasserstein([[10.0, 0]], [[0.0, 10]], [[1.0, 1.5]])
    assert got[0] == pytest.approx(0.5 / stats.WASSERSTEIN_STD_FLOOR)
    raw = stats.wasserstein_raw([np.full(10, 2.0)], [np.full(10, 2.5)])
    assert raw[0] == pytest.approx(0.5 / stats.WASSERSTEIN_STD_FLOOR)


def test_wasserstein_checks_positions() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        stats.wasserstein([[1.0, 1]], [[1.0, 1]], [[2.0, 1.0]])
    with pytest.raises(ValueError, match="finite"):
        stats.wasserstein([[1.0, 1]], [[1.0, 1]], [[0.0, np.inf]])
    with pytest.raises(ValueError, match="differ"):
        stats.wasserstein([[1.0, 1]], [[1.0, 1]], [[0.0, 1.0, 2.0]])


# --- shapes, padding and edge cases ----------------------------------------------------


BINNED = {
    "psi": lambda r, c: stats.psi(r, c),
    "jensenshannon": lambda r, c: stats.jensenshannon(r, c),
    "chi2": lambda r, c: np.stack(stats.chi2(r, c)),
    "ks": lambda r, c: np.stack(stats.ks(r, c)),
    "wasserstein": lambda r, c: stats.wasserstein(r, c, np.cumsum(np.ones_like(r), axis=-1)),
}


@pytest.mark.parametrize("name", sorted(BINNED))
def test_trailing_padding_changes_nothing(name: str, rng: np.random.Generator) -> None:
    ref = random_counts(rng, 5, 6)
    cur = random_counts(rng, 5, 6)
    padded_ref = np.hstack([ref, np.zeros((5, 4))])
    padded_cur = np.hstack([cur, np.zeros((5, 4))])
    np.testing.assert_allclose(
        BINNED[name](padded_ref, padded_cur), BINNED[name](ref, cur), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("name", sorted(BINNED))
def test_rejects_bad_counts(name: str) -> None:
    score = BINNED[name]
    good = np.array([[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
        score(np.array([[1.0, np.nan]]), good)
    with pytest.raises(ValueError, match="infinite"):
        score(good, np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="negative"):
        score(good, np.array([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="differ"):
        score(good, np.array([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="2-D"):
        score(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="no bins"):
        score(np.zeros((1, 0)), np.zeros((1, 0)))


@pytest.mark.parametrize("name", sorted(BINNED))
def test_zero_totals_raise_insufficient_data(name: str) -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    cur = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(stats.InsufficientData) as caught:
        BINNED[name](ref, cur)
    assert caught.value.side == "reference"
    assert caught.value.features == (2,)
    with pytest.raises(stats.InsufficientData) as caught:
        BINNED[name](ref[:2], cur[:2])
    assert (caught.value.side, caught.value.features) == ("current", (1,))


def test_single_bin_features_cannot_drift() -> None:
    ref = np.array([[5.0]])
    cur = np.array([[700.0]])
    assert stats.psi(ref, cur)[0] == 0.0
    assert stats.jensenshannon(ref, cur)[0] == 0.0
    assert [a[0] for a in stats.chi2(ref, cur)] == [0.0, 1.0]
    assert [a[0] for a in stats.ks(ref, cur)] == [0.0, 1.0]
    assert stats.wasserstein(ref, cur, [[3.0]])[0] == 0.0


def test_single_category_against_new_values_drifts() -> None:
    # A categorical feature with one category: bins (category, other).
    ref = np.array([[1000.0, 0.0]])
    same = np.array([[800.0, 0.0]])
    moved = np.array([[700.0, 100.0]])
    assert stats.binned_drift(ref, same, "chi2")[0].drifted is False
    assert stats.binned_drift(ref, moved, "chi2")[0].drifted is True
    assert stats.binned_drift(ref, moved, "psi")[0].drifted is True


def test_raw_inputs_need_values_after_dropping_nan() -> None:
    with pytest.raises(stats.InsufficientData) as caught:
        stats.ks_raw([np.array([1.0, 2.0])], [np.array([np.nan])])
    assert caught.value.side == "current"
    with pytest.raises(ValueError, match="2 reference features but 1"):
        stats.ks_raw([np.ones(3), np.ones(3)], [np.ones(3)])


def test_no_features_give_no_results() -> None:
    assert stats.binned_drift(np.zeros((0, 3)), np.zeros((0, 3)), "psi") == []


# --- verdicts --------------------------------------------------------------------------


def test_default_thresholds_and_directions() -> None:
    ref = np.array([[500.0, 500.0], [500.0, 500.0]])
    cur = np.array([[500.0, 500.0], [100.0, 900.0]])
    for method in stats.METHODS:
        results = stats.binned_drift(ref, cur, method, positions=[[0.0, 1.0], [0.0, 1.0]])
        assert [r.drifted for r in results] == [False, True], method
        assert results[0].threshold == stats.DEFAULT_THRESHOLDS[method]
        if method in stats.P_VALUE_METHODS:
            assert results[1].p_value is not None
            assert results[1].p_value < 0.05
        else:
            assert results[1].p_value is None
            assert results[1].score >= results[1].threshold


def test_threshold_is_inclusive_for_distances_and_strict_for_p_values() -> None:
    distance = stats.verdicts("psi", np.array([0.2, 0.19]), None, 0.2)
    assert [v.drifted for v in distance] == [True, False]
    tests = stats.verdicts("ks", np.array([0.1, 0.1]), np.array([0.05, 0.049]), 0.05)
    assert [v.drifted for v in tests] == [False, True]


def test_rejects_unknown_methods_and_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="unknown drift method 'kl'"):
        stats.check_method("kl")
    with pytest.raises(ValueError, match="threshold"):
        stats.verdicts("psi", np.array([0.1]), None, float("nan"))
    with pytest.raises(ValueError, match="positions"):
        stats.binned_drift([[1.0, 2.0]], [[1.0, 2.0]], "wasserstein")


# --- properties ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_scores_are_finite_and_bounded(data: st.DataObject) -> None:
    bins = data.draw(st.integers(2, 12))
    row = st.lists(st.integers(0, 1000), min_size=bins, max_size=bins).filter(lambda r: sum(r) > 0)
    ref = np.array([data.draw(row)], dtype=float)
    cur = np.array([data.draw(row)], dtype=float)
    positions = np.arange(bins, dtype=float)[None, :]
    psi = stats.psi(ref, cur)[0]
    js = stats.jensenshannon(ref, cur)[0]
    chi2, chi2_p = (a[0] for a in stats.chi2(ref, cur))
    ks, ks_p = (a[0] for a in stats.ks(ref, cur))
    w = stats.wasserstein(ref, cur, positions)[0]
    for value in (psi, js, chi2, chi2_p, ks, ks_p, w):
        assert math.isfinite(value)
    assert psi >= 0 and chi2 >= 0 and w >= 0
    assert 0 <= js <= 1 + 1e-12
    assert 0 <= ks <= 1 + 1e-12
    assert 0 <= chi2_p <= 1 and 0 <= ks_p <= 1
