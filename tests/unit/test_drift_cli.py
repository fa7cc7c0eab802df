"""The drift report, and ``kubeloop profile`` / ``kubeloop drift`` through argparse on
files on disk."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from kubeloop.drift.cli import EXIT_DRIFT, EXIT_INVALID, EXIT_OK, add_commands
from kubeloop.drift.profile import FeatureProfile, Profile, load_profile
from kubeloop.drift.report import compare
from kubeloop.drift.stats import InsufficientData

ROWS = 4000


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="kubeloop")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args([str(a) for a in argv])
    code: int = args.func(args)
    return code


def write_csv(path: Path, columns: dict[str, list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    return path


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """Reference and current files: `shifted` and `color` drift, `stable` does not."""
    rng = np.random.default_rng(3)

    def table(shift: float, colors: list[float]) -> dict[str, list[str]]:
        return {
            "stable": [f"{v:.6f}" for v in rng.normal(size=ROWS)],
            "shifted": [f"{v:.6f}" for v in rng.normal(shift, size=ROWS)],
            "color": rng.choice(np.array(["red", "green", "blue"]), ROWS, p=colors).tolist(),
            "code": rng.choice(np.array(["01", "02"]), ROWS).tolist(),
        }

    reference = write_csv(tmp_path / "reference.csv", table(0.0, [0.6, 0.3, 0.1]))
    current = write_csv(tmp_path / "current.csv", table(1.0, [0.2, 0.3, 0.5]))
    return reference, current


def test_profile_writes_a_profile(data: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    assert run("profile", data[0], "--output", out, "--bins", "5", "--categorical", "code") == 0
    profile = load_profile(out)
    assert profile.rows == ROWS
    assert profile.names == ["stable", "shifted", "color", "code"]
    kinds = [f.kind for f in profile.features]
    assert kinds == ["numeric", "numeric", "categorical", "categorical"]
    assert len(profile.feature("stable").edges) == 6
    assert profile.feature("code").categories in (["01", "02"], ["02", "01"])


def test_drift_against_a_profile(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"
    assert run("profile", data[0], "-o", out, "--categorical", "code") == EXIT_OK
    capsys.readouterr()
    assert run("drift", out, data[1], "--json") == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    verdicts = {f["name"]: f["drifted"] for f in report["features"]}
    assert verdicts == {"stable": False, "shifted": True, "color": True, "code": False}
    assert report["drifted"] is True
    assert report["method"] == "psi" and report["threshold"] == 0.2
    assert report["samples"] == ROWS


def test_drift_between_data_files_prints_a_table(
    data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("drift", data[0], data[1], "--method", "ks") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert lines[0].split() == [
        "feature",
        "kind",
        "method",
        "score",
        "p-value",
        "p-adjusted",
        "threshold",
        "drift",
    ]
    assert rows["stable"][-1] == "ok" and rows["shifted"][-1] == "DRIFT"
    # KS needs ordered bins: the categorical feature is tested with chi-square instead.
    assert rows["color"][2] == "chi2" and rows["color"][-1] == "DRIFT"
    assert lines[-1].startswith("DRIFT DETECTED: 2 of 4 features drifted (50%")


def test_exact_ks_uses_raw_samples(
    data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    scores = {}
    for extra in ((), ("--exact",)):
        assert run("drift", data[0], data[1], "--method", "ks", "--json", *extra) == EXIT_OK
        report = json.loads(capsys.readouterr().out)
        scores[extra] = {f["name"]: f["score"] for f in report["features"]}
    # Binning only evaluates the CDFs at edges: never a larger gap than the raw one.
    assert scores[()]["stable"] <= scores[("--exact",)]["stable"]
    assert scores[()]["shifted"] <= scores[("--exact",)]["shifted"]
    assert scores[()]["color"] == scores[("--exact",)]["color"]


def test_fail_on_drift_and_drift_share(data: tuple[Path, Path]) -> None:
    assert run("drift", data[0], data[1], "--fail-on-drift") == EXIT_DRIFT
    assert run("drift", data[0], data[1], "--fail-on-drift", "--drift-share", "0.9") == EXIT_OK
    assert run("drift", data[0], data[0], "--fail-on-drift") == EXIT_OK


def test_threshold_overrides_the_default(
    data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("drift", data[0], data[1], "--threshold", "100", "--json") == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["drifted"] is False
    assert {f["threshold"] for f in report["features"]} == {100.0}


def test_unusable_input_exits_2_with_a_message(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("drift", tmp_path / "missing.csv", data[1]) == EXIT_INVALID
    assert "No such file" in capsys.readouterr().err
    out = tmp_path / "profile.json"
    run("profile", data[0], "-o", out)
    assert run("drift", out, data[1], "--exact") == EXIT_INVALID
    assert "--exact needs the reference data" in capsys.readouterr().err
    other = write_csv(tmp_path / "other.csv", {"stable": ["1.0"]})
    assert run("drift", out, other) == EXIT_INVALID
    assert "no column for profile features" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('{"rows": -1, "features": []}')
    assert run("drift", tmp_path / "broken.json", data[1]) == EXIT_INVALID
    assert run("profile", data[0], "-o", tmp_path / "p3.json", "--categorical", "zz") == 2
    assert "categorical columns not in the data: ['zz']" in capsys.readouterr().err
    empty = write_csv(tmp_path / "empty.csv", {"stable": [""]})
    assert run("profile", empty, "-o", tmp_path / "p2.json") == EXIT_INVALID
    assert "has no values" in capsys.readouterr().err


def test_unknown_method_is_a_usage_error(data: tuple[Path, Path]) -> None:
    with pytest.raises(SystemExit) as caught:
        run("drift", data[0], data[1], "--method", "kl")
    assert caught.value.code == 2


# --- compare(): what the DriftMonitor calls on live counts ------------------------------

LIVE_PROFILE = Profile(
    rows=300,
    features=[
        FeatureProfile(name="n", kind="numeric", edges=[0.0, 1.0], counts=[50, 100, 50]),
        FeatureProfile(name="c", kind="categorical", categories=["a", "b"], counts=[60, 30, 10]),
    ],
)


def test_compare_scores_live_counts_per_feature() -> None:
    current = np.array([[10.0, 100, 90], [60, 30, 10]])
    report = compare(LIVE_PROFILE, current, "wasserstein")
    numeric, categorical = report.features
    assert (numeric.method, numeric.drifted) == ("wasserstein", True)
    # Categories have no order: chi-square at its default threshold, p-value reported.
    assert (categorical.method, categorical.threshold, categorical.drifted) == ("chi2", 0.05, False)
    assert categorical.p_value == pytest.approx(1.0)
    assert report.drifted and report.share == 0.5 and report.drifted_features == ["n"]
    assert report.samples == 100
    assert json.loads(report.to_json())["features"][1]["pValue"] == pytest.approx(1.0)


def test_compare_drift_share_decides_the_overall_verdict() -> None:
    current = np.array([[10.0, 100, 90], [60, 30, 10]])
    assert compare(LIVE_PROFILE, current, "psi", drift_share=0.5).drifted is True
    assert compare(LIVE_PROFILE, current, "psi", drift_share=0.75).drifted is False
    assert compare(LIVE_PROFILE, LIVE_PROFILE.reference_counts(), "psi").drifted is False
    with pytest.raises(ValueError, match="drift share"):
        compare(LIVE_PROFILE, current, "psi", drift_share=1.5)


def test_compare_names_features_without_samples() -> None:
    with pytest.raises(InsufficientData, match=r"no current observations for features \['c'\]"):
        compare(LIVE_PROFILE, np.array([[1.0, 2, 3], [0, 0, 0]]))
    empty_reference = Profile(
        rows=0, features=[FeatureProfile(name="z", kind="numeric", edges=[1.0], counts=[0, 0])]
    )
    with pytest.raises(InsufficientData, match=r"no reference observations for features \['z'\]"):
        compare(empty_reference, np.array([[1.0, 2]]))


def test_compare_rejects_counts_of_another_shape() -> None:
    with pytest.raises(ValueError, match="do not fit the profile"):
        compare(LIVE_PROFILE, np.ones((2, 4)))
    with pytest.raises(ValueError, match="unknown drift method"):
        compare(LIVE_PROFILE, LIVE_PROFILE.reference_counts(), "kl")  # type: ignore[arg-type]
