"""Group commit for accepting positions: requests that arrive while a Redis write is in flight share
the next one (one script call for the whole group, rate limits included), so a burst of
single-position requests costs a few round trips, not several each. Every caller still gets its
answer only after its own positions are in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from arq.connections import ArqRedis

from tracker_jobs.core.db import utcnow
from tracker_jobs.core.errors import Unavailable
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import RateLimit, accept_positions
from tracker_jobs.positions.stream import partition_of


class CannotAccept(Unavailable):
    """Redis (or, for a new device, the database) is out of reach or refuses writes: the sender keeps
    its positions and sends them again."""

    def __init__(self) -> None:
        super().__init__("cannot store positions right now; send again later")


@dataclass
class Answer:
    task_ids: list[str]  # drain jobs of the partitions the accepted positions went to
    waits_ms: list[int]  # per position: 0 accepted, else refused by its rate limit for this long


@dataclass
class _Request:
    items: Sequence[PositionRecord]
    limit: RateLimit | None
    done: asyncio.Future[Answer]


class Acceptor:
    def __init__(self, redis: ArqRedis, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self.waiting: list[_Request] = []
        self.writer: asyncio.Task[None] | None = None

    async def accept(self, items: Sequence[PositionRecord], limit: RateLimit | None = None) -> Answer:
        """Answer once the positions (each with its device id) are in Redis (those within `limit`);
        raise what the write raised."""
        request = _Request(items, limit, asyncio.get_running_loop().create_future())
        self.waiting.append(request)
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write())
        return await request.done

    async def _write(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting, []
            positions = [(position, request.limit) for request in group for position in request.items]
            try:
                # The server time of a group is when its write starts: no position is stamped before it arrived.
                accepted = await accept_positions(self.redis, self.partitions, positions, utcnow())
            except Exception as error:  # every waiter hears the failure and answers its device
                for request in group:
                    if not request.done.done():
                        request.done.set_exception(error)
                continue
            offset = 0
            for request in group:
                waits = accepted.waits_ms[offset : offset + len(request.items)]
                offset += len(request.items)
                used = dict.fromkeys(
                    partition_of(position.device_id, self.partitions)
                    for position, wait in zip(request.items, waits, strict=True)
                    if not wait
                )
                if not request.done.done():
                    request.done.set_result(Answer([accepted.job_ids[p] for p in used], waits))
