"""``kubeloop profile`` and ``kubeloop drift``: the offline side of drift detection.

Exit codes: 0 when the command ran (drift or not, the output says which), 1 for drift
with ``--fail-on-drift`` (for CI gates), 2 for unusable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kubeloop.drift import stats
from kubeloop.drift.profile import (
    MAX_CATEGORIES,
    Profile,
    build_profile,
    counts_for,
    load_profile,
    read_table,
    save_profile,
)
from kubeloop.drift.report import DriftReport, compare, compare_raw

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_INVALID = 2


def add_commands(subparsers: Any) -> None:
    """Register ``profile`` and ``drift`` on the main parser's subparsers."""
    profile = subparsers.add_parser(
        "profile",
        help="build a reference profile from a data file",
        description="Bin every column of a CSV or Parquet file into a reference profile "
        "(JSON): quantile bins for numeric columns, the most frequent values for "
        "categorical ones. The model server exports live histograms on these bins.",
    )
    profile.add_argument("data", type=Path, help="CSV (with a header row) or Parquet file")
    profile.add_argument("--output", "-o", type=Path, required=True, help="profile to write")
    profile.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model directory: also store its predictions on DATA (prediction drift) and, "
        "with --label, the calibration of its confidence (estimated accuracy); DATA "
        "should be rows the model did not train on",
    )
    profile.add_argument(
        "--label", metavar="COL", help="the label column of DATA (left out of the features)"
    )
    _binning_arguments(profile)
    profile.set_defaults(func=run_profile)

    drift = subparsers.add_parser(
        "drift",
        help="compare current data with a reference profile or data file",
        description="Score every feature of CURRENT against REFERENCE (a profile .json "
        "or a data file) and print per-feature scores and the verdict.",
    )
    drift.add_argument("reference", type=Path, help="profile .json, or CSV/Parquet data")
    drift.add_argument("current", type=Path, help="CSV or Parquet data to check")
    drift.add_argument("--json", action="store_true", help="print the report as JSON")
    drift.add_argument(
        "--method", choices=stats.METHODS, default="psi", help="statistic (default: psi)"
    )
    drift.add_argument(
        "--threshold",
        type=float,
        help="drift when score >= threshold (p < threshold for ks and chi2); "
        "default: the method's own (psi 0.2, ks 0.05, chi2 0.05, wasserstein 0.1, "
        "jensenshannon 0.1)",
    )
    drift.add_argument(
        "--correction",
        choices=stats.CORRECTIONS,
        default="bh",
        help="for p-value methods (ks, chi2) over several features: bh (default) adjusts "
        "the p-values by Benjamini-Hochberg and a feature drifts when its adjusted p-value "
        "is below the threshold (false discovery rate held at the threshold); none tests "
        "each feature alone",
    )
    drift.add_argument(
        "--drift-share",
        type=float,
        default=0.0,
        help="share of drifted features from which the data set counts as drifted "
        "(default 0: any feature)",
    )
    drift.add_argument(
        "--exact",
        action="store_true",
        help="ks and wasserstein on raw samples instead of the profile's bins "
        "(needs a data file as REFERENCE)",
    )
    drift.add_argument(
        "--fail-on-drift", action="store_true", help=f"exit {EXIT_DRIFT} when drift is found"
    )
    _binning_arguments(drift, "when REFERENCE is a data file")
    drift.set_defaults(func=run_drift)


def _binning_arguments(parser: argparse.ArgumentParser, when: str = "") -> None:
    suffix = f" ({when})" if when else ""
    parser.add_argument(
        "--bins", type=int, default=10, help=f"quantile bins per numeric column{suffix}"
    )
    parser.add_argument(
        "--categorical",
        nargs="+",
        action="extend",
        default=[],
        metavar="COL",
        help=f"treat these columns as categorical even if they look numeric{suffix}",
    )
    parser.add_argument(
        "--max-categories",
        type=int,
        default=MAX_CATEGORIES,
        help=f"keep this many most frequent categories, the rest is 'other'{suffix}",
    )


def _fail(command: str, error: Exception) -> int:
    print(f"kubeloop {command}: error: {error}", file=sys.stderr)
    return EXIT_INVALID


def run_profile(args: argparse.Namespace) -> int:
    try:
        categorical = set(args.categorical)
        columns = read_table(args.data, categorical | ({args.label} if args.label else set()))
        labels = columns.pop(args.label) if args.label else None
        if args.label and labels is None:
            raise ValueError(f"{args.data} has no column {args.label!r}")
        profile = build_profile(columns, args.bins, categorical, args.max_categories)
        if args.model is not None:
            profile = _with_model(profile, args.model, columns, labels)
        save_profile(profile, args.output)
    except (OSError, ValueError, KeyError) as err:
        return _fail("profile", err)
    print(
        f"wrote {args.output}: {len(profile.features)} features from {profile.rows} rows",
        file=sys.stderr,
    )
    return EXIT_OK


def _with_model(
    profile: Profile, model_dir: Path, columns: dict[str, np.ndarray], labels: np.ndarray | None
) -> Profile:
    from kubeloop.drift.calibration import with_model
    from kubeloop.modeldir import ModelLoadError, load

    try:
        model = load(model_dir)
    except ModelLoadError as err:
        raise ValueError(str(err)) from err
    missing = [n for n in model.feature_names if n not in columns]
    if missing:
        raise ValueError(f"DATA has no column for the model's inputs {missing}")
    rows = np.column_stack([columns[n].astype(np.float64) for n in model.feature_names])
    if labels is not None and model.classes is not None:
        # Labels as the class names of the model's metadata, or as its class values.
        by_name = dict(zip(model.class_labels, model.classes.tolist(), strict=True))
        by_value = {str(c): c for c in model.classes.tolist()}
        unknown = sorted({str(v) for v in labels} - by_name.keys() - by_value.keys())
        if unknown:
            classes = model.class_labels
            raise ValueError(f"labels {unknown[:5]} are not the model's classes {classes}")
        labels = np.array([by_value.get(str(v), by_name.get(str(v))) for v in labels])
    return with_model(profile, model.estimator, rows, labels, model.class_labels)


def _is_profile(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _report(args: argparse.Namespace) -> DriftReport:
    if _is_profile(args.reference):
        if args.exact:
            raise ValueError("--exact needs the reference data, not a profile")
        profile: Profile = load_profile(args.reference)
        text = {f.name for f in profile.features if f.kind == "categorical"}
        current = read_table(args.current, text)
        counts = counts_for(profile, current)
        return compare(
            profile, counts, args.method, args.threshold, args.drift_share, args.correction
        )
    categorical = set(args.categorical)
    reference = read_table(args.reference, categorical)
    profile = build_profile(reference, args.bins, categorical, args.max_categories)
    text = {f.name for f in profile.features if f.kind == "categorical"}
    current = read_table(args.current, text)
    if args.exact:
        return compare_raw(
            profile,
            reference,
            current,
            args.method,
            args.threshold,
            args.drift_share,
            args.correction,
        )
    binned: np.ndarray = counts_for(profile, current)
    return compare(profile, binned, args.method, args.threshold, args.drift_share, args.correction)


def run_drift(args: argparse.Namespace) -> int:
    try:
        report = _report(args)
    except (OSError, ValueError) as err:
        return _fail("drift", err)
    print(report.to_json() if args.json else report.to_text())
    return EXIT_DRIFT if args.fail_on_drift and report.drifted else EXIT_OK
