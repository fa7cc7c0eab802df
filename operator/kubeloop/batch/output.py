"""Writing one shard's predictions to a file, batch by batch, as Parquet or CSV."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kubeloop.batch.locations import PARQUET

EXTENSIONS = {PARQUET: "parquet", "csv": "csv"}


class ShardWriter:
    """Writes record batches to ``path`` in ``format``; the schema is the first
    batch's, and later batches are cast to it (a prediction column of int32 in one
    batch and int64 in the next would otherwise make a file no reader accepts)."""

    def __init__(self, path: Path, format: str) -> None:
        self.path = path
        self.format = format
        self.rows = 0
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._schema = batch.schema
            self._writer = (
                pq.ParquetWriter(self.path, batch.schema)
                if self.format == PARQUET
                else pacsv.CSVWriter(self.path, batch.schema)
            )
        elif batch.schema != self._schema:
            batch = pa.Table.from_batches([batch]).cast(self._schema).to_batches()[0]
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
