"""The example training script, run as a TrainingJob would run it, writes a model
directory that the fetcher and the server accept."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from kubeloop.drift.profile import load_profile
from kubeloop.modeldir import load_model, read_metadata
from kubeloop.progress import parse_final
from kubeloop.serving.fetch import fetch_model

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train" / "train.py"
sys.path.insert(0, str(TRAIN.parent))
from make_data import write_iris_csv  # noqa: E402  (an example script, not a package)

FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


def train(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HP_", "KUBELOOP_"))}
    environ["KUBELOOP_PROGRESS_PORT"] = "0"  # no progress server: tests run side by side
    environ.update(env)
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "operator"), os.environ.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, str(TRAIN), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    result = train("--output", str(out), "--n-estimators", "20", "--seed", "3")
    assert result.returncode == 0, result.stderr
    return out


def test_writes_a_complete_model_directory(trained: Path) -> None:
    manifest = json.loads((trained / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {"model.joblib", "model.json", "profile.json"}
    for name, entry in listed.items():
        data = (trained / name).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_metadata_describes_the_model(trained: Path) -> None:
    metadata = read_metadata(trained)
    assert metadata.name == "iris"
    assert metadata.framework == "scikit-learn"
    assert metadata.feature_names == FEATURES
    assert {spec.datatype for spec in metadata.inputs} == {"FP64"}
    assert metadata.classes == ["setosa", "versicolor", "virginica"]
    model_sha = hashlib.sha256((trained / "model.joblib").read_bytes()).hexdigest()
    assert metadata.version == model_sha[:12]
    extra = metadata.model_extra or {}
    assert extra["hyperparameters"]["n_estimators"] == 20
    assert extra["hyperparameters"]["seed"] == 3
    assert extra["metrics"]["accuracy"] > 0.85
    assert extra["label_column"] == "species"


def test_profile_covers_the_training_features(trained: Path) -> None:
    profile = load_profile(trained / "profile.json")
    training_rows = read_metadata(trained).model_extra["training_rows"]  # type: ignore[index]
    assert profile.names == FEATURES
    assert profile.rows == training_rows == 112
    for feature in profile.features:
        assert feature.kind == "numeric"
        assert sum(feature.counts) == training_rows
        assert len(feature.edges) >= 2


def test_model_predicts_iris(trained: Path) -> None:
    model = load_model(trained)
    iris = load_iris()
    assert model.estimator.n_estimators == 20
    accuracy = float(np.mean(model.predict(iris.data) == iris.target))
    assert accuracy > 0.9


def test_fetch_model_accepts_the_output(trained: Path, tmp_path: Path) -> None:
    entries = fetch_model(trained.as_uri(), tmp_path / "fetched")
    assert {e.path for e in entries} == {"model.joblib", "model.json", "profile.json"}
    assert read_metadata(tmp_path / "fetched") == read_metadata(trained)


def test_reads_hyperparameters_and_output_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    result = train(
        HP_N_ESTIMATORS="7", HP_SHIFT="2", HP_NAME="drifted", KUBELOOP_OUTPUT_URI=out.as_uri()
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(out)
    model = load_model(out)
    assert model.metadata.name == "drifted"
    assert model.estimator.n_estimators == 7
    # Shifted by two standard deviations: the lowest petal length (1.0 cm, sd 1.76)
    # moves above 4 cm, so the profile's first edge does too.
    assert model.profile is not None
    assert model.profile.feature("petal_length_cm").edges[0] > 4.0


def test_logistic_regression_for_the_benchmark(tmp_path: Path) -> None:
    result = train("--output", str(tmp_path), "--estimator", "logistic-regression")
    assert result.returncode == 0, result.stderr
    model = load_model(tmp_path)
    assert type(model.estimator).__name__ == "LogisticRegression"
    assert "n_estimators" not in model.metadata.model_extra["hyperparameters"]  # type: ignore[index]


def test_refuses_remote_outputs(tmp_path: Path) -> None:
    result = train(KUBELOOP_OUTPUT_URI="s3://bucket/models/iris")
    assert result.returncode != 0
    assert "give a file:// URI or a path" in result.stderr


def test_trains_on_the_dataset_it_is_given(tmp_path: Path) -> None:
    """KUBELOOP_DATASET_URI, as a TrainingJob passes `spec.dataset.uri`: the profile is the
    given data's, not the bundled iris."""
    write_iris_csv(tmp_path / "shifted.csv", shift=3.0)
    done = train(
        KUBELOOP_DATASET_URI=f"file://{tmp_path}/shifted.csv",
        KUBELOOP_OUTPUT_URI=str(tmp_path / "model"),
    )
    assert done.returncode == 0, done.stderr
    profile = load_profile(tmp_path / "model" / "profile.json")
    iris_min = load_iris().data.min(axis=0)
    first = {f.name: f for f in profile.features}["sepal_length_cm"]
    assert first.edges[0] > iris_min[0] + 2.0  # shifted by 3 std (≈2.5 cm)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n")
    refused = train("--data", str(bad), "--output", str(tmp_path / "m2"))
    assert refused.returncode != 0 and "species" in refused.stderr


@pytest.mark.parametrize(
    ("args", "steps"),
    [(("--n-estimators", "6"), 6), (("--estimator", "logistic-regression"), 1)],
)
def test_termination_log_holds_the_final_accuracy(
    tmp_path: Path, args: tuple[str, ...], steps: int
) -> None:
    """What the TrainingJob's status shows at the end: the pod's termination message."""
    log = tmp_path / "termination-log"
    done = train("--output", str(tmp_path / "model"), *args, KUBELOOP_TERMINATION_LOG=str(log))
    assert done.returncode == 0, done.stderr
    final = parse_final(log.read_text())
    assert final is not None
    assert (final.step, final.total_steps) == (steps, steps)
    accuracy = json.loads(done.stdout)["accuracy"]
    assert final.metrics == {"accuracy": accuracy}
    assert read_metadata(tmp_path / "model").model_extra["metrics"] == {"accuracy": accuracy}  # type: ignore[index]


def _example_training_jobs() -> list[tuple[str, dict]]:
    """Every TrainingJob spec in examples/ that runs this script (DriftMonitor retrain
    templates included)."""
    import yaml

    found = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            spec = doc["spec"]
            if doc["kind"] == "DriftMonitor":
                spec = spec["onDrift"]["retrain"]["template"]
            elif doc["kind"] != "TrainingJob":
                continue
            if any(part.endswith("train/train.py") for part in spec.get("command", [])):
                found.append((f"{path.name}:{doc['metadata']['name']}", spec))
    return found


@pytest.mark.parametrize(
    "spec", [s for _, s in _example_training_jobs()], ids=[n for n, _ in _example_training_jobs()]
)
def test_the_examples_run_with_the_arguments_and_variables_a_trainingjob_passes(
    tmp_path: Path, spec: dict
) -> None:
    """The worker's arguments and HP_ variables exactly as the operator renders them for
    the example (hyperparameters as arguments, the default): the script accepts them
    and trains with them (docs/hyperparameters.md)."""
    from kubeloop.api.trainingjob import TrainingJobSpec
    from kubeloop.render.trainingjob import worker_args, worker_env

    parsed = TrainingJobSpec.model_validate(spec)
    env = {
        e["name"]: e["value"]
        for e in worker_env(parsed, "example", "default", 0)
        if e["name"].startswith("HP_")
    }
    result = train(*worker_args(parsed), KUBELOOP_OUTPUT_URI=tmp_path.as_uri(), **env)
    assert result.returncode == 0, result.stderr
    recorded = read_metadata(tmp_path).model_extra["hyperparameters"]  # type: ignore[index]
    for name, value in parsed.hyperparameters.items():
        assert str(recorded[name]) == value, name


def test_hyperparameters_as_arguments_by_default_reach_the_script(tmp_path: Path) -> None:
    """The default (`passHyperparametersAsArgs` unset) with this script's names as a user
    writes them: `--n_estimators=7 --seed=3`, the variables HP_* set to other values to
    show which wins (the arguments)."""
    from kubeloop.api.trainingjob import TrainingJobSpec
    from kubeloop.render.trainingjob import worker_args

    spec = TrainingJobSpec.model_validate(
        {"image": "i", "hyperparameters": {"n_estimators": "7", "seed": "3"}}
    )
    args = worker_args(spec)
    assert args == ["--n_estimators=7", "--seed=3"]
    result = train(*args, KUBELOOP_OUTPUT_URI=tmp_path.as_uri(), HP_N_ESTIMATORS="9")
    assert result.returncode == 0, result.stderr
    assert load_model(tmp_path).estimator.n_estimators == 7
