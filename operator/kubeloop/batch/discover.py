"""From input files to shards: each file's columns checked before anything is scored.

Every pod reads every file's header (a CSV's first block, a Parquet file's footer):
a missing column, a feature column that does not hold numbers, an empty or corrupt
file fails every pod at once with the file's name, not one pod an hour in. A column
matches a feature by its exact name, else by the snake_case form both share
(``sepal length (cm)`` is ``sepal_length_cm``), as ``kubeloop evaluate`` matches them;
pass-through columns by their exact name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kubeloop.batch import BatchError
from kubeloop.batch.formats import CSV
from kubeloop.batch.locations import InputFile
from kubeloop.batch.place import Place, local_place
from kubeloop.batch.report import COLUMNS_MISSING
from kubeloop.batch.shards import DEFAULT_MIN_ROWS, Shard, group_row_groups
from kubeloop.evaluation.data import snake_case

HEADER_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Columns:
    """Which of a file's columns to read: one per model feature (in the model's
    order), then the pass-through columns."""

    features: tuple[str, ...]
    passthrough: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """The run's shards and, per input file (by relative path), its columns."""

    shards: tuple[Shard, ...]
    columns: dict[str, Columns]
    files: dict[str, str]
    """Relative path -> its path in ``source``, to open."""
    source: Place = field(default_factory=local_place)
    """The filesystem the input files are on (local, or S3)."""

    def total_rows(self, shards: Sequence[Shard]) -> int | None:
        """Rows in ``shards``, None when a CSV shard's count is not known yet."""
        counts = [s.rows for s in shards]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


def is_numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def match_columns(
    where: str, names: Sequence[str], features: Sequence[str], passthrough: Sequence[str]
) -> Columns:
    """The file's column for each feature and pass-through column, or an error naming
    the file and every column it lacks."""
    if len(set(names)) != len(names):
        raise BatchError(f"{where}: column names must be unique: {list(names)}")
    chosen: list[str] = []
    missing: list[str] = []
    for feature in features:
        if feature in names:
            chosen.append(feature)
            continue
        similar = [n for n in names if snake_case(n) == snake_case(feature)]
        if len(similar) > 1:
            raise BatchError(
                f"{where}: columns {similar} all match feature {feature!r}: rename all but one"
            )
        if similar:
            chosen.append(similar[0])
        else:
            missing.append(feature)
    missing += [f"{name} (pass-through)" for name in passthrough if name not in names]
    if missing:
        raise BatchError(
            f"{where}: {COLUMNS_MISSING}: {', '.join(missing)}; the file has: {', '.join(names)}"
        )
    return Columns(features=tuple(chosen), passthrough=tuple(passthrough))


def _parquet(
    source: InputFile, features: Sequence[str], passthrough: Sequence[str], min_rows: int
) -> tuple[Columns, list[tuple[tuple[int, int], int]]]:
    """The file's columns and its row-group runs with their row counts."""
    try:
        with source.source.fs.open_input_file(source.path.as_posix()) as f:
            metadata = pq.ParquetFile(f).metadata
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        raise BatchError(f"{source.shown}: not a readable Parquet file: {exc}") from exc
    columns = match_columns(source.shown, schema.names, features, passthrough)
    for name in columns.features:
        kind = schema.field(name).type
        if not is_numeric(kind):
            raise BatchError(
                f"{source.shown}: column {name!r} holds {kind}, the model needs numbers"
            )
    if metadata.num_rows == 0:
        raise BatchError(f"{source.shown}: no rows: nothing to score")
    counts = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    runs = group_row_groups(counts, min_rows)
    return columns, [(run, sum(counts[run[0] : run[1]])) for run in runs]


def _csv_header(source: InputFile) -> list[str]:
    try:
        with source.source.fs.open_input_stream(source.path.as_posix()) as f:
            reader = pacsv.open_csv(
                f, read_options=pacsv.ReadOptions(block_size=HEADER_BLOCK_BYTES)
            )
            with reader:
                return list(reader.schema.names)
    except (pa.ArrowException, OSError) as exc:
        raise BatchError(f"{source.shown}: not a readable CSV file: {exc}") from exc


def discover(
    inputs: Sequence[InputFile],
    features: Sequence[str],
    passthrough: Sequence[str] = (),
    min_rows: int = DEFAULT_MIN_ROWS,
) -> Layout:
    """Check every file's columns and cut the files into numbered shards."""
    shards: list[Shard] = []
    columns: dict[str, Columns] = {}
    for source in inputs:
        if source.size == 0:
            raise BatchError(f"{source.shown}: empty file: nothing to score")
        if source.format == CSV:
            names = _csv_header(source)
            columns[source.relpath] = match_columns(source.shown, names, features, passthrough)
            shards.append(
                Shard(len(shards), source.relpath, CSV, source.size, None, None, source.size)
            )
            continue
        columns[source.relpath], runs = _parquet(source, features, passthrough, min_rows)
        for run, rows in runs:
            shards.append(
                Shard(len(shards), source.relpath, source.format, source.size, run, rows, rows)
            )
    files = {source.relpath: source.path.as_posix() for source in inputs}
    where = inputs[0].source if inputs else local_place()
    return Layout(shards=tuple(shards), columns=columns, files=files, source=where)
