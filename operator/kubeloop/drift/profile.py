"""The reference profile: per-feature bins and counts, the contract shared by the
training script (which writes it), the model server (which exports live histograms on
the same bins) and the DriftMonitor (which compares the two).

Numeric feature with cut points ``edges = [e0, e1, ..., ek]`` (strictly ascending,
finite) has ``k + 2`` bins, matching Prometheus ``le`` buckets::

    (-inf, e0], (e0, e1], ..., (e(k-1), ek], (ek, +inf)

Categorical feature with ``categories = [c0, ..., ck]`` has ``k + 2`` bins: one per
category and a last one for any value not in the list ("other").
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import itertools
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

PROFILE_VERSION = 1
OTHER_CATEGORY = "__other__"


class FeatureProfile(BaseModel):
    name: str = Field(description="Feature name, as in the model's input columns.")
    kind: Literal["numeric", "categorical"]
    edges: list[float] = Field(default_factory=list, description="Numeric cut points.")
    categories: list[str] = Field(default_factory=list, description="Known categories.")
    counts: list[int] = Field(description="Reference count per bin.")

    @model_validator(mode="after")
    def _check_shape(self) -> FeatureProfile:
        if self.kind == "numeric":
            if any(not math.isfinite(e) for e in self.edges):
                raise ValueError(f"feature {self.name!r}: edges must be finite")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError(f"feature {self.name!r}: edges must be strictly ascending")
            expected = len(self.edges) + 1
        else:
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories must be unique")
            expected = len(self.categories) + 1
        if len(self.counts) != expected:
            raise ValueError(
                f"feature {self.name!r}: {len(self.counts)} counts for {expected} bins"
            )
        if any(c < 0 for c in self.counts):
            raise ValueError(f"feature {self.name!r}: counts must be non-negative")
        return self

    @property
    def bins(self) -> int:
        return len(self.counts)

    def bin_labels(self) -> list[str]:
        """Prometheus-style label per bin: the upper edge for numeric, the category."""
        if self.kind == "numeric":
            return [repr(float(e)) for e in self.edges] + ["+Inf"]
        return [*self.categories, OTHER_CATEGORY]

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (NaN numeric values get index -1: not counted)."""
        if self.kind == "numeric":
            x = np.asarray(values, dtype=float)
            idx = np.searchsorted(np.asarray(self.edges, dtype=float), x, side="left")
            return np.where(np.isnan(x), -1, idx)
        # Look each distinct value up once: a million rows hold a handful of categories.
        distinct, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
        lookup = {c: i for i, c in enumerate(self.categories)}
        other = len(self.categories)
        index = np.array([lookup.get(str(d), other) for d in distinct], dtype=np.int64)
        return index[inverse.ravel()]

    def positions(self) -> list[float]:
        """Where each bin's mass sits for the binned Wasserstein distance.

        Inner bins at their midpoints; the outer bins at their finite edge, which is
        exact for a reference from :func:`build_profile` (its minimum *is* the lowest
        edge, its maximum the highest) and a lower bound for values beyond it.
        Categorical bins have no order; they get their index, only so that arrays stay
        rectangular.
        """
        if self.kind == "categorical" or not self.edges:
            return [float(i) for i in range(self.bins)]
        e = self.edges
        return [e[0], *((a + b) / 2 for a, b in itertools.pairwise(e)), e[-1]]


class Calibration(BaseModel):
    """How often the classifier was right at each confidence, on the reference: an
    isotonic (non-decreasing, piecewise linear) map from the top class probability to
    the probability that the answer is correct (:mod:`kubeloop.drift.calibration`)."""

    confidence: list[float] = Field(description="Top-probability knots, ascending.")
    correct: list[float] = Field(description="P(correct) at each knot, non-decreasing.")
    rows: int = Field(ge=1, description="Labelled reference rows it was fitted on.")
    accuracy: float = Field(ge=0, le=1, description="Accuracy on those rows.")

    @model_validator(mode="after")
    def _check_knots(self) -> Calibration:
        x, y = self.confidence, self.correct
        if not x or len(x) != len(y):
            raise ValueError("calibration: confidence and correct need equal, non-zero lengths")
        if any(b < a for seq in (x, y) for a, b in itertools.pairwise(seq)):
            raise ValueError("calibration: knots must be non-decreasing")
        if any(not 0 <= v <= 1 for v in (*x, *y)):
            raise ValueError("calibration: knots must lie in [0, 1]")
        return self

    def expected(self, top: np.ndarray) -> np.ndarray:
        """P(correct) of answers given with top-class probability ``top``."""
        return np.interp(top, self.confidence, self.correct)


class Profile(BaseModel):
    version: int = PROFILE_VERSION
    rows: int = Field(ge=0, description="Rows the reference was built from.")
    features: list[FeatureProfile]
    predictions: FeatureProfile | None = Field(
        default=None,
        description="The model's outputs on the reference: per class (categorical), or "
        "the predicted value on quantile bins (numeric) for a regressor.",
    )
    calibration: Calibration | None = None

    def feature(self, name: str) -> FeatureProfile:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def reference_counts(self) -> np.ndarray:
        """Counts as a (features, bins) array, shorter features padded with empty bins
        (which every statistic in ``kubeloop.drift.stats`` ignores)."""
        out = np.zeros((len(self.features), self.max_bins), dtype=np.float64)
        for row, f in enumerate(self.features):
            out[row, : f.bins] = f.counts
        return out

    def positions(self) -> np.ndarray:
        """FeatureProfile.positions as an array shaped like reference_counts(); padding
        repeats a row's last position so that it adds no distance."""
        out = np.zeros((len(self.features), self.max_bins), dtype=np.float64)
        for row, f in enumerate(self.features):
            pos = f.positions()
            out[row, : f.bins] = pos
            out[row, f.bins :] = pos[-1]
        return out

    @property
    def max_bins(self) -> int:
        return max((f.bins for f in self.features), default=1)

    def select(self, names: list[str]) -> Profile:
        """The profile restricted to some features (a monitor's ``features``), in order."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ValueError(f"the profile has no features {unknown}; it has {self.names}")
        chosen = [self.feature(n) for n in names]
        return self.model_copy(update={"features": chosen})


def bins_hash(profile: Profile) -> str:
    """Identifies a profile's bins (names, kinds, edges, categories; not its counts):
    counts on the same bins can be compared, and a new model brings new ones."""
    text = json.dumps([[f.name, f.kind, f.edges, f.categories] for f in profile.features])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_profile(path: str | Path) -> Profile:
    return Profile.model_validate_json(Path(path).read_text())


def save_profile(profile: Profile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile.model_dump(exclude_none=True), indent=1) + "\n")


# Above this many edges one binary search per value beats one comparison pass per edge.
_COMPARISON_EDGES = 128
_CSV_CHUNK_ROWS = 65536
MAX_CATEGORIES = 50


def _numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-bin counts on ``le`` bins; NaN is not counted, +-inf land in the outer bins."""
    x = np.asarray(values, dtype=np.float64)
    if edges.size > _COMPARISON_EDGES:
        idx = np.searchsorted(edges, x, side="left")
        idx[np.isnan(x)] = -1
        return np.bincount(idx + 1, minlength=edges.size + 2)[1:].astype(np.float64)
    # Cumulative counts, exactly what Prometheus exports, one vectorised pass per edge
    # (several times faster than searchsorted for a few dozen edges). NaN compares false
    # everywhere, so it drops out of every cumulative count.
    cumulative = [np.count_nonzero(x <= e) for e in edges]
    valid = x.size - int(np.count_nonzero(np.isnan(x)))
    return np.diff(np.array([0, *cumulative, valid], dtype=np.float64))


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Order statistics at ranks 0, n/bins, ..., n-1 of the finite values, deduplicated.

    The lowest edge is the minimum and the highest the maximum, so the two outer bins
    hold what lies beyond the reference's range: the first thing drift shows.
    Order statistics rather than interpolated quantiles: one partition finds them all,
    and every edge is a value that really occurred.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = x if np.isfinite(x).all() else x[np.isfinite(x)]
    if finite.size == 0:
        return np.empty(0)
    ranks = np.unique(np.round(np.linspace(0, finite.size - 1, bins + 1)).astype(np.int64))
    return np.unique(np.partition(finite, ranks)[ranks])


def _numeric_feature(name: str, values: np.ndarray, bins: int) -> FeatureProfile:
    edges = _quantile_edges(values, bins)
    counts = _numeric_counts(values, edges)
    if counts.sum() == 0:
        raise ValueError(f"column {name!r} has no values to profile (all missing)")
    return FeatureProfile(
        name=name, kind="numeric", edges=edges.tolist(), counts=counts.astype(int).tolist()
    )


def _categorical_feature(name: str, values: np.ndarray, max_categories: int) -> FeatureProfile:
    distinct, freq = np.unique(np.asarray(values).astype(str), return_counts=True)
    present = distinct != ""
    distinct, freq = distinct[present], freq[present]
    if freq.sum() == 0:
        raise ValueError(f"column {name!r} has no values to profile (all missing)")
    # Most frequent first; ties by name so that the same data gives the same profile.
    order = np.lexsort((distinct, -freq))
    kept = order[:max_categories]
    return FeatureProfile(
        name=name,
        kind="categorical",
        categories=[str(c) for c in distinct[kept]],
        counts=[*(int(c) for c in freq[kept]), int(freq[order[max_categories:]].sum())],
    )


def _is_numeric(values: np.ndarray) -> bool:
    return np.asarray(values).dtype.kind in "biuf"


def _workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def build_profile(
    columns: dict[str, np.ndarray],
    bins: int = 10,
    categorical: set[str] | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> Profile:
    """Reference profile of a table given as equal-length columns.

    Numeric columns get ``bins`` quantile bins between their minimum and maximum (fewer
    when values repeat) plus the two outer bins; NaN is left out of the counts (the
    shortfall against ``rows`` is the missing count) and +-inf count in the outer bins.
    Columns named in ``categorical``, and any non-numeric column, get their
    ``max_categories`` most frequent values as categories and the rest in "other"; the
    empty string means missing.
    """
    if bins < 1 or max_categories < 1:
        raise ValueError(f"bins and max_categories must be at least 1: {bins}, {max_categories}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: {sorted(lengths)}")
    if not columns:
        raise ValueError("no columns to profile")
    wanted = set(categorical or ())
    unknown = wanted - columns.keys()
    if unknown:
        raise ValueError(f"categorical columns not in the data: {sorted(unknown)}")

    def feature(item: tuple[str, np.ndarray]) -> FeatureProfile:
        name, values = item
        if name in wanted or not _is_numeric(values):
            return _categorical_feature(name, values, max_categories)
        return _numeric_feature(name, values, bins)

    # NumPy's partition and comparisons release the GIL, so columns profile in parallel.
    with ThreadPoolExecutor(_workers()) as pool:
        features = list(pool.map(feature, columns.items()))
    return Profile(rows=lengths.pop(), features=features)


def counts_for(profile: Profile, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Counts of new data on the profile's bins, shaped like ``reference_counts()``."""
    missing = [n for n in profile.names if n not in columns]
    if missing:
        raise ValueError(f"data has no column for profile features {missing}")

    def count(feature: FeatureProfile) -> np.ndarray:
        values = columns[feature.name]
        if feature.kind == "numeric":
            if not _is_numeric(values):
                raise ValueError(f"column {feature.name!r} is not numeric, the profile says so")
            return _numeric_counts(values, np.asarray(feature.edges, dtype=np.float64))
        text = np.asarray(values).astype(str)
        index = feature.assign(text[text != ""])
        return np.bincount(index, minlength=feature.bins).astype(np.float64)

    out = np.zeros((len(profile.features), profile.max_bins), dtype=np.float64)
    with ThreadPoolExecutor(_workers()) as pool:
        for row, counts in enumerate(pool.map(count, profile.features)):
            out[row, : counts.size] = counts
    return out


def read_table(path: str | Path, categorical: set[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of a CSV (with a header row) or Parquet file.

    CSV columns whose every non-empty cell parses as a float become float64 arrays
    (empty cells NaN); other columns, and those named in ``categorical``, stay strings
    (empty cells ""); names in ``categorical`` that the file lacks are ignored, the
    caller knows which columns it needs. Parquet needs pandas with pyarrow, which
    Kubeloop does not depend on.
    """
    path = Path(path)
    text_columns = set(categorical or ())
    if path.suffix.lower() in {".parquet", ".pq"}:
        return _read_parquet(path, text_columns)
    return _read_csv(path, text_columns)


def _read_parquet(path: Path, text_columns: set[str]) -> dict[str, np.ndarray]:
    try:
        pd = importlib.import_module("pandas")
    except ImportError as err:
        raise ValueError(
            f"reading {path} needs pandas and pyarrow (pip install pandas pyarrow)"
        ) from err
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise ValueError(f"reading {path} needs pyarrow (pip install pyarrow)") from err
    out: dict[str, np.ndarray] = {}
    for name in frame.columns:
        series = frame[name]
        if str(name) not in text_columns and pd.api.types.is_numeric_dtype(series.dtype):
            out[str(name)] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[str(name)] = series.astype(object).where(series.notna(), "").astype(str).to_numpy()
    return out


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise ValueError(f"{path}: empty file, expected a header row")
    names = [h.strip() for h in header]
    if len(set(names)) != len(names) or "" in names:
        raise ValueError(f"{path}: column names must be unique and non-empty")
    return names


def _read_csv(path: Path, text_columns: set[str]) -> dict[str, np.ndarray]:
    names = _csv_header(path)
    try:
        return _read_csv_fast(path, names, text_columns)
    except ValueError:
        # Empty cells or text in a column: NumPy's C parser refuses those.
        return _read_csv_general(path, names, text_columns)


def _loadtxt(path: Path, columns: list[int], dtype: type) -> np.ndarray:
    with warnings.catch_warnings():
        # A header-only file is an empty table, not something to warn about.
        warnings.simplefilter("ignore", UserWarning)
        data: np.ndarray = np.loadtxt(
            path,
            delimiter=",",
            skiprows=1,
            usecols=columns,
            dtype=dtype,
            comments=None,
            quotechar='"',
            encoding="utf-8",
            ndmin=2,
        )
    return np.ascontiguousarray(data.T)


def _read_csv_fast(path: Path, names: list[str], text_columns: set[str]) -> dict[str, np.ndarray]:
    numeric = [i for i, n in enumerate(names) if n not in text_columns]
    text = [i for i, n in enumerate(names) if n in text_columns]
    out: dict[str, np.ndarray] = {}
    if numeric:
        for i, column in zip(numeric, _loadtxt(path, numeric, np.float64), strict=True):
            out[names[i]] = column
    if text:
        for i, column in zip(text, _loadtxt(path, text, str), strict=True):
            out[names[i]] = column
    return {n: out[n] for n in names}


def _floats(cells: tuple[str, ...]) -> np.ndarray:
    return np.array([c if c.strip() else "nan" for c in cells], dtype=np.float64)


def _read_csv_general(
    path: Path, names: list[str], text_columns: set[str]
) -> dict[str, np.ndarray]:
    """Chunked stdlib reader: a column is numeric until one cell fails to parse."""
    text = {i for i, n in enumerate(names) if n in text_columns}
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        seen = 0
        while rows := list(itertools.islice(reader, _CSV_CHUNK_ROWS)):
            for number, row in enumerate(rows, start=seen + 1):
                if len(row) != len(names):
                    raise ValueError(
                        f"{path}: data row {number} has {len(row)} cells, expected {len(names)}"
                    )
            seen += len(rows)
            for i, cells in enumerate(zip(*rows, strict=True)):
                if i in text:
                    chunks[i].append(np.array(cells, dtype=str))
                    continue
                try:
                    chunks[i].append(_floats(cells))
                except ValueError:
                    text.add(i)
                    chunks[i] = []
    if text - {i for i, n in enumerate(names) if n in text_columns}:
        # Columns that turned out to be text after some numeric chunks: read them again.
        return _read_csv_general(path, names, {names[i] for i in text})
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        empty = np.empty(0, dtype=str if i in text else np.float64)
        out[name] = np.concatenate(chunks[i]) if chunks[i] else empty
    return out
