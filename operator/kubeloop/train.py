"""Progress reporting for training scripts that run as a Kubeloop TrainingJob.

    import kubeloop.train

    for step in range(total):
        loss = train_one_step()
        kubeloop.train.report(step=step + 1, total_steps=total, metrics={"loss": loss})
    kubeloop.train.finish({"accuracy": evaluate()})

``report()`` keeps the latest step, total and metrics. On worker 0 (the pod whose
``JOB_COMPLETION_INDEX`` is unset or 0) its first call starts a small HTTP server on
``$KUBELOOP_PROGRESS_PORT`` (default 9464, 0: none) whose ``GET /metrics`` the operator
reads while the run is going. When the script ends normally (or at ``finish()``), the
final state goes to the container's termination message, which the operator reads
once the pod is done. Formats: :mod:`kubeloop.progress`, docs/training-progress.md.

Reporting never fails a run for reasons of its own: a port in use or a termination log
that cannot be written is a warning on stderr. Wrong arguments are errors, raised
at once (TypeError, ValueError).
"""

from __future__ import annotations

import atexit
import numbers
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubeloop.names import PROGRESS_PORT
from kubeloop.progress import (
    DEFAULT_TERMINATION_LOG,
    EVERY_POD_ENV,
    MAX_METRICS,
    MAX_NAME_LENGTH,
    PORT_ENV,
    TERMINATION_LOG_ENV,
    Report,
    encode_final,
    render_text,
    valid_name,
)

__all__ = ["current", "finish", "report", "reset"]

WORKER_INDEX_ENV = "JOB_COMPLETION_INDEX"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _State:
    """Everything the helper remembers in this process; guarded by ``_lock``."""

    step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    updated: float | None = None
    reported: bool = False  # report() or finish() was called
    finished: bool = False  # the final message was written (or tried): atexit skips
    server_tried: bool = False
    server: ThreadingHTTPServer | None = None
    dropped: set[str] = field(default_factory=set)  # metric names over MAX_METRICS

    def snapshot(self) -> Report:
        return Report(
            step=self.step,
            total_steps=self.total_steps,
            metrics=dict(self.metrics),
            started=self.started,
            updated=self.updated,
        )


_lock = threading.Lock()
_state = _State()
_atexit_registered = False


# -- arguments ------------------------------------------------------------------------


def _check_steps(value: Any, what: str) -> int | None:
    """An optional non-negative integer (numpy integers too; bools are not)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    number = int(value)
    if number < 0:
        raise ValueError(f"{what} must not be negative: {number}")
    return number


def _check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Metric names checked, values converted to float (numpy scalars, 0-d tensors)."""
    checked: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        if not valid_name(name):
            raise ValueError(
                f"metric name {name!r}: must match [A-Za-z_][A-Za-z0-9_.:/-]* "
                f"in at most {MAX_NAME_LENGTH} characters"
            )
        if isinstance(value, bool | str | bytes):
            raise TypeError(f"metric {name!r} must be a number, not {type(value).__name__}")
        try:
            checked[name] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"metric {name!r} must be a number, not {type(value).__name__}"
            ) from None
    return checked


def _warn(message: str) -> None:
    print(f"kubeloop.train: {message}", file=sys.stderr, flush=True)


# -- state ----------------------------------------------------------------------------


def _merge(step: int | None, total_steps: int | None, metrics: dict[str, float]) -> None:
    """Fold one report into the state (the caller holds ``_lock``)."""
    now = time.time()
    if _state.started is None:
        _state.started = now
    _state.updated = now
    _state.reported = True
    if step is not None:
        _state.step = step
    if total_steps is not None:
        _state.total_steps = total_steps
    for name, value in metrics.items():
        if name in _state.metrics or len(_state.metrics) < MAX_METRICS:
            _state.metrics[name] = value
        elif name not in _state.dropped:
            _state.dropped.add(name)
            _warn(f"metric {name!r} dropped: at most {MAX_METRICS} metrics are reported")


def current() -> Report:
    """What the helper would report now."""
    with _lock:
        return _state.snapshot()


def report(
    step: int | None = None,
    total_steps: int | None = None,
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Record the run's latest step, total and metrics (merged by name into earlier ones).

    The first call starts the progress server on worker 0 and arranges for the final
    message to be written when the script exits without an uncaught exception.
    """
    checked_step = _check_steps(step, "step")
    checked_total = _check_steps(total_steps, "total_steps")
    checked_metrics = _check_metrics(metrics)
    with _lock:
        _merge(checked_step, checked_total, checked_metrics)
        if not _state.server_tried:
            _state.server_tried = True
            _state.server = _start_server()
    _register_atexit()


def finish(metrics: Mapping[str, float] | None = None) -> Path | None:
    """Merge the last metrics and write the final message now; returns where it went.

    After this the exit handler writes nothing more. Returns None when there is no
    termination log (not in a container, and ``$KUBELOOP_TERMINATION_LOG`` unset) or it
    could not be written.
    """
    checked_metrics = _check_metrics(metrics)
    with _lock:
        _merge(None, None, checked_metrics)
        _state.finished = True
        message = encode_final(_state.snapshot())
    return _write_final(message)


def reset() -> None:
    """Forget everything and stop the server: for tests, which report in one process."""
    global _state
    with _lock:
        server, _state = _state.server, _State()
    if server is not None:
        server.shutdown()
        server.server_close()


# -- the final message ----------------------------------------------------------------


def termination_log() -> Path | None:
    """Where the final message goes: ``$KUBELOOP_TERMINATION_LOG``, else the kubelet's
    ``/dev/termination-log`` if it exists (never created: outside a container it would
    be a stray file under /dev)."""
    configured = os.environ.get(TERMINATION_LOG_ENV)
    if configured:
        return Path(configured)
    default = Path(DEFAULT_TERMINATION_LOG)
    return default if default.is_file() else None


def _write_final(message: str) -> Path | None:
    path = termination_log()
    if path is None:
        return None
    try:
        path.write_text(message, encoding="utf-8")
    except OSError as exc:
        _warn(f"cannot write the final message to {path}: {exc.strerror or exc}")
        return None
    return path


def _died_of_exception() -> bool:
    """Whether the interpreter printed an uncaught exception: it then sets
    ``sys.last_value`` (and, from Python 3.12, ``sys.last_exc``) before exit handlers run.
    ``sys.exit(n)`` is not an exception in this sense."""
    return any(getattr(sys, name, None) is not None for name in ("last_exc", "last_value"))


def _at_exit() -> None:
    """Write the final message if the script reported, did not finish(), and did not die
    of an uncaught exception (the operator then reads it as the run's result)."""
    if _died_of_exception():
        return
    with _lock:
        if not _state.reported or _state.finished:
            return
        _state.finished = True
        message = encode_final(_state.snapshot())
    _write_final(message)


def _register_atexit() -> None:
    global _atexit_registered
    with _lock:
        if _atexit_registered:
            return
        _atexit_registered = True
    atexit.register(_at_exit)


# -- the progress server --------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """``GET /metrics``: the current state as Prometheus text; 404 elsewhere."""

    server_version = "kubeloop-train"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = render_text(current()).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: stderr is the training script's."""


def _is_worker_zero() -> bool:
    if os.environ.get(EVERY_POD_ENV, "").strip() == "1":
        return True
    return os.environ.get(WORKER_INDEX_ENV, "0").strip() in ("", "0")


def _progress_port() -> int | None:
    """The port to serve on; None when disabled (0) or unreadable (a warning)."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return PROGRESS_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        _warn(f"{PORT_ENV}={raw!r} is not a port; progress is not served")
        return None
    return port or None


def _start_server() -> ThreadingHTTPServer | None:
    """Serve progress from a daemon thread on worker 0; None elsewhere or on failure."""
    if not _is_worker_zero():
        return None
    port = _progress_port()
    if port is None:
        return None
    try:
        server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)
    except OSError as exc:  # most often the port is in use
        _warn(f"cannot serve progress on port {port}: {exc.strerror or exc}")
        return None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="kubeloop-progress", daemon=True)
    thread.start()
    return server
