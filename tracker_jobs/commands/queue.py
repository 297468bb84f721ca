"""The commands waiting for a device's OsmAnd reply, kept in Redis so the listener never asks the
database (it answers devices while the database is down):

- `tracker:commands:queue:{device}`: the device's queued commands, oldest first, each `{"id", "text",
  "expires"}` (epoch seconds); the list expires with its last command.
- `tracker:commands:waiting`: the devices with a list; each listener keeps a copy in memory (`Inbox`),
  read again every INBOX_REFRESH_S, so a device with nothing queued costs no Redis call at all.
- `tracker:commands:updates`: a stream of what happened at the listener, in order: `sent` (a command
  went out in a reply) and `result` (a device's report carried `result`); `record_command_updates`
  writes them to the database and raises the events. Whoever adds the first entry after the job
  started sets `tracker:commands:recording` and enqueues it, RECORD_AFTER_S later.

Claiming is one Lua call (LPOP, expired commands skipped), so a command goes out at most once even
when two requests of one device arrive together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from tracker_jobs.core.errors import UNREACHABLE

log = logging.getLogger(__name__)

WAITING_KEY = "tracker:commands:waiting"
UPDATES_KEY = "tracker:commands:updates"
RECORDING_FLAG = "tracker:commands:recording"
INBOX_REFRESH_S = 1.0
MAX_RESULT = 4096  # a device's result is kept to this many characters
# The listener enqueues record_command_updates this long after the first entry since its last run: one run
# records a second's worth (each run costs a transaction and a job record besides its entries), and the
# device has its command already.
RECORD_AFTER_S = 1.0
SENT = "sent"
RESULT = "result"


def queue_key(device_id: int) -> str:
    return f"tracker:commands:queue:{device_id}"


_PUSH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[3]) - tonumber(redis.call('TIME')[1])
if ttl < 1 then ttl = 1 end
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
redis.call('SADD', KEYS[2], ARGV[2])
"""

# KEYS: the device's queue, the waiting set, the updates stream, the recording flag. ARGV: device id.
# Returns {} when nothing is due, else {entry, enqueue}: enqueue 1 when the caller must enqueue the job.
_CLAIM = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
while true do
  local raw = redis.call('LPOP', KEYS[1])
  if not raw then
    redis.call('SREM', KEYS[2], ARGV[1])
    return {}
  end
  local command = cjson.decode(raw)
  if tonumber(command['expires']) > now then
    if redis.call('LLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
    redis.call('XADD', KEYS[3], '*', 'kind', 'sent', 'id', command['id'], 'device', ARGV[1],
      'at', string.format('%.3f', now))
    local enqueue = redis.call('SET', KEYS[4], '1', 'NX', 'EX', 60) and 1 or 0
    return {raw, enqueue}
  end
end
"""

# KEYS: the device's queue, the waiting set. ARGV: the command id. 1 when it was taken out.
_REMOVE = """
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
for _, raw in ipairs(entries) do
  if cjson.decode(raw)['id'] == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, raw)
    if redis.call('LLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
    return 1
  end
end
return 0
"""

# KEYS: the updates stream, the recording flag. ARGV: field, value pairs. 1: enqueue the job.
_REPORT = """
redis.call('XADD', KEYS[1], '*', unpack(ARGV))
return redis.call('SET', KEYS[2], '1', 'NX', 'EX', 60) and 1 or 0
"""


async def push(redis: Redis, device_id: int, command_id: int, text: str, expires: float) -> None:
    """Queue the command for the device's next OsmAnd reply."""
    # The id as text: Lua's numbers are doubles, printed in exponent form past 14 digits.
    entry = orjson.dumps({"id": str(command_id), "text": text, "expires": expires}).decode()
    keys = [queue_key(device_id), WAITING_KEY]
    await redis.register_script(_PUSH)(keys=keys, args=[entry, device_id, int(expires) + 1])


async def remove(redis: Redis, device_id: int, command_id: int) -> bool:
    """Take the command out of the device's queue: False when it is no longer there (a reply took it)."""
    keys = [queue_key(device_id), WAITING_KEY]
    return bool(await redis.register_script(_REMOVE)(keys=keys, args=[command_id, device_id]))


@dataclass(frozen=True)
class Claimed:
    command_id: int
    text: str
    enqueue: bool  # the caller enqueues record_command_updates


async def claim(redis: Redis, device_id: int) -> Claimed | None:
    """The device's oldest queued command that has not expired, taken out of its queue (for good)."""
    keys = [queue_key(device_id), WAITING_KEY, UPDATES_KEY, RECORDING_FLAG]
    found = await redis.register_script(_CLAIM)(keys=keys, args=[device_id])
    if not found:
        return None
    entry = orjson.loads(found[0])
    return Claimed(int(entry["id"]), str(entry["text"]), bool(found[1]))


async def report_result(redis: Redis, device_id: int, result: str, command_id: int | None, at: float) -> bool:
    """A device's report carried `result`: queued for recording; whether the caller enqueues the job."""
    fields: list[Any] = ["kind", RESULT, "device", device_id, "result", result, "at", f"{at:.3f}"]
    if command_id is not None:
        fields += ["id", command_id]
    return bool(await redis.register_script(_REPORT)(keys=[UPDATES_KEY, RECORDING_FLAG], args=fields))


class Inbox:
    """The listener's copy of which devices have commands queued: a request from any other device
    costs no Redis call; the copy is read again when it is older than INBOX_REFRESH_S, once for all
    the requests that find it so."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.waiting: frozenset[int] = frozenset()
        self.read_at = float("-inf")
        self.reading: asyncio.Task[None] | None = None

    async def has_commands(self, device_id: int) -> bool:
        if time.monotonic() - self.read_at > INBOX_REFRESH_S:
            if self.reading is None or self.reading.done():
                self.reading = asyncio.create_task(self._read())
            # Every request meanwhile waits for the same read (one Redis call a second in all): one that
            # went on with the old copy would miss a command queued in the last second.
            await asyncio.shield(self.reading)
        return device_id in self.waiting

    def emptied(self, device_id: int) -> None:
        """A claim found nothing for the device: it costs no call again until the next read."""
        self.waiting = self.waiting - {device_id}

    async def _read(self) -> None:
        try:
            members = await self.redis.smembers(WAITING_KEY)  # type: ignore[misc]
        except UNREACHABLE as error:
            log.warning("could not read the devices with queued commands: %s", error)
            return
        self.waiting = frozenset(int(member) for member in members)
        self.read_at = time.monotonic()
