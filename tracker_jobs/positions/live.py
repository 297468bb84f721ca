"""Live state in Redis: each device's newest position (for the API and new websocket clients), and
one pub/sub message per stored batch (for every admin process's websocket clients)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from tracker_jobs.devices.keys import live_key
from tracker_jobs.monitor.counters import add_counts

log = logging.getLogger(__name__)
LIVE_CHANNEL = "tracker:live"
# Write only when newer: a drainer that lost its lock cannot put an older position back. One call for
# the whole batch: KEYS are the devices' live keys, ARGV their (fix time, position) pairs in order.
_SET_IF_NEWER = """
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('HGET', key, 'fix') or '-1')
  if tonumber(ARGV[2 * i - 1]) > current then
    redis.call('HSET', key, 'fix', ARGV[2 * i - 1], 'position', ARGV[2 * i])
  end
end
return 0
"""


async def publish_batch(
    redis: Redis,
    newest: list[tuple[float, dict[str, Any]]],
    devices: list[dict[str, Any]],
    counts: Mapping[str, int],
) -> None:
    """Cache each device's newest position (with its fix time, epoch seconds), publish the batch,
    add the counters: one round trip."""
    positions = [position for _, position in newest]
    set_if_newer = redis.register_script(_SET_IF_NEWER)  # EVALSHA, loading the script once if missing
    async with redis.pipeline(transaction=False) as pipe:
        if newest:
            keys = [live_key(position["deviceId"]) for _, position in newest]
            args = [value for fix_time, position in newest for value in (str(fix_time), orjson.dumps(position))]
            await set_if_newer(keys=keys, args=args, client=pipe)
        if positions or devices:
            pipe.publish(LIVE_CHANNEL, orjson.dumps({"positions": positions, "devices": devices}))
        add_counts(pipe, counts)
        await pipe.execute()


async def publish_devices(redis: Redis, devices: list[dict[str, Any]]) -> None:
    """A status change without a position (e.g. a device gone silent)."""
    if devices:
        await redis.publish(LIVE_CHANNEL, orjson.dumps({"devices": devices}))


async def latest_positions(redis: Redis, device_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The cached newest position of each device that has one, in Traccar's shape."""
    ids = list(device_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for device_id in ids:
            pipe.hget(live_key(device_id), "position")
        cached = await pipe.execute()
    return [orjson.loads(raw) for raw in cached if raw is not None]
