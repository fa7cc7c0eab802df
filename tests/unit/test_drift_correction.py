"""Many features, many tests: p-value methods (ks, chi2) control the false discovery rate
across features by Benjamini-Hochberg by default, in the report (`kubeloop drift`) and in
a DriftMonitor's verdict; `correction: none` judges each feature alone."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import false_discovery_control

from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from kubeloop.controllers.driftverdict import Scrape, judge
from kubeloop.drift.cli import EXIT_DRIFT, EXIT_OK, add_commands
from kubeloop.drift.profile import FeatureProfile, Profile, save_profile
from kubeloop.drift.report import compare
from kubeloop.drift.stats import benjamini_hochberg


def test_benjamini_hochberg_by_hand() -> None:
    # m = 4, sorted p: 0.01*4/1=0.04, 0.02*4/2=0.04, 0.03*4/3=0.04, 0.5*4/4=0.5
    np.testing.assert_allclose(benjamini_hochberg([0.5, 0.03, 0.01, 0.02]), [0.5, 0.04, 0.04, 0.04])
    # A later smaller ratio pulls earlier ones down: 0.04*2/1=0.08 > 0.045*2/2=0.045.
    np.testing.assert_allclose(benjamini_hochberg([0.04, 0.045]), [0.045, 0.045])
    assert benjamini_hochberg([]).size == 0
    with pytest.raises(ValueError):
        benjamini_hochberg([0.1, 1.5])


def test_benjamini_hochberg_equals_scipy_reference_values() -> None:
    # SciPy's documented example (Benjamini & Hochberg's 15 p-values).
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240,
         0.4262, 0.5719, 0.6528, 0.7590, 1.000]  # fmt: skip
    np.testing.assert_allclose(
        benjamini_hochberg(p), false_discovery_control(p, method="bh"), rtol=1e-12
    )
    assert int((benjamini_hochberg(p) < 0.05).sum()) == 4  # not the 9 raw p < 0.05


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60))
def test_benjamini_hochberg_equals_scipy(p_values: list[float]) -> None:
    np.testing.assert_allclose(
        benjamini_hochberg(p_values), false_discovery_control(p_values, method="bh"), rtol=1e-12
    )


# Five categorical features; "z" moved a little: raw p 0.011, below 0.05 alone, but
# adjusted across five tests 0.057: a drift uncorrected, none with the FDR controlled.
FIVE = Profile(
    rows=1000,
    features=[
        FeatureProfile(name=n, kind="categorical", categories=["a", "b"], counts=[500, 500, 0])
        for n in "vwxyz"
    ],
)
SLIGHT = np.array([[500.0, 500, 0]] * 4 + [[540, 460, 0]])
STRONG = np.array([[500.0, 500, 0]] * 4 + [[560, 440, 0]])


def test_a_single_slight_shift_drifts_uncorrected_and_not_corrected() -> None:
    corrected = compare(FIVE, SLIGHT, "chi2")
    alone = compare(FIVE, SLIGHT, "chi2", correction="none")
    assert (corrected.correction, alone.correction) == ("bh", "none")
    assert alone.drifted_features == ["z"]
    assert not corrected.drifted
    p = [f.p_value for f in corrected.features]
    assert p == [f.p_value for f in alone.features] and 0.01 < p[-1] < 0.05  # type: ignore
    adjusted = [f.adjusted_p_value for f in corrected.features]
    np.testing.assert_allclose(adjusted, false_discovery_control(p, method="bh"), rtol=1e-12)
    assert adjusted[-1] == pytest.approx(5 * p[-1])  # type: ignore[operator]
    assert all(f.adjusted_p_value is None for f in alone.features)
    # A shift strong enough drifts either way.
    assert compare(FIVE, STRONG, "chi2").drifted_features == ["z"]


def test_ks_and_its_chi2_stand_in_for_categories_are_one_family() -> None:
    profile = Profile(
        rows=300,
        features=[
            FeatureProfile(name="n", kind="numeric", edges=[0.0, 1.0], counts=[50, 100, 50]),
            FeatureProfile(name="c", kind="categorical", categories=["a"], counts=[150, 150]),
        ],
    )
    report = compare(profile, np.array([[40.0, 100, 60], [160, 140, 0]]), "ks")
    assert [f.method for f in report.features] == ["ks", "chi2"]
    p = [f.p_value for f in report.features]
    expected = false_discovery_control(p, method="bh")
    np.testing.assert_allclose([f.adjusted_p_value for f in report.features], expected)


def test_distances_have_nothing_to_correct() -> None:
    report = compare(FIVE, SLIGHT, "psi")
    assert report.correction == "none"
    assert all(f.adjusted_p_value is None for f in report.features)
    with pytest.raises(ValueError, match="unknown correction"):
        compare(FIVE, SLIGHT, "chi2", correction="bonferroni")  # type: ignore[arg-type]


def test_the_report_says_which_correction_it_applied() -> None:
    document = json.loads(compare(FIVE, SLIGHT, "chi2").to_json())
    assert document["correction"] == "bh"
    assert document["features"][-1]["adjustedPValue"] == pytest.approx(0.0571, abs=1e-3)
    text = compare(FIVE, SLIGHT, "chi2").to_text()
    assert "p-adjusted" in text.splitlines()[0]
    assert "p-values adjusted across 5 tests (Benjamini-Hochberg" in text
    assert "p-adjusted" not in compare(FIVE, SLIGHT, "chi2", correction="none").to_text()


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="kubeloop")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args([str(a) for a in argv])
    code: int = args.func(args)
    return code


def test_the_drift_command_corrects_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_profile(FIVE, tmp_path / "profile.json")
    columns = {n: ["a"] * 500 + ["b"] * 500 for n in "vwxy"}
    columns["z"] = ["a"] * 540 + ["b"] * 460
    lines = [",".join(columns), *(",".join(r) for r in zip(*columns.values(), strict=True))]
    (tmp_path / "current.csv").write_text("\n".join(lines) + "\n")
    argv = ("drift", tmp_path / "profile.json", tmp_path / "current.csv", "--method", "chi2")
    assert run(*argv, "--fail-on-drift") == EXIT_OK
    assert "no drift" in capsys.readouterr().out
    assert run(*argv, "--fail-on-drift", "--correction", "none") == EXIT_DRIFT
    assert "DRIFT DETECTED: 1 of 5 features drifted" in capsys.readouterr().out
    assert run(*argv, "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["correction"] == "bh"


def judged(correction: str | None, counts: np.ndarray) -> DriftMonitorStatus:
    spec = {"modelDeployment": "m", "method": "chi2", "minSamples": 100}
    if correction is not None:
        spec["correction"] = correction
    status = DriftMonitorStatus()
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    judge(
        DriftMonitorSpec.model_validate(spec),
        status,
        FIVE,
        Scrape(counts=counts, cumulative=False),
        now,
        [],
    )
    return status


def test_a_drift_monitor_corrects_by_default_and_says_so() -> None:
    default = judged(None, SLIGHT)
    assert (default.drifted, default.correction, default.phase) == (False, "bh", "Healthy")
    z = default.features[-1]
    assert z.p_value is not None and z.adjusted_p_value == pytest.approx(5 * z.p_value, abs=1e-5)
    assert "p-values Benjamini-Hochberg adjusted across 5 features" in (default.message or "")
    opted_out = judged("none", SLIGHT)
    assert (opted_out.drifted, opted_out.correction) == (True, "none")
    assert [f.name for f in opted_out.features if f.drifted] == ["z"]
    assert opted_out.features[-1].adjusted_p_value is None
    strong = judged(None, STRONG)
    assert strong.drifted and "drift in 1 of 5 features (z)" in (strong.message or "")
