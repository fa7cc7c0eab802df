"""Loading a reference profile: from the served model's directory or a ConfigMap."""

from __future__ import annotations

import requests
import urllib3
from pydantic import ValidationError

from kubeloop.drift.profile import Profile
from kubeloop.serving.fetch import FetchError, open_source

PROFILE_FILE = "profile.json"
MAX_PROFILE_BYTES = 4 * 2**20


class ReferenceInvalid(Exception):
    """The reference profile is missing, too large or not a profile."""


def parse_profile(text: str | bytes, where: str) -> Profile:
    try:
        return Profile.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ReferenceInvalid(f"{where}: not a reference profile: {loc}: {first['msg']}") from err


def profile_from_model(model_uri: str) -> Profile:
    """`profile.json` beside the model, as written by the example training script."""
    where = f"{model_uri.rstrip('/')}/{PROFILE_FILE}"
    data = bytearray()
    try:
        with open_source(model_uri).stream(PROFILE_FILE) as chunks:
            for chunk in chunks:
                data += chunk
                if len(data) > MAX_PROFILE_BYTES:
                    raise ReferenceInvalid(f"{where}: larger than {MAX_PROFILE_BYTES} bytes")
    except FetchError as err:
        raise ReferenceInvalid(f"cannot read the reference profile: {err}") from err
    return parse_profile(bytes(data), where)


class ReferenceNotServed(ReferenceInvalid):
    """No ready pod serves the model yet: a wait, not a broken reference."""


def profile_from_server(base_url: str, model: str, timeout: float = 5.0) -> Profile:
    """The profile a model server loaded with its model (`/v2/models/NAME/profile`):
    the reference of a model whose storage only its pods can read (`pvc://`)."""
    url = f"{base_url.rstrip('/')}/v2/models/{model}/profile"
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            data = response.raw.read(MAX_PROFILE_BYTES + 1, decode_content=True)
    # A body read on the raw stream raises urllib3's and socket errors, not requests'.
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
        raise ReferenceNotServed(f"cannot read the reference profile at {url}: {err}") from err
    if response.status_code != 200:
        raise ReferenceInvalid(f"{url}: HTTP {response.status_code}: {data[:200]!r}")
    if len(data) > MAX_PROFILE_BYTES:
        raise ReferenceInvalid(f"{url}: larger than {MAX_PROFILE_BYTES} bytes")
    return parse_profile(data, url)
