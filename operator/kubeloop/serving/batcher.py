"""Adaptive batching: concurrent inference requests merged into one `predict` call.

Each request is decoded and validated on its own first, so a bad request gets its 400
and never enters a batch. Requests that wait together are predicted as one matrix, up
to `max_batch_size` rows, and no request waits longer than `max_wait` for others to
join (0: only those already queued when the event loop comes round). The results are
split back per request. If the merged call fails, each request of the batch is
predicted alone, so that one request the model cannot score fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("kubeloop.serving.batcher")

Predict = Callable[[np.ndarray, bool], dict[str, np.ndarray]]
Observe = Callable[[np.ndarray, dict[str, np.ndarray]], None]


@dataclass
class _Waiting:
    rows: np.ndarray
    proba: bool
    done: asyncio.Future[dict[str, np.ndarray]]


@dataclass
class Batcher:
    """One per served model. `predict(rows, proba)` returns `predict` (and
    `predict_proba` when asked) for the rows; `inline_rows`: batches up to this many
    rows are predicted on the event loop, larger ones in a worker thread."""

    predict: Predict
    observe: Observe
    max_batch_size: int = 64
    max_wait: float = 0.0
    inline_rows: int = 64
    _queue: list[_Waiting] = field(default_factory=list)
    _rows: int = 0
    _timer: asyncio.Handle | None = None
    batches: int = 0  # merged predict calls so far (for tests and metrics)

    async def submit(self, rows: np.ndarray, proba: bool) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(rows, proba, loop.create_future())
        self._queue.append(waiting)
        self._rows += len(rows)
        if self._rows >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            if self.max_wait > 0:
                self._timer = loop.call_later(self.max_wait, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        return await waiting.done

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            batch: list[_Waiting] = []
            size = 0
            while self._queue and (
                not batch or size + len(self._queue[0].rows) <= self.max_batch_size
            ):
                item = self._queue.pop(0)
                batch.append(item)
                size += len(item.rows)
            self._rows -= size
            asyncio.get_running_loop().create_task(self._run(batch, size))

    async def _run(self, batch: list[_Waiting], size: int) -> None:
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([w.rows for w in batch])
        proba = any(w.proba for w in batch)
        self.batches += 1
        try:
            if size <= self.inline_rows:
                results = self.predict(rows, proba)
            else:
                results = await asyncio.to_thread(self.predict, rows, proba)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].done.done():
                    batch[0].done.set_exception(exc)  # the handler logs it and answers 500
                return
            log.info("A batch of %d requests failed; predicting each alone", len(batch))
            for waiting in batch:
                await self._run([waiting], len(waiting.rows))
            return
        self.observe(rows, results)
        start = 0
        for waiting in batch:
            end = start + len(waiting.rows)
            mine = {k: v[start:end] for k, v in results.items() if k == "predict" or waiting.proba}
            if not waiting.done.done():
                waiting.done.set_result(mine)
            start = end
