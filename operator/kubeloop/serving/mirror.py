"""The stable's side of a shadow: a sampled copy of each answered request goes to the
shadow, its answer is compared with the stable's, and late labels for the same request
id score both (docs/shadow.md).

Never at the client's expense: :meth:`Mirror.offer` runs after the stable answered and
only puts the request on a bounded queue (``put_nowait``: a full queue drops the copy
and counts it); a few background senders post the copies to the shadow's Service with
a timeout, so a shadow that is down, slow or wrong shows only in these counters. The
senders cost the stable's process CPU, so they spend little: a sender waits
``LINGER_S`` after the first copy, then sends every copy that queued up meanwhile as one
request of all their rows (up to ``MAX_POST_ROWS``), so that under load one request to
the shadow carries many clients' rows (the stable's event loop makes one post, not one
per client request, and the shadow predicts them as one batch); the answers are turned
into classes there too, not on the client's path. After a failed request copies are
dropped (and counted) for ``PAUSE_S`` instead of being sent to a shadow that is down.

Pairs for late labels are kept per request id, at most ``MAX_PAIR_ROWS`` rows in all
(the oldest forgotten first), in this server process: a label reaches them when it
reaches this process (docs/shadow.md says when it does). Every counter is mutated on
the event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from kubeloop.jsoncodec import loads
from kubeloop.modeldir import LoadedModel
from kubeloop.serving.binary import HEADER
from kubeloop.serving.protocol import PREDICT, bad, encode_json
from kubeloop.shadow import figures as names

log = logging.getLogger("kubeloop.serving.mirror")

QUEUE_SIZE = 1024
SENDERS = 2
LINGER_S = 0.05
YIELD_EVERY = 32  # pairs kept between two returns to the event loop
TIMEOUT_S = 2.0
MAX_PAIR_ROWS = 100_000
MAX_POST_ROWS = 256
PAUSE_S = 1.0
MIRROR_INPUT = "__mirror__"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Answer = str | float  # a classifier's class as text, a regressor's value


def _key(value: Any) -> str:
    """A class as text: 2, 2.0 and "2" alike (as the feedback route reads them)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Mirror:
    """Copies of one model's requests to its shadow, and their comparison."""

    def __init__(
        self,
        registry: CollectorRegistry,
        model_name: str,
        url: str,
        percent: int,
        model: LoadedModel,
        *,
        queue_size: int = QUEUE_SIZE,
        senders: int = SENDERS,
        timeout: float = TIMEOUT_S,
        max_pair_rows: int = MAX_PAIR_ROWS,
        sample: Callable[[], float] = random.random,
        linger: float = LINGER_S,
    ) -> None:
        self.infer_url = f"{url.rstrip('/')}/v2/models/{model_name}/infer"
        self.share = percent / 100.0
        self.classifier = model.classes is not None
        # A label as the model's class value or its name -> the class as text.
        self._canonical: dict[str, str] = {}
        if model.classes is not None:
            for value, label in zip(model.classes.tolist(), model.class_labels, strict=True):
                self._canonical[_key(value)] = self._canonical[label] = _key(value)
        self.queue: asyncio.Queue[tuple[str, np.ndarray, np.ndarray]] = asyncio.Queue(queue_size)
        self._senders, self._timeout, self._sample = senders, timeout, sample
        self._linger = linger
        self._tasks: list[asyncio.Task[None]] = []
        self._paused_until = 0.0
        self._session: aiohttp.ClientSession | None = None
        self.pairs: OrderedDict[str, list[tuple[Answer, Answer] | None]] = OrderedDict()
        self.pair_rows, self.max_pair_rows = 0, max_pair_rows

        def counter(name: str, what: str, labels: tuple[str, ...] = ()) -> Any:
            made = Counter(name, what, ["model", *labels], registry=registry)
            return made if labels else made.labels(model_name)

        self.model_name = model_name
        self.mirrored = counter(names.MIRRORED, "Requests copied to the shadow.")
        self.dropped = counter(
            names.DROPPED,
            "Copies dropped: the queue to the shadow was full, or the shadow had just failed.",
        )
        self.errors = counter(names.ERRORS, "Copies the shadow failed or did not answer in time.")
        self.compared = counter(names.COMPARED, "Answers (rows) of both models compared.")
        self.unmatched = counter(
            names.UNMATCHED, "Labels with a request id this process holds no pair for."
        )
        self.duration = Histogram(
            names.DURATION,
            "The shadow's time to answer a request of copies, as measured here.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        ).labels(model_name)
        if self.classifier:
            self.agreed = counter(names.AGREED, "Compared answers where both gave the same class.")
            self._labelled = counter(
                names.LABELLED, "Labelled pairs by who was right.", ("champion", "shadow")
            )
            for champion in (names.RIGHT, names.WRONG):  # all four exported, even at 0
                for shadow in (names.RIGHT, names.WRONG):
                    self._labelled.labels(model_name, champion, shadow)
        else:
            self.abs_difference = counter(
                names.ABS_DIFFERENCE, "Sum over compared answers of |stable - shadow|."
            )
            self.labelled = counter(names.LABELLED, "Labelled pairs.")
            self.champion_abs_error = counter(
                names.CHAMPION_ABS_ERROR, "Sum of the stable's |error| on labelled pairs."
            )
            self.shadow_abs_error = counter(
                names.SHADOW_ABS_ERROR, "Sum of the shadow's |error| on labelled pairs."
            )
            self.difference_squared = counter(
                names.ERROR_DIFFERENCE_SQUARED,
                "Sum over labelled pairs of (|stable error| - |shadow error|) squared.",
            )

    # -- the hot path: after the stable answered -------------------------------------

    def offer(self, request_id: str, rows: np.ndarray, predictions: np.ndarray) -> None:
        """Copy a sampled answered request to the shadow's queue, or drop it."""
        if self.share < 1.0 and self._sample() >= self.share:
            return
        if not self._tasks:
            self._start()
        if self._paused_until and asyncio.get_running_loop().time() < self._paused_until:
            self.dropped.inc()
            return
        try:
            self.queue.put_nowait((request_id, rows, predictions))
        except asyncio.QueueFull:
            self.dropped.inc()
            return
        self.mirrored.inc()

    def _answers(self, values: Any) -> list[Answer]:
        if self.classifier:
            return [_key(v) for v in np.asarray(values).ravel().tolist()]
        return [float(v) for v in np.asarray(values, dtype=np.float64).ravel().tolist()]

    def _start(self) -> None:
        self._tasks = [asyncio.create_task(self._send_loop()) for _ in range(self._senders)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the background senders ------------------------------------------------------

    def _take(self, first: tuple[str, np.ndarray, np.ndarray]) -> list[Any]:
        """The first copy and those queued behind it, up to MAX_POST_ROWS rows."""
        batch = [first]
        rows = len(first[1])
        while rows < MAX_POST_ROWS and not self.queue.empty():
            batch.append(self.queue.get_nowait())
            rows += len(batch[-1][1])
        return batch

    async def _send_loop(self) -> None:
        while True:
            first = await self.queue.get()
            if self._linger > 0 and self.queue.qsize() * len(first[1]) < MAX_POST_ROWS:
                await asyncio.sleep(self._linger)  # let the copies of this moment gather
            batch = self._take(first)
            try:
                one = len(batch) == 1
                rows = batch[0][1] if one else np.concatenate([b[1] for b in batch])
                shadow = await self._ask(batch[0][0], rows)
                champion = self._answers(
                    batch[0][2] if one else np.concatenate([np.ravel(b[2]) for b in batch])
                )
            except Exception as exc:  # any failure of the shadow is only counted
                self.errors.inc(len(batch))
                self._paused_until = asyncio.get_running_loop().time() + PAUSE_S
                log.debug("The shadow failed %d copies: %r", len(batch), exc)
            else:
                self._count(champion, shadow)  # once for the whole batch
                start = 0
                for index, (request_id, copied, _) in enumerate(batch, 1):
                    end = start + len(copied)
                    self._keep(request_id, champion[start:end], shadow[start:end])
                    start = end
                    if index % YIELD_EVERY == 0:
                        # Clients' requests between the pieces: no long stall (p99).
                        await asyncio.sleep(0)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _ask(self, request_id: str, rows: np.ndarray) -> list[Answer]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        # The rows as raw FP64 (the binary tensor extension): no numbers printed as text
        # here, none parsed there.
        blob = np.ascontiguousarray(rows, dtype="<f8").tobytes()
        header = encode_json(
            {
                "id": request_id,
                "inputs": [
                    {
                        "name": MIRROR_INPUT,
                        "shape": list(rows.shape),
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ],
            }
        )
        headers = {"Content-Type": "application/octet-stream", HEADER: str(len(header))}
        started = time.perf_counter()
        async with self._session.post(
            self.infer_url, data=header + blob, headers=headers
        ) as response:
            payload = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        self.duration.observe(time.perf_counter() - started)
        outputs = loads(payload).get("outputs") or []
        data = next(o["data"] for o in outputs if o.get("name") == PREDICT)
        if len(data) != len(rows):
            raise RuntimeError(f"{len(data)} answers for {len(rows)} rows")
        return self._answers(data)

    # -- comparison and labels -------------------------------------------------------

    def compare(self, request_id: str, champion: list[Answer], shadow: list[Answer]) -> None:
        """Count one request both answered; keep the pair for a late label."""
        self._count(champion, shadow)
        self._keep(request_id, champion, shadow)

    def _count(self, champion: list[Answer], shadow: list[Answer]) -> None:
        self.compared.inc(len(champion))
        if self.classifier:
            self.agreed.inc(sum(a == b for a, b in zip(champion, shadow, strict=True)))
        else:
            self.abs_difference.inc(
                sum(abs(float(a) - float(b)) for a, b in zip(champion, shadow, strict=True))
            )

    def _keep(self, request_id: str, champion: list[Answer], shadow: list[Answer]) -> None:
        old = self.pairs.pop(request_id, None)
        self.pair_rows -= len(old) if old is not None else 0
        self.pairs[request_id] = list(zip(champion, shadow, strict=True))
        self.pair_rows += len(champion)
        while self.pair_rows > self.max_pair_rows and self.pairs:
            _, gone = self.pairs.popitem(last=False)
            self.pair_rows -= len(gone)

    def check_labels(self, records: list[Any]) -> list[tuple[str, int, Any]]:
        """The (request id, row, label) of the feedback records that name a request id;
        a bad id or row refuses the whole request (400), before anything is counted."""
        found = []
        for index, record in enumerate(records):
            if not isinstance(record, dict) or "id" not in record:
                continue
            request_id, row = record["id"], record.get("row", 0)
            if not isinstance(request_id, str) or not request_id or len(request_id) > 256:
                raise bad(f"records[{index}]: 'id' must be a non-empty string (the answer's id)")
            if type(row) is not int or row < 0:
                raise bad(f"records[{index}]: 'row' must be a non-negative integer")
            found.append((request_id, row, record.get("label")))
        return found

    def label(self, request_id: str, row: int, label: Any) -> None:
        """Score both models' answers to one labelled row, once."""
        rows = self.pairs.get(request_id)
        pair = rows[row] if rows is not None and row < len(rows) else None
        if rows is None or pair is None:
            self.unmatched.inc()
            return
        rows[row] = None  # a label counts once
        champion, shadow = pair
        if self.classifier:
            truth = self._canonical.get(_key(label), _key(label))
            verdict = (names.RIGHT, names.WRONG)
            self._labelled.labels(
                self.model_name, verdict[champion != truth], verdict[shadow != truth]
            ).inc()
            return
        champion_error = abs(float(champion) - float(label))
        shadow_error = abs(float(shadow) - float(label))
        self.labelled.inc()
        self.champion_abs_error.inc(champion_error)
        self.shadow_abs_error.inc(shadow_error)
        self.difference_squared.inc((champion_error - shadow_error) ** 2)
