"""Faster decoding of Kopf's watch events.

Kopf decodes every line of every watch stream with the standard library's `json`; in a
py-spy profile of a 300-job burst that was 17% of the operator's CPU (bench/README.md,
"Operator profile"). Where orjson is installed (the image has it: the model server uses
it too), `install()` makes Kopf's watch stream decode with it instead. The objects are
the same; what orjson refuses (integers beyond 64 bits, NaN) falls back to the standard
library, so an event that decoded before still decodes.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the image and the test venv have it
    orjson = None  # type: ignore[assignment]


def loads(text: str | bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


class _Json(ModuleType):
    """The `json` module as Kopf's API client sees it: `loads` replaced, the rest the
    standard library's."""

    loads = staticmethod(loads)

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


def install() -> bool:
    """Route the `json.loads` of Kopf's watch stream (kopf/_cogs/clients/api.py) to
    `loads`; True when done, False without orjson or where Kopf no longer decodes there
    with the standard library (a Kopf upgrade: tests/unit/test_watchjson.py says so)."""
    from kopf._cogs.clients import api

    current = getattr(api, "json", None)
    if isinstance(current, _Json):
        return True
    if orjson is None or current is not json:
        return False
    api.json = _Json("json")
    return True
