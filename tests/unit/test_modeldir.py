"""kubeloop.modeldir: a directory written by its Writer loads back the same model; a file
changed after the write is refused; the manifest is written last, so a directory whose
write did not finish (or is still going on) is never loadable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from kubeloop import modeldir
from kubeloop.drift.profile import build_profile
from kubeloop.modeldir import (
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FILE,
    PROFILE_FILE,
    ModelLoadError,
    ModelMetadata,
    TensorSpec,
)
from kubeloop.serving.fetch import FetchError, fetch_model

FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def fitted() -> LogisticRegression:
    iris = load_iris()
    return LogisticRegression(max_iter=500).fit(iris.data, iris.target)


def metadata(version: str) -> ModelMetadata:
    return ModelMetadata(
        name="iris",
        version=version,
        framework="scikit-learn",
        inputs=[TensorSpec(name=f, datatype="FP64", shape=[-1]) for f in FEATURES],
        outputs=[TensorSpec(name="predict", datatype="INT64", shape=[-1])],
        classes=["setosa", "versicolor", "virginica"],
        created="2024-01-01T00:00:00+00:00",
        metrics={"accuracy": 0.97},
    )


def write(root: Path, estimator: LogisticRegression) -> modeldir.Manifest:
    data = load_iris().data
    with modeldir.Writer(root) as out:
        digest = out.estimator(estimator)
        out.profile(build_profile({f: data[:, i] for i, f in enumerate(FEATURES)}, bins=5))
        out.metadata(metadata(digest[:12]))
    assert out.manifest is not None
    return out.manifest


def test_round_trip(tmp_path: Path, fitted: LogisticRegression) -> None:
    manifest = write(tmp_path / "m", fitted)
    assert {e.path for e in manifest.files} == {MODEL_FILE, METADATA_FILE, PROFILE_FILE}
    assert modeldir.verify(tmp_path / "m") == manifest
    loaded = modeldir.load(tmp_path / "m")
    rows = load_iris().data[:20]
    assert loaded.predict(rows).tolist() == fitted.predict(rows).tolist()
    np.testing.assert_allclose(loaded.predict_proba(rows), fitted.predict_proba(rows))
    assert loaded.metadata == metadata(loaded.metadata.version)
    assert loaded.metadata.model_extra == {"metrics": {"accuracy": 0.97}}
    assert loaded.metadata.version == modeldir.sha256_file(tmp_path / "m" / MODEL_FILE)[:12]
    assert loaded.profile is not None and loaded.profile.names == FEATURES
    assert loaded.class_labels == ["setosa", "versicolor", "virginica"]
    # What fetch-model (the serving pod's init container) takes, file for file.
    fetched = fetch_model(str(tmp_path / "m"), tmp_path / "fetched")
    assert fetched == manifest.files
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: p.write_bytes(p.read_bytes().replace(b"iris", b"sirs")), "does not match"),
        (lambda p: p.write_bytes(p.read_bytes() + b" "), "bytes, manifest.json says"),
        (lambda p: p.unlink(), "listed in manifest.json but missing"),
    ],
    ids=["same-size", "grown", "removed"],
)
def test_a_file_changed_after_the_write_is_refused(
    tmp_path: Path, fitted: LogisticRegression, change: object, words: str
) -> None:
    write(tmp_path, fitted)
    change(tmp_path / METADATA_FILE)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=words):
        modeldir.verify(tmp_path)
    with pytest.raises(ModelLoadError, match=words):
        modeldir.load(tmp_path)


def test_a_manifest_that_lists_outside_the_directory_is_refused(
    tmp_path: Path, fitted: LogisticRegression
) -> None:
    write(tmp_path / "m", fitted)
    manifest = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    manifest["files"][0]["path"] = "../elsewhere"
    (tmp_path / "m" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="invalid manifest"):
        modeldir.load(tmp_path / "m")


class Unpicklable(LogisticRegression):
    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("cannot pickle this one")


def test_a_write_that_fails_leaves_a_directory_no_reader_takes(
    tmp_path: Path, fitted: LogisticRegression
) -> None:
    """The first model written whole; a second written over it fails half-way: the
    directory then has the new files beside the old, and no manifest, so neither
    loading nor fetching it takes a mix of two models."""
    root = tmp_path / "m"
    write(root, fitted)
    with pytest.raises(RuntimeError, match="half-way"), modeldir.Writer(root) as out:
        out.metadata(metadata("second"))
        raise RuntimeError("the trainer died half-way")
    assert not (root / MANIFEST_FILE).exists()
    with pytest.raises(ModelLoadError, match=r"no manifest\.json: the directory is incomplete"):
        modeldir.load(root)
    with pytest.raises(FetchError, match=r"manifest\.json"):
        fetch_model(str(root), tmp_path / "fetched")
    # A file that cannot be written whole leaves no trace of itself either.
    with pytest.raises(RuntimeError, match="cannot pickle"), modeldir.Writer(root) as out:
        out.estimator(Unpicklable())
    assert {p.name for p in root.iterdir()} == {METADATA_FILE, MODEL_FILE, PROFILE_FILE}
    with pytest.raises(ModelLoadError, match="incomplete"):
        modeldir.load(root)


def test_while_a_write_goes_on_the_directory_is_not_loadable(
    tmp_path: Path, fitted: LogisticRegression
) -> None:
    root = tmp_path / "m"
    write(root, fitted)
    data = load_iris().data
    with modeldir.Writer(root) as out:
        for step in ("estimator", "profile", "metadata"):
            with pytest.raises(ModelLoadError, match="incomplete"):
                modeldir.load(root)
            if step == "estimator":
                out.estimator(fitted)
            elif step == "profile":
                out.profile(build_profile({f: data[:, i] for i, f in enumerate(FEATURES)}))
            else:
                out.metadata(metadata("third"))
        with pytest.raises(ModelLoadError, match="incomplete"):
            modeldir.load(root)
    assert modeldir.load(root).metadata.version == "third"


def test_verify_may_let_a_directory_without_a_manifest_pass(
    tmp_path: Path, fitted: LogisticRegression
) -> None:
    """What `kubeloop evaluate` does with a model directory made by hand
    (docs/evaluation.md); its manifest, when it has one, must still match."""
    write(tmp_path, fitted)
    (tmp_path / MANIFEST_FILE).unlink()
    assert modeldir.verify(tmp_path, required=False) is None
    assert modeldir.load_model(tmp_path).metadata.name == "iris"
