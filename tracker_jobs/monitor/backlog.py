"""What waits in each queue right now, read from arq's Redis structures in one round trip per queue.

arq keeps a job in the queue's sorted set (score: when it may run, in ms) until it finishes, and marks
a running job with an `arq:in-progress:` key; so waiting = due and not running, deferred = score ahead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from tracker_jobs.jobs.base import queue_key
from tracker_jobs.jobs.refs import QUEUES

# Running jobs sit among the oldest entries; this many are looked at to find them and the oldest waiting one.
HEAD_SCAN = 1_000
_BACKLOG_SCRIPT = """
local total = redis.call('ZCARD', KEYS[1])
local due = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local head = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local running = 0
local oldest = -1
for i = 1, #head, 2 do
  if redis.call('EXISTS', ARGV[2] .. head[i]) == 1 then
    running = running + 1
  elseif oldest < 0 then
    oldest = tonumber(head[i + 1])
  end
end
return {total, due, running, oldest}
"""


@dataclass(frozen=True)
class QueueBacklog:
    name: str
    waiting: int  # due and not running
    running: int
    deferred: int  # retries in backoff and jobs deferred to later
    oldest_waiting_age_s: float | None

    def as_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "length": self.waiting + self.deferred,
            "waiting": self.waiting,
            "running": self.running,
            "deferred": self.deferred,
            "oldestWaitingAgeS": self.oldest_waiting_age_s,
        }


async def queue_backlogs(redis: Redis) -> list[QueueBacklog]:
    now_ms = int(time.time() * 1000)
    script = redis.register_script(_BACKLOG_SCRIPT)
    async with redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            await script(keys=[queue_key(queue)], args=[now_ms, in_progress_key_prefix, HEAD_SCAN], client=pipe)
        replies: list[list[int]] = await pipe.execute()
    backlogs = []
    for queue, (total, due, running, oldest_ms) in zip(QUEUES, replies, strict=True):
        age = None if oldest_ms < 0 else round(max(now_ms - oldest_ms, 0) / 1000, 3)
        backlogs.append(QueueBacklog(queue, due - running, running, total - due, age))
    return backlogs
