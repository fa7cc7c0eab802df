"""How many cores this pod may use: its CPU limit (the cgroup's quota), not the node's
core count, which ``os.cpu_count()`` reports inside a container."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def quota_cpus(
    cpu_max: str | None, quota: str | None = None, period: str | None = None
) -> int | None:
    """Cores a CFS quota allows (rounded up), from cgroup v2's ``cpu.max`` text or v1's
    quota and period; None when unlimited or unreadable."""
    try:
        if cpu_max is not None:
            limit, _, interval = cpu_max.strip().partition(" ")
            if limit == "max":
                return None
            return max(1, math.ceil(int(limit) / int(interval or "100000")))
        if quota is not None and period is not None and int(quota) > 0:
            return max(1, math.ceil(int(quota) / int(period)))
    except ValueError:
        return None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def available_cpus() -> int:
    """The cores this process may run on, capped by the container's CPU limit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = quota_cpus(_read(CGROUP_V2_MAX), _read(CGROUP_V1_QUOTA), _read(CGROUP_V1_PERIOD))
    return max(1, min(cores, limit or cores))
