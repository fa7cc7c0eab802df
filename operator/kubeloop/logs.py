"""Structured logs: one JSON object per line, naming kind/namespace/name when known."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("kind", "namespace", "name"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


PROBE_AGENT = "kube-probe/"


class QuietProbes(logging.Filter):
    """Drops the access-log line of a kubelet's probe (User-Agent `kube-probe/...`): the
    health endpoint (Kopf's aiohttp server) is asked every 5 s by the readiness probe
    alone, which buried everything else. Any other request is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        # aiohttp's access logger passes the request headers of its format as `extra`.
        headers = getattr(record, "request_header", None)
        agent = headers.get("User-Agent") if isinstance(headers, dict) else None
        if isinstance(agent, str):
            return not agent.startswith(PROBE_AGENT)
        return f'"{PROBE_AGENT}' not in record.getMessage()


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Kopf logs every watch event at debug; keep it at our level or above INFO.
    logging.getLogger("kopf").setLevel(max(logging.INFO, root.level))
    # One line per handled watch event is noise at scale; our reconciles log decisions.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, root.level))
    # Probes' access-log lines only at DEBUG.
    access = logging.getLogger("aiohttp.access")
    for old in [f for f in access.filters if isinstance(f, QuietProbes)]:
        access.removeFilter(old)
    if root.level > logging.DEBUG:
        access.addFilter(QuietProbes())
