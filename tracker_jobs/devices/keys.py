"""What Redis keeps per device, named in one place: its newest position (written by the position
pipeline) and its rate-limit window (counted as its positions are accepted). A deleted device's keys
are dropped with it (`service.forget_device_state`)."""

from __future__ import annotations

from tracker_jobs.core.redis import cache_key


def live_key(device_id: int) -> str:
    """The device's newest position: a cache, kept under the cache namespace."""
    return cache_key("live", device_id)


def rate_key(device_id: int) -> str:
    """The device's rate-limit window, counted inside the position append script."""
    return f"tracker:rate:device:{device_id}"
