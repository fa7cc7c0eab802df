"""Writing one shard's predictions to a file (local or an S3 object), batch by batch,
as Parquet or CSV."""

from __future__ import annotations

from types import TracebackType

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kubeloop.batch import place as places
from kubeloop.batch.formats import PARQUET
from kubeloop.batch.place import Place

EXTENSIONS = {PARQUET: "parquet", "csv": "csv"}


class ShardWriter:
    """Writes record batches to the file ``name`` of ``out`` in ``format``; the schema
    is the first batch's, and later batches are cast to it (a prediction column of int32
    in one batch and int64 in the next would otherwise make a file no reader accepts)."""

    def __init__(self, out: Place, name: str, format: str) -> None:
        self.format = format
        self.rows = 0
        self._sink = places.open_output(out, name)
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._schema = batch.schema
            self._writer = (
                pq.ParquetWriter(self._sink, batch.schema)
                if self.format == PARQUET
                else pacsv.CSVWriter(self._sink, batch.schema)
            )
        elif batch.schema != self._schema:
            batch = pa.Table.from_batches([batch]).cast(self._schema).to_batches()[0]
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._sink.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
