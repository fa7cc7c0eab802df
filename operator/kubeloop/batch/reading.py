"""A shard's rows as a stream of Arrow record batches: memory bounded by the batch
size, not by the file's size. Only the columns the run needs are read, from a local
file or an S3 object alike (pyarrow's filesystems, :mod:`.place`)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kubeloop.batch import BatchError
from kubeloop.batch.discover import Columns
from kubeloop.batch.formats import PARQUET
from kubeloop.batch.place import Place, local_place
from kubeloop.batch.shards import DEFAULT_BATCH_ROWS, Shard

CSV_BYTES_PER_ROW = 128
"""A CSV is read in blocks of bytes, not rows: blocks of about this many bytes per row
of the batch size, within the bounds below."""
CSV_MIN_BLOCK = 1 << 20
CSV_MAX_BLOCK = 64 << 20


def _needed(columns: Columns) -> list[str]:
    return list(dict.fromkeys(columns.features + columns.passthrough))


def _parquet_batches(
    place: Place, path: str, shard: Shard, columns: Columns, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    assert shard.row_groups is not None
    with place.fs.open_input_file(place.path(path)) as f, pq.ParquetFile(f) as source:
        yield from source.iter_batches(
            batch_size=batch_rows,
            row_groups=list(range(*shard.row_groups)),
            columns=_needed(columns),
        )


def _csv_batches(
    place: Place, path: str, shard: Shard, columns: Columns, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    block = min(CSV_MAX_BLOCK, max(CSV_MIN_BLOCK, batch_rows * CSV_BYTES_PER_ROW))
    with place.fs.open_input_stream(place.path(path)) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=block),
            # Features are read as numbers: a cell that is not one fails with its row.
            convert_options=pacsv.ConvertOptions(
                include_columns=_needed(columns),
                column_types={name: pa.float64() for name in columns.features},
            ),
        )
        with reader:
            yield from reader


def read_batches(
    path: str,
    shard: Shard,
    columns: Columns,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    place: Place | None = None,
) -> Iterator[pa.RecordBatch]:
    """The shard's record batches (``path`` in ``place``, the local filesystem by
    default); a read or conversion error names the shard."""
    place = place or local_place()
    batches = (_parquet_batches if shard.format == PARQUET else _csv_batches)(
        place, path, shard, columns, batch_rows
    )
    try:
        yield from batches
    except (pa.ArrowException, OSError) as exc:
        raise BatchError(f"{shard.describe(place.show(path))}: cannot read: {exc}") from exc
