"""What a worker process is doing, published to Redis every few seconds so the admin app can count workers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

WORKERS_KEY = "tracker:workers"
HEARTBEAT_INTERVAL_S = 5.0
LOST_AFTER_S = 3 * HEARTBEAT_INTERVAL_S  # silent for three heartbeats: lost
DROPPED_AFTER_S = 10 * HEARTBEAT_INTERVAL_S
log = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    """This process's queues and job counters; the job base updates them, the heartbeat publishes them."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    queues: set[str] = field(default_factory=set)
    concurrency: dict[str, int] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # job id -> job name
    done: int = 0
    failed: int = 0

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}"

    def job_started(self, job_id: str, name: str) -> None:
        self.running[job_id] = name

    def job_ended(self, job_id: str, *, failed: bool) -> None:
        self.running.pop(job_id, None)
        if failed:
            self.failed += 1
        else:
            self.done += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "host": self.host,
            "pid": self.pid,
            "queues": sorted(self.queues),
            "concurrency": self.concurrency,
            "running": [{"id": job_id, "name": name} for job_id, name in self.running.items()],
            "done": self.done,
            "failed": self.failed,
            "started": self.started,
            "lastSeen": time.time(),
        }

    async def beat(self, redis: Redis) -> None:
        await redis.hset(WORKERS_KEY, self.key, orjson.dumps(self.snapshot()))  # type: ignore[misc,arg-type]

    async def beat_forever(self, redis: Redis) -> None:
        while True:
            try:
                await self.beat(redis)
            except Exception as error:  # Redis gone: keep beating, the worker reconnects by itself
                log.warning("heartbeat failed: %s", error)
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def remove(self, redis: Redis) -> None:
        await redis.hdel(WORKERS_KEY, self.key)  # type: ignore[misc]


CURRENT_PROCESS = WorkerProcess()


async def live_workers(redis: Redis) -> list[dict[str, object]]:
    """Every worker process that has beaten recently, with `state` live or lost; long-silent ones are dropped."""
    now = time.time()
    workers: list[dict[str, object]] = []
    stale: list[bytes] = []
    beats: dict[bytes, bytes] = await redis.hgetall(WORKERS_KEY)  # type: ignore[misc]
    for key, raw in beats.items():
        worker = orjson.loads(raw)
        silent_s = now - float(worker["lastSeen"])
        if silent_s > DROPPED_AFTER_S:
            stale.append(key)
            continue
        worker["state"] = "lost" if silent_s > LOST_AFTER_S else "live"
        workers.append(worker)
    if stale:
        await redis.hdel(WORKERS_KEY, *stale)  # type: ignore[misc,arg-type]
    return workers
