"""The one JSON decoder of the package: orjson where it is installed (the image has it,
through the `serve` extra), the standard library otherwise.

Used on the two hot paths that decode JSON: the model server's request bodies (orjson
decodes a 64-row body ~7x faster) and the operator's reads, its own API client (kube.py) and the
watch streams Kopf decodes (:func:`speed_up_kopf_watches`). What orjson refuses and
json reads (NaN literals) falls back to json, so what is accepted, and the error for
what is not, stay json's; one difference remains: orjson reads an integer beyond 64
bits as a float (the API server never sends one: Kubernetes integers are int64; a
request's features are floats).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - the standard library is the fallback
    orjson = None


def loads(body: bytes | str) -> Any:
    """Decode like json.loads, faster when orjson is installed."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def speed_up_kopf_watches() -> bool:
    """Let Kopf decode each watch event with :func:`loads`: Kopf calls `json.loads` on
    every line of every watch stream (kopf/_cogs/clients/api.py, `stream`), 17% of the
    operator's CPU in a burst of TrainingJobs (bench/README.md, operator profile).
    Only that module's name `json` is replaced; False when Kopf no longer has it (a
    unit test then fails, so an upgrade that moves it is seen)."""
    if orjson is None:
        return False
    from kopf._cogs.clients import api

    if getattr(api, "json", None) is not json:
        return isinstance(getattr(api, "json", None), SimpleNamespace)
    api.json = SimpleNamespace(loads=loads, dumps=json.dumps)  # type: ignore[assignment]
    return True
