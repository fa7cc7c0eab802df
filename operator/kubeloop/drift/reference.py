"""Loading a reference profile over HTTP: from a pod that serves the model (the profile
it loaded from its model directory), or from a URL. The operator never reads a model's
storage itself: only the serving pods can (a claim, credentials), and a path on the
operator's own filesystem means nothing in a cluster."""

from __future__ import annotations

import json

import requests
import urllib3
from pydantic import ValidationError

from kubeloop.drift.profile import Profile

MAX_PROFILE_BYTES = 4 * 2**20


class ReferenceInvalid(Exception):
    """The reference profile is too large or not a profile: a fix is needed."""


class ReferenceNotServed(ReferenceInvalid):
    """The reference cannot be read yet (no ready pod, a server starting, a network
    error): a wait, retried with backoff, not a broken reference."""


def parse_profile(text: str | bytes, where: str) -> Profile:
    try:
        return Profile.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ReferenceInvalid(f"{where}: not a reference profile: {loc}: {first['msg']}") from err


def profile_url(base_url: str, model: str) -> str:
    """Where a model server answers with the profile it loaded with its model."""
    return f"{base_url.rstrip('/')}/v2/models/{model}/profile"


def profile_from_url(url: str, timeout: float = 5.0) -> Profile:
    """A profile over HTTP, at most MAX_PROFILE_BYTES. Network errors and 5xx answers
    are waits (ReferenceNotServed); any other non-200 answer or a body that is not a
    profile is ReferenceInvalid."""
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            data = response.raw.read(MAX_PROFILE_BYTES + 1, decode_content=True)
    # A body read on the raw stream raises urllib3's and socket errors, not requests'.
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
        raise ReferenceNotServed(f"cannot read the reference profile at {url}: {err}") from err
    if response.status_code >= 500:
        raise ReferenceNotServed(f"{url}: HTTP {response.status_code}: {data[:200]!r}")
    if response.status_code != 200:
        raise ReferenceInvalid(f"{url}: HTTP {response.status_code}: {data[:200]!r}")
    if len(data) > MAX_PROFILE_BYTES:
        raise ReferenceInvalid(f"{url}: larger than {MAX_PROFILE_BYTES} bytes")
    return parse_profile(data, url)


def profile_from_server(base_url: str, model: str, timeout: float = 5.0) -> Profile:
    """The profile a model server loaded with its model (`/v2/models/NAME/profile`)."""
    return profile_from_url(profile_url(base_url, model), timeout)


def version_from_server(base_url: str, model: str, timeout: float = 5.0) -> str:
    """The model version a model server serves (its Open Inference Protocol model
    metadata, `GET /v2/models/NAME`: `versions`). Network errors and 5xx answers are
    waits (ReferenceNotServed); anything else unusable is ReferenceInvalid."""
    url = f"{base_url.rstrip('/')}/v2/models/{model}"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as err:
        raise ReferenceNotServed(f"cannot read the model version at {url}: {err}") from err
    if response.status_code >= 500:
        raise ReferenceNotServed(f"{url}: HTTP {response.status_code}")
    try:
        versions = json.loads(response.content)["versions"] if response.ok else None
    except (ValueError, KeyError, TypeError):
        versions = None
    if not isinstance(versions, list) or not versions or not isinstance(versions[0], str):
        raise ReferenceInvalid(f"{url}: HTTP {response.status_code}: no model version")
    return versions[0]
