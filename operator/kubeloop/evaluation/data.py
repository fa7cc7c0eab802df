"""Labelled data for ``kubeloop evaluate``: a CSV or Parquet file whose columns hold the
model's features and the true label.

The file is read once (:func:`read_table`) and then selected for each model
(:func:`select`): the columns the model's features need, in the model's order, and the
label column. A column matches a feature by its exact name, else by the snake_case
form both share (``sepal length (cm)`` is ``sepal_length_cm``), the names the example
training script gives its features. Every problem is an :class:`EvaluationError` that
names the file and the column.
"""

from __future__ import annotations

import csv
import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np

from kubeloop.evaluation import EvaluationError

if TYPE_CHECKING:
    from kubeloop.modeldir import LoadedModel

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
LABEL_COLUMN_KEY = "label_column"
"""The key in ``model.json`` (an extra field of the metadata) naming the label column."""
SHOWN_VALUES = 5


@dataclass(frozen=True)
class Table:
    """The columns of a data file by name, in file order, one object array each:
    strings from a CSV, Arrow's Python values from Parquet (None where null)."""

    source: str
    """The file, as messages name it."""
    columns: dict[str, np.ndarray]
    rows: int
    header_lines: int
    """Lines before the first row (1 for a CSV's header), so messages can say the line."""

    def where(self, row: int) -> str:
        """Where row ``row`` (0-based) is, for a message: a CSV line or a row number."""
        if self.header_lines:
            return f"line {row + 1 + self.header_lines}"
        return f"row {row + 1}"

    def describe_columns(self) -> str:
        return ", ".join(repr(name) for name in self.columns)


@dataclass(frozen=True)
class LabelledData:
    """What a model is scored on: its features and the true labels, row by row."""

    features: np.ndarray
    """float64, rows x the model's features, in the model's feature order."""
    labels: np.ndarray
    """Class labels (str) for a classifier, float64 for a regressor."""
    feature_columns: list[str]
    """The file's column for each feature."""
    label_column: str

    @property
    def rows(self) -> int:
        return len(self.labels)


def snake_case(name: str) -> str:
    """``'sepal length (cm)'`` -> ``'sepal_length_cm'``, as the training script names."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def local_path(uri: str) -> Path:
    """The file a ``file://`` URI or a plain path names; other schemes are refused."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise EvaluationError(f"{uri}: file:// URIs must name a local path")
        return Path(url2pathname(parts.path))
    # One letter is a Windows drive, not a scheme.
    if scheme == "" or len(scheme) == 1:
        return Path(uri)
    raise EvaluationError(
        f"{uri}: unsupported scheme {scheme!r}: give a path or a file:// URI (a mounted volume)"
    )


def read_table(uri: str) -> Table:
    """Read the CSV (with a header row) or Parquet file at ``uri``."""
    path = local_path(uri)
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise EvaluationError(f"{path}: unsupported file type {suffix!r}: use .csv or .parquet")
    if not path.is_file():
        reason = "is not a file" if path.exists() else "no such file"
        raise EvaluationError(f"{path}: {reason}")
    try:
        table = _read_csv(path) if suffix in CSV_SUFFIXES else _read_parquet(path)
    except OSError as exc:
        raise EvaluationError(f"{path}: {exc.strerror or exc}") from exc
    if table.rows == 0:
        raise EvaluationError(f"{path}: no rows, only a header: nothing to evaluate on")
    return table


def _read_csv(path: Path) -> Table:
    """Every cell as a string; rows must have as many cells as the header."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            _check_header(path, header)
            rows: list[list[str]] = []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise EvaluationError(
                        f"{path}: line {reader.line_num}: {len(row)} cells, "
                        f"the header has {len(header)}"
                    )
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{path}: not a readable UTF-8 CSV file: {exc}") from exc
    cells = np.asarray(rows, dtype=object).reshape(len(rows), len(header))
    columns = {name: cells[:, i] for i, name in enumerate(header)}
    return Table(str(path), columns, len(rows), header_lines=1)


def _check_header(path: Path, header: list[str]) -> None:
    if not header:
        raise EvaluationError(f"{path}: empty file, expected a header row")
    if "" in header or len(set(header)) != len(header):
        raise EvaluationError(f"{path}: column names must be unique and non-empty: {header}")


def _read_parquet(path: Path) -> Table:
    """Every column as Python values (pyarrow: in the serve extra, so in the image, but
    not in a bare ``pip install kubeloop``)."""
    try:
        parquet: Any = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise EvaluationError(
            f"{path}: reading Parquet needs pyarrow, which is not installed "
            "(pip install pyarrow), or give the data as .csv"
        ) from exc
    try:
        arrow = parquet.read_table(path)
    except ValueError as exc:  # pyarrow's ArrowInvalid: not a Parquet file
        raise EvaluationError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = [str(name) for name in arrow.column_names]
    if len(set(names)) != len(names):
        raise EvaluationError(f"{path}: column names must be unique: {names}")
    columns = {}
    for i, name in enumerate(names):
        column = np.empty(arrow.num_rows, dtype=object)
        column[:] = arrow.column(i).to_pylist()
        columns[name] = column
    return Table(str(path), columns, arrow.num_rows, header_lines=0)


def find_column(table: Table, wanted: str) -> str | None:
    """The column called ``wanted``, else the one with the same snake_case form."""
    if wanted in table.columns:
        return wanted
    key = snake_case(wanted)
    matches = [name for name in table.columns if snake_case(name) == key]
    if len(matches) > 1:
        raise EvaluationError(
            f"{table.source}: columns {matches} all match {wanted!r} (snake_case "
            f"{key!r}): rename all but one"
        )
    return matches[0] if matches else None


def declared_label_column(model: LoadedModel) -> str | None:
    """The ``label_column`` the model's ``model.json`` names, if it names one."""
    value = (model.metadata.model_extra or {}).get(LABEL_COLUMN_KEY)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise EvaluationError(f"model.json: {LABEL_COLUMN_KEY} must be a column name: {value!r}")
    return value


def resolve_label_column(table: Table, explicit: str | None, declared: Sequence[str | None]) -> str:
    """The label column: ``explicit`` (``--label-column``), else the one the models'
    ``model.json`` name (they must agree), matched like a feature column."""
    wanted = explicit
    if not wanted:
        named = sorted({name for name in declared if name})
        if len(named) > 1:
            raise EvaluationError(
                f"the models name different label columns {named}: choose with --label-column"
            )
        if not named:
            raise EvaluationError(
                f"{table.source}: which column is the label? Give --label-column or "
                f"{LABEL_COLUMN_KEY} in model.json; the columns are {table.describe_columns()}"
            )
        wanted = named[0]
    column = find_column(table, wanted)
    if column is None:
        raise EvaluationError(
            f"{table.source}: no label column {wanted!r}; the columns are "
            f"{table.describe_columns()}"
        )
    return column


def select(table: Table, model: LoadedModel, label_column: str) -> LabelledData:
    """The model's features (in its order) and the labels, checked and converted."""
    feature_columns = []
    for feature in model.feature_names:
        column = find_column(table, feature)
        if column is None:
            raise EvaluationError(
                f"{table.source}: no column for the model's feature {feature!r} (nor one "
                f"whose snake_case form is {snake_case(feature)!r}); the columns are "
                f"{table.describe_columns()}"
            )
        feature_columns.append(column)
    features = np.column_stack(
        [_feature(table, column, model.allow_nan) for column in feature_columns]
    )
    if model.classes is not None:
        labels = _class_labels(table, label_column, model.classes, model.class_labels)
    else:
        labels = _numbers(table, label_column, "label")
        _check_finite(table, label_column, labels, "every row needs a label")
    return LabelledData(features, labels, feature_columns, label_column)


def _numbers(table: Table, column: str, what: str) -> np.ndarray:
    """A column as float64, an empty cell (or a Parquet null) as NaN; the first cell
    that is not a number is named."""
    values = table.columns[column]
    try:
        return values.astype(np.float64)  # the common case, clean numbers, at NumPy speed
    except (TypeError, ValueError):
        pass  # empty cells or text: cell by cell, below
    out = np.empty(len(values), dtype=np.float64)
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            out[row] = np.nan
            continue
        try:
            out[row] = float(value)
        except (TypeError, ValueError):
            raise EvaluationError(
                f"{table.source}: {what} column {column!r}, {table.where(row)}: "
                f"{value!r} is not a number"
            ) from None
    return out


def _feature(table: Table, column: str, allow_nan: bool) -> np.ndarray:
    """A feature column; missing values (NaN) only where the model accepts them."""
    values = _numbers(table, column, "feature")
    nan_problem = None if allow_nan else "the model does not accept missing values"
    _check_finite(table, column, values, nan_problem)
    return values


def _check_finite(table: Table, column: str, values: np.ndarray, nan_problem: str | None) -> None:
    """Name the first cell that is infinite, or NaN (missing) unless ``nan_problem`` is
    None (NaN allowed); ``nan_problem`` says why NaN is not."""
    bad = np.flatnonzero(np.isinf(values) if nan_problem is None else ~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        problem = f"missing or NaN: {nan_problem}" if np.isnan(values[row]) else "infinite"
        raise EvaluationError(
            f"{table.source}: column {column!r}, {table.where(row)}: "
            f"{table.columns[column][row]!r} is {problem}"
        )


def _class_labels(
    table: Table, column: str, classes: np.ndarray, known: Sequence[str]
) -> np.ndarray:
    """The label column as the model's class labels (strings). The column may hold
    those labels (``setosa``, the names in ``model.json``), or else the estimator's own
    class values (``classes_``: ``0``, ``1``, ``2``), which become the labels they stand
    for; not a mix of the two. Labels are tried first: a column whose every cell is a
    label is read as labels, even where those are class values too (``model.json``
    naming class 0 ``"1"``). A cell matches a class value by its text (a CSV cell is
    text, a Parquet one is turned into it), or for numeric classes by its number
    (``1.0`` and ``1`` are the class 1)."""
    labels = np.asarray(["" if v is None else str(v).strip() for v in table.columns[column]])
    is_label = np.isin(labels, np.asarray(known, dtype=str))
    if is_label.all():
        return labels
    values, inverse = np.unique(labels, return_inverse=True)
    positions = np.asarray([_class_position(str(v), classes) for v in values])[inverse]
    is_value = positions >= 0
    if is_value.all():
        return np.asarray(known, dtype=str)[positions]
    value_names = [str(c) for c in classes.tolist()]
    accepted = f"the model's classes ({', '.join(known)})"
    if value_names != list(known):
        accepted += f" nor one of the estimator's class values ({', '.join(value_names)})"
    unknown = np.flatnonzero(~is_label & ~is_value)
    if len(unknown):
        first = int(unknown[0])
        others = sorted(set(labels[unknown].tolist()))
        shown = ", ".join(repr(v) for v in others[:SHOWN_VALUES])
        more = f" and {len(others) - SHOWN_VALUES} more" if len(others) > SHOWN_VALUES else ""
        raise EvaluationError(
            f"{table.source}: label column {column!r}, {table.where(first)}: "
            f"{str(labels[first])!r} is not one of {accepted}; unknown labels: {shown}{more}"
        )
    # Every cell is one or the other, but not all the same one: which was meant is a guess.
    label_row = int(np.flatnonzero(is_label & ~is_value)[0])
    value_row = int(np.flatnonzero(is_value & ~is_label)[0])
    raise EvaluationError(
        f"{table.source}: label column {column!r} mixes the model's classes "
        f"({', '.join(known)}) and the estimator's class values ({', '.join(value_names)}): "
        f"{table.where(value_row)}: {str(labels[value_row])!r} is a class value, "
        f"{table.where(label_row)}: {str(labels[label_row])!r} a class label; use one or "
        "the other throughout"
    )


def _class_position(text: str, classes: np.ndarray) -> int:
    """The index in ``classes`` of the class value ``text`` stands for, -1 if none:
    equal text, else for numeric classes an equal number."""
    for i, value in enumerate(classes.tolist()):
        if str(value) == text:
            return i
    if classes.dtype.kind not in "iuf":
        return -1
    try:
        number = float(text)
    except ValueError:
        return -1
    matches = np.flatnonzero(classes == number)
    return int(matches[0]) if len(matches) else -1
