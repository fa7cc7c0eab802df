"""Arrow record batches in, the model's rows out, and predictions back as Arrow.

The rows go to the model server's own predictor (:class:`LoadedModel`) with the
server's own rule on missing values: NaN (and a null, which is a missing value) only
for a model that accepts NaN, infinities never.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kubeloop.batch import BatchError
from kubeloop.batch.discover import Columns
from kubeloop.batch.formats import FORMATS, PARQUET
from kubeloop.modeldir import LoadedModel


@dataclass(frozen=True)
class OutputSpec:
    """What each output row holds: pass-through columns (the input's, as they are),
    the prediction, one probability column per class; and the file format."""

    format: str = PARQUET
    passthrough: tuple[str, ...] = ()
    predictions: bool = True
    probabilities: bool = True
    prediction_column: str = "prediction"
    probability_prefix: str = "probability_"

    def output_columns(self, model: LoadedModel) -> list[str]:
        names = list(self.passthrough)
        if self.predictions:
            names.append(self.prediction_column)
        if self.probabilities and model.has_proba:
            names += [self.probability_prefix + label for label in model.class_labels]
        return names

    def check(self, model: LoadedModel) -> None:
        """Refuse a format we do not write, an output with no columns, and two output
        columns of the same name (a pass-through column called ``prediction``)."""
        if self.format not in FORMATS:
            raise BatchError(f"output format {self.format!r}: use {' or '.join(FORMATS)}")
        names = self.output_columns(model)
        if not names or names == list(self.passthrough):
            raise BatchError("the output would hold no predictions nor probabilities")
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise BatchError(f"output columns named twice: {', '.join(doubled)}")


def _as_float64(column: pa.Array, name: str, where: str) -> np.ndarray:
    if not (pa.types.is_floating(column.type) and column.type.bit_width == 64):
        try:
            column = pc.cast(column, pa.float64())
        except pa.ArrowException as exc:
            raise BatchError(
                f"{where}: column {name!r} holds {column.type}, the model needs numbers: {exc}"
            ) from exc
    values: np.ndarray = column.to_numpy(zero_copy_only=False)
    return values


def feature_rows(
    batch: pa.RecordBatch, columns: Columns, model: LoadedModel, where: str, first_row: int
) -> np.ndarray:
    """The batch's features as float64 rows in the model's feature order.

    ``first_row`` is the batch's first row within the shard (0-based), so that a
    message can say which row is wrong.
    """
    rows = np.empty((batch.num_rows, len(columns.features)), dtype=np.float64)
    for j, name in enumerate(columns.features):
        column = batch.column(name)
        if column.null_count and not model.allow_nan:
            row = first_row + int(pc.index(pc.is_null(column), True).as_py()) + 1
            raise BatchError(
                f"{where}: column {name!r}: row {row} is empty (null); "
                "this model does not accept missing values"
            )
        rows[:, j] = _as_float64(column, name, where)
    if not np.isfinite(rows).all():
        bad = np.isinf(rows) if model.allow_nan else ~np.isfinite(rows)
        if bad.any():
            bad_row, bad_column = np.argwhere(bad)[0]
            rule = "finite numbers or empty" if model.allow_nan else "finite numbers"
            raise BatchError(
                f"{where}: column {columns.features[bad_column]!r}: row "
                f"{first_row + int(bad_row) + 1} is {rows[bad_row, bad_column]}; "
                f"this model takes {rule}"
            )
    return rows


def predictions_batch(
    batch: pa.RecordBatch, rows: np.ndarray, columns: Columns, model: LoadedModel, spec: OutputSpec
) -> pa.RecordBatch:
    """The output rows of one input batch: pass-through columns, prediction,
    probabilities, in :meth:`OutputSpec.output_columns`' order."""
    arrays: list[pa.Array] = [batch.column(name) for name in columns.passthrough]
    if spec.predictions:
        arrays.append(pa.array(model.predict(rows)))
    if spec.probabilities and model.has_proba:
        probabilities = model.predict_proba(rows)
        arrays += [pa.array(probabilities[:, k]) for k in range(probabilities.shape[1])]
    return pa.RecordBatch.from_arrays(arrays, names=spec.output_columns(model))
