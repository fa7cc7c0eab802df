"""Writing one shard's predictions to a file (local or an S3 object), batch by batch,
as Parquet or CSV; a write that fails is aborted, never closed as if whole.

Closing a Parquet writer writes its footer: the rows written so far would become a
short but valid Parquet file. So on an error the writer is dropped unclosed, the sink
closed as it is (no footer: a Parquet reader refuses what is there) and the file
deleted. pyarrow cannot abort an S3 upload (its stream completes the upload when closed,
even from its destructor), so on S3 the footless object exists for the moment between
that close and its deletion, under the attempt's own key, which no manifest names; a
locally written file never had a final name (:mod:`.commit`)."""

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
        self._out, self._name = out, name
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

    def abort(self) -> None:
        """Stop without finishing the file (no footer), and delete it."""
        writer, self._writer = self._writer, None
        if isinstance(writer, pq.ParquetWriter):
            writer.is_open = False  # else its __del__ would close it: a footer
        try:
            self._sink.close()
        finally:
            # The native writer's own destructor writes its footer into the closed
            # sink: that fails, silently, as it should.
            del writer
            places.delete(self._out, self._name)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
