#!/usr/bin/env python3
"""Train the demo model and write a Kubeloop model directory.

A classifier on scikit-learn's bundled iris data (no download, so it runs anywhere:
a laptop, CI, or a TrainingJob pod), or on a CSV of the same columns (``--data``, or
``KUBELOOP_DATASET_URI`` the way a TrainingJob passes its dataset). Writes into the
output directory:

    model.joblib    the fitted estimator
    profile.json    reference profile of the training features, and of the model's
                    predictions and confidence on the held-out split (for DriftMonitor)
    model.json      metadata the server reads: name, version, inputs, classes, metrics
    manifest.json   size and sha256 of each file (what ``kubeloop fetch-model`` checks)

Settings come from flags or from the environment, both the way a TrainingJob passes
hyperparameters (docs/hyperparameters.md): hyperparameter ``n_estimators: "50"`` arrives
as ``--n_estimators=50`` and as ``HP_N_ESTIMATORS=50``, so every flag is accepted with
``_`` as well as ``-`` (``--n-estimators``); the output directory comes from
``KUBELOOP_OUTPUT_URI`` (a ``file://`` URI or a path). Flags win over the environment.

Progress goes to Kubeloop through ``kubeloop.train`` (docs/training-progress.md): once
fitted, the held-out accuracy of each boosting stage as one step each, and the final
accuracy as the pod's termination message at the end.

``--shift F`` moves every feature by F of its standard deviations before training:
a stand-in for "the world changed", so that the demo can retrain on drifted data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import kubeloop.train
from kubeloop import modeldir
from kubeloop.drift.calibration import with_model
from kubeloop.drift.profile import build_profile
from kubeloop.modeldir import ModelMetadata, TensorSpec

ESTIMATORS = ("gradient-boosting", "logistic-regression")


def snake_case(name: str) -> str:
    """'sepal length (cm)' -> 'sepal_length_cm': names usable as v2 tensor names."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def hyperparameter(name: str, default: str) -> str:
    return os.environ.get(f"HP_{name}", default)


def local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if parts.scheme == "":
        return Path(uri)
    raise SystemExit(
        f"train.py: cannot open {uri!r}: give a file:// URI or a path "
        "(a mounted volume, or pvc:// in a TrainingJob)"
    )


def load_dataset(uri: str | None) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(feature names, rows, class indices, class names): scikit-learn's iris, or a CSV
    whose header names the features and whose last column, `species`, the class."""
    iris = load_iris()
    classes = [str(name) for name in iris.target_names]
    if not uri:
        features = [snake_case(name) for name in iris.feature_names]
        return features, np.asarray(iris.data, dtype=np.float64), iris.target, classes
    path = local_path(uri)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    if len(header) < 2 or header[-1] != "species":
        raise SystemExit(f"train.py: {path}: the last column must be 'species'")
    try:
        data = np.asarray([[float(v) for v in row[:-1]] for row in rows], dtype=np.float64)
        target = np.asarray([classes.index(row[-1]) for row in rows])
    except ValueError as err:
        raise SystemExit(f"train.py: {path}: {err}") from err
    return [snake_case(name) for name in header[:-1]], data, target, classes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        default=os.environ.get("KUBELOOP_OUTPUT_URI"),
        required="KUBELOOP_OUTPUT_URI" not in os.environ,
        help="model directory to write (env KUBELOOP_OUTPUT_URI)",
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("KUBELOOP_DATASET_URI"),
        help="training data: a CSV (features..., species) as a file:// URI or a path "
        "(env KUBELOOP_DATASET_URI; default: scikit-learn's bundled iris)",
    )
    parser.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=hyperparameter("ESTIMATOR", ESTIMATORS[0]),
        help="gradient-boosting (default) or logistic-regression, the cheapest to "
        "predict, which the serving benchmark uses to measure the server, not the model "
        "(env HP_ESTIMATOR)",
    )
    parser.add_argument(
        "--n-estimators",
        "--n_estimators",
        type=int,
        default=int(hyperparameter("N_ESTIMATORS", "100")),
        help="boosting stages, gradient-boosting only (env HP_N_ESTIMATORS; default 100)",
    )
    parser.add_argument(
        "--learning-rate",
        "--learning_rate",
        type=float,
        default=float(hyperparameter("LEARNING_RATE", "0.1")),
        help="gradient-boosting only (env HP_LEARNING_RATE; default 0.1)",
    )
    parser.add_argument(
        "--max-depth",
        "--max_depth",
        type=int,
        default=int(hyperparameter("MAX_DEPTH", "3")),
        help="depth of each tree, gradient-boosting only (env HP_MAX_DEPTH; default 3)",
    )
    parser.add_argument(
        "--step-seconds",
        "--step_seconds",
        type=float,
        default=float(hyperparameter("STEP_SECONDS", "0")),
        help="a pause after each reported step, so that a run on this small data lasts "
        "long enough for early stopping to judge it live (env HP_STEP_SECONDS; default 0)",
    )
    parser.add_argument(
        "--seed", type=int, default=int(hyperparameter("SEED", "0")), help="env HP_SEED"
    )
    parser.add_argument(
        "--shift",
        type=float,
        default=float(hyperparameter("SHIFT", "0")),
        help="shift every feature by this many standard deviations (env HP_SHIFT)",
    )
    parser.add_argument("--name", default=hyperparameter("NAME", "iris"), help="model name")
    parser.add_argument(
        "--version", help="model version (default: the start of model.joblib's sha256)"
    )
    return parser.parse_args(argv)


def make_estimator(args: argparse.Namespace) -> Any:
    if args.estimator == "logistic-regression":
        return LogisticRegression(max_iter=1000, random_state=args.seed)
    return GradientBoostingClassifier(
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        max_depth=args.max_depth,
        random_state=args.seed,
    )


def fit(
    estimator: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    step_seconds: float = 0.0,
) -> tuple[Any, float]:
    """Fit, reporting progress and held-out accuracy to Kubeloop as it goes
    (docs/training-progress.md); returns the model and its final held-out accuracy.
    Gradient boosting grows in about 100 steps (warm start), each scored on the held-out
    split; a model fitted in one go is one step."""
    if isinstance(estimator, GradientBoostingClassifier):
        total = estimator.n_estimators
        chunk = max(1, total // 100)
        estimator.set_params(warm_start=True)
        stages, accuracy = 0, 0.0
        while stages < total:
            stages = min(total, stages + chunk)
            estimator.set_params(n_estimators=stages).fit(x_train, y_train)
            accuracy = float(estimator.score(x_test, y_test))
            kubeloop.train.report(step=stages, total_steps=total, metrics={"accuracy": accuracy})
            if step_seconds and stages < total:
                time.sleep(step_seconds)
        return estimator, accuracy
    estimator.fit(x_train, y_train)
    accuracy = float(estimator.score(x_test, y_test))
    kubeloop.train.report(step=1, total_steps=1, metrics={"accuracy": accuracy})
    return estimator, accuracy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.n_estimators < 1:
        raise SystemExit("train.py: --n-estimators must be at least 1")
    output = local_path(args.output)

    features, data, target, class_names = load_dataset(args.data)
    data = data + args.shift * data.std(axis=0)
    x_train, x_test, y_train, y_test = train_test_split(
        data, target, test_size=0.25, random_state=args.seed, stratify=target
    )
    estimator, accuracy = fit(
        make_estimator(args), x_train, y_train, x_test, y_test, args.step_seconds
    )

    classes = [class_names[c] for c in estimator.classes_]
    # The model directory's own writer (kubeloop.modeldir): each file whole or not at
    # all, and the manifest, which marks the directory complete, last.
    with modeldir.Writer(output) as out:
        model_sha256 = out.estimator(estimator)
        # The inputs on the training rows; the model's predictions and its confidence
        # calibration on the held-out ones, which it did not learn from.
        profile = build_profile({name: x_train[:, i] for i, name in enumerate(features)}, bins=10)
        out.profile(with_model(profile, estimator, x_test, y_test, classes))
        metadata = ModelMetadata(
            name=args.name,
            version=args.version or model_sha256[:12],
            framework="scikit-learn",
            inputs=[TensorSpec(name=name, datatype="FP64", shape=[-1]) for name in features],
            outputs=[
                TensorSpec(name="predict", datatype="INT64", shape=[-1]),
                TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, len(classes)]),
            ],
            classes=classes,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            estimator=type(estimator).__name__,
            hyperparameters={
                "estimator": args.estimator,
                "seed": args.seed,
                "shift": args.shift,
                **(
                    {
                        "n_estimators": args.n_estimators,
                        "learning_rate": args.learning_rate,
                        "max_depth": args.max_depth,
                    }
                    if args.estimator == ESTIMATORS[0]
                    else {}
                ),
            },
            metrics={"accuracy": accuracy},
            training_rows=len(x_train),
            label_column="species",  # the class column of a CSV dataset (`kubeloop evaluate`)
        )
        out.metadata(metadata)
    # The result, as the TrainingJob's status shows it (the pod's termination message).
    kubeloop.train.finish({"accuracy": accuracy})

    json.dump(
        {"output": str(output), "version": metadata.version, "accuracy": accuracy},
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
