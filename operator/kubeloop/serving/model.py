"""The model directory: the one format shared by the training script, ``kubeloop
fetch-model`` and ``kubeloop serve``.

Layout of a model directory::

    model.json      metadata (:class:`ModelMetadata`): name, version, inputs, classes
    model.joblib    the fitted scikit-learn estimator
    profile.json    reference profile of the training features (optional; without it
                    the server exports no feature histograms)
    manifest.json   size and sha256 of every other file (:mod:`kubeloop.serving.fetch`)

Security: ``model.joblib`` is a pickle, and unpickling runs whatever code the file's
author put in it. Serve only model directories from a source you trust as much as the
server image itself. The manifest check proves that the files arrived whole; it does
not prove who wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kubeloop.drift.profile import Profile, load_profile

METADATA_FILE = "model.json"
MODEL_FILE = "model.joblib"
PROFILE_FILE = "profile.json"


class ModelLoadError(Exception):
    """The model directory cannot be served; the message says which file and why."""


class TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    # Training scripts may record more (metrics, hyperparameters); keep it, serve it.
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    framework: str
    inputs: list[TensorSpec] = Field(min_length=1, description="One entry per feature.")
    outputs: list[TensorSpec]
    classes: list[str] = Field(
        default_factory=list,
        description="Class names in the order of the estimator's classes_ (classifiers).",
    )
    created: str

    @model_validator(mode="after")
    def _unique_inputs(self) -> ModelMetadata:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError("input names must be unique")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


def read_metadata(model_dir: str | Path) -> ModelMetadata:
    """Read ``model.json`` alone: cheap, so a server can learn its model's name and
    answer health probes before the (possibly large) estimator is loaded."""
    path = Path(model_dir) / METADATA_FILE
    try:
        return ModelMetadata.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"{path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A servable model: metadata, reference profile and the fitted estimator."""

    metadata: ModelMetadata
    profile: Profile | None
    estimator: Any
    allow_nan: bool
    """Whether the estimator accepts NaN as "missing"; otherwise NaN input is refused."""
    classes: np.ndarray | None
    """The estimator's sorted ``classes_`` for classifiers, None for regressors."""
    class_labels: list[str]
    """Metric label per entry of ``classes``: the metadata's names, else the value."""

    @property
    def feature_names(self) -> list[str]:
        return self.metadata.feature_names

    @property
    def has_proba(self) -> bool:
        return hasattr(self.estimator, "predict_proba")

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(rows))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(rows), dtype=np.float64)


def load_model(model_dir: str | Path, metadata: ModelMetadata | None = None) -> LoadedModel:
    """Load a model directory. Unpickles ``model.joblib``: trusted sources only."""
    import joblib  # the serve extra; imported here so that metadata reads need none
    from sklearn.utils import get_tags

    model_dir = Path(model_dir)
    metadata = metadata or read_metadata(model_dir)
    model_path = model_dir / MODEL_FILE
    try:
        estimator = joblib.load(model_path)
    except OSError as exc:
        raise ModelLoadError(f"{model_path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # a pickle can fail in any way: wrong versions, bad bytes
        raise ModelLoadError(f"{model_path}: cannot unpickle: {exc!r}") from exc
    if not hasattr(estimator, "predict"):
        raise ModelLoadError(f"{model_path}: {type(estimator).__name__} has no predict()")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and n_features != len(metadata.inputs):
        raise ModelLoadError(
            f"{model_path}: estimator takes {n_features} features, "
            f"{METADATA_FILE} lists {len(metadata.inputs)} inputs"
        )

    classes = getattr(estimator, "classes_", None)
    class_labels: list[str] = []
    if classes is not None:
        classes = np.asarray(classes)
        if metadata.classes and len(metadata.classes) != len(classes):
            raise ModelLoadError(
                f"{METADATA_FILE} names {len(metadata.classes)} classes, "
                f"the estimator has {len(classes)}"
            )
        class_labels = list(metadata.classes) or [str(c) for c in classes]

    profile_path = model_dir / PROFILE_FILE
    try:
        profile = load_profile(profile_path) if profile_path.exists() else None
    except (OSError, ValidationError) as exc:
        raise ModelLoadError(f"{profile_path}: {exc}") from exc

    return LoadedModel(
        metadata=metadata,
        profile=profile,
        estimator=estimator,
        allow_nan=bool(get_tags(estimator).input_tags.allow_nan),
        classes=classes,
        class_labels=class_labels,
    )
