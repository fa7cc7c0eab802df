"""The model directory: the one format that training writes, ``kubeloop fetch-model``
fetches, ``kubeloop serve`` serves and ``kubeloop evaluate`` scores.

Layout::

    model.json      metadata (:class:`ModelMetadata`): name, version, inputs, classes
    model.joblib    the fitted scikit-learn estimator
    profile.json    reference profile of the training features (optional; without it
                    the server exports no feature histograms)
    manifest.json   size and sha256 of every other file: written last, so it marks a
                    complete directory

A directory is written with :class:`Writer` (each file to a temporary name, then
renamed; an old manifest removed first; the new one written only when every file is in
place), checked with :func:`verify` and loaded with :func:`load_model`.

Security: ``model.joblib`` is a pickle, and unpickling runs whatever code the file's
author put in it. Load only model directories from a source you trust as much as the
image itself. The manifest check proves that the files arrived whole; it does not prove
who wrote them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kubeloop.drift.profile import Profile, load_profile

METADATA_FILE = "model.json"
MODEL_FILE = "model.joblib"
PROFILE_FILE = "profile.json"
MANIFEST_FILE = "manifest.json"
CHUNK_BYTES = 1 << 20


class ModelLoadError(Exception):
    """The model directory cannot be read, verified or loaded; the message says which
    file and why."""


# -- model.json -------------------------------------------------------------------------


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


# -- manifest.json ----------------------------------------------------------------------


class ManifestEntry(BaseModel):
    path: str = Field(description="Relative POSIX path inside the model directory.")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _inside_directory(cls, path: str) -> str:
        # A manifest may come from the network: a path must not escape the directory or
        # overwrite the manifest that marks it complete.
        segments = path.split("/")
        if "\\" in path or "\x00" in path or any(s in ("", ".", "..") for s in segments):
            raise ValueError(f"unsafe path {path!r}: must be relative, without '..'")
        if path == MANIFEST_FILE:
            raise ValueError(f"{MANIFEST_FILE} cannot list itself")
        return path


class Manifest(BaseModel):
    version: Literal[1] = 1
    files: list[ManifestEntry]

    @model_validator(mode="after")
    def _unique_paths(self) -> Manifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("duplicate paths")
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(model_dir: str | Path) -> Manifest:
    """Manifest of every regular file under ``model_dir`` except the manifest itself
    (and the temporary files of a write in progress)."""
    root = Path(model_dir)
    files = [
        ManifestEntry(
            path=path.relative_to(root).as_posix(),
            size=path.stat().st_size,
            sha256=sha256_file(path),
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and path.relative_to(root).as_posix() != MANIFEST_FILE
        and not _is_temporary(path)
    ]
    return Manifest(files=files)


def manifest_bytes(manifest: Manifest) -> bytes:
    return (manifest.model_dump_json(indent=1) + "\n").encode()


def write_manifest(model_dir: str | Path) -> Manifest:
    """Write ``manifest.json`` for a directory whose other files are all in place."""
    manifest = build_manifest(model_dir)
    write_atomically(Path(model_dir) / MANIFEST_FILE, manifest_bytes(manifest))
    return manifest


def check_entry(root: Path, entry: ManifestEntry) -> str | None:
    """What is wrong with the file ``entry`` names under ``root``, or None if it is
    there with the listed size and sha256."""
    path = root / entry.path
    # Paths are checked lexically by ManifestEntry; this also catches symlinks.
    if not path.resolve().is_relative_to(root.resolve()):
        return f"{path}: resolves outside {root}"
    if not path.is_file():
        return f"{path}: listed in {MANIFEST_FILE} but missing"
    size = path.stat().st_size
    if size != entry.size:
        return f"{path}: {size} bytes, {MANIFEST_FILE} says {entry.size}"
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if digest != entry.sha256:
        return f"{path}: sha256 {digest} does not match {MANIFEST_FILE}'s {entry.sha256}"
    return None


def read_manifest(model_dir: str | Path) -> Manifest | None:
    """The directory's manifest, None when it has none (an incomplete directory)."""
    path = Path(model_dir) / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelLoadError(f"{path}: {exc.strerror or exc}") from exc
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: invalid manifest: {exc}") from exc


def verify(model_dir: str | Path, *, required: bool = True) -> Manifest | None:
    """Check every file the manifest lists for size and sha256. Without a manifest the
    directory is incomplete (never written whole): refused, unless ``required`` is
    False, which lets a directory made by hand pass unchecked."""
    root = Path(model_dir)
    manifest = read_manifest(root)
    if manifest is None:
        if required:
            raise ModelLoadError(
                f"{root}: no {MANIFEST_FILE}: the directory is incomplete (it is written last)"
            )
        return None
    for entry in manifest.files:
        problem = check_entry(root, entry)
        if problem is not None:
            raise ModelLoadError(problem)
    return manifest


# -- writing ----------------------------------------------------------------------------


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".part")


def temp_beside(target: Path) -> tuple[int, str]:
    """A temporary file next to `target`, readable by all like any file open() makes:
    mkstemp's 0600 would hide a model from the model server's user."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.fchmod(fd, 0o644)
    return fd, tmp


def write_atomically(target: Path, data: bytes) -> None:
    """``data`` at ``target``, whole or not at all: written beside it, then renamed."""
    fd, tmp = temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Writer:
    """Write a model directory, the manifest last::

        with Writer(output) as out:
            digest = out.estimator(fitted)    # model.joblib; returns its sha256
            out.profile(profile)
            out.metadata(metadata)
        # manifest.json now lists the three

    Entering removes an old manifest, so a directory being rewritten reads as
    incomplete until the new manifest is written on a clean exit; after an error it
    stays without one, which every reader refuses.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self.root = Path(model_dir)
        self.manifest: Manifest | None = None

    def __enter__(self) -> Writer:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MANIFEST_FILE).unlink(missing_ok=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.manifest = write_manifest(self.root)

    def estimator(self, estimator: Any) -> str:
        """Pickle the fitted estimator into model.joblib; its sha256."""
        import joblib  # the serve extra: only the writer and the loader need it

        target = self.root / MODEL_FILE
        fd, tmp = temp_beside(target)
        try:
            with os.fdopen(fd, "wb") as out:
                joblib.dump(estimator, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256_file(target)

    def profile(self, profile: Profile) -> None:
        text = json.dumps(profile.model_dump(exclude_none=True), indent=1) + "\n"
        write_atomically(self.root / PROFILE_FILE, text.encode())

    def metadata(self, metadata: ModelMetadata) -> None:
        write_atomically(
            self.root / METADATA_FILE, (metadata.model_dump_json(indent=1) + "\n").encode()
        )


# -- loading ----------------------------------------------------------------------------


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
    """Load a model directory (checked against its manifest beforehand, where that is
    needed: :func:`verify`). Unpickles ``model.joblib``: trusted sources only."""
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


def load(model_dir: str | Path) -> LoadedModel:
    """A complete model directory, verified against its manifest, loaded: what a
    reader that did not fetch the directory itself should call."""
    verify(model_dir, required=True)
    return load_model(model_dir)
