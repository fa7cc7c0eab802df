"""`pvc://CLAIM/PATH` locations: a PersistentVolumeClaim of the resource's namespace.

A TrainingJob writes its model to such a location and a ModelDeployment serves from it,
so the location must mean the same thing in both pods: the renderers mount the claim
at `/mnt/pvc/CLAIM` and hand the process the `file://` URI of PATH under it. Status
keeps the `pvc://` form (the cluster's name for the place, not one pod's path).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple
from urllib.parse import urlsplit

SCHEME = "pvc"
MOUNT_ROOT = "/mnt/pvc"


class ClaimPath(NamedTuple):
    claim: str
    path: str


def parse(uri: str) -> ClaimPath | None:
    """(claim, path inside it) of a `pvc://` URI; None for any other scheme."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or not parts.netloc:
        return None
    return ClaimPath(parts.netloc, parts.path.strip("/"))


def volume_name(claim: str) -> str:
    """A DNS label for the claim's volume, unique per claim."""
    name = f"pvc-{claim}"
    if len(name) <= 63:
        return name
    return f"pvc-{claim[:42]}-{hashlib.sha256(claim.encode()).hexdigest()[:16]}"


def local_uri(uri: str) -> str:
    """The URI the pod's process uses: `file://` under the claim's mount for `pvc://`."""
    location = parse(uri)
    if location is None:
        return uri
    tail = f"/{location.path}" if location.path else ""
    return f"file://{MOUNT_ROOT}/{location.claim}{tail}"


def claim_mounts(
    uris: list[str], read_only: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container volumeMounts) for the claims that `uris` name."""
    claims = sorted({loc.claim for uri in uris if (loc := parse(uri)) is not None})
    volumes = [
        {
            "name": volume_name(claim),
            "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only},
        }
        for claim in claims
    ]
    mounts = [
        {"name": volume_name(claim), "mountPath": f"{MOUNT_ROOT}/{claim}", "readOnly": read_only}
        for claim in claims
    ]
    return volumes, mounts
