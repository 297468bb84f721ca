"""Accepting positions into Redis and draining them into the database; reading them back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.db import iso, transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.devices.service import visible_device_ids
from tracker_jobs.positions import stream
from tracker_jobs.positions.decode import DecodedPosition
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.store import position_row, store_positions
from tracker_jobs.queues import enqueue
from tracker_jobs.users.service import Principal

DRAIN_JOB = "process_position_batch"


def encode_position(device_id: int, position: DecodedPosition, server_time: datetime) -> bytes:
    return orjson.dumps(
        {
            "device_id": device_id,
            "protocol": position.protocol,
            "fix_time": position.fix_time.timestamp(),
            "server_time": server_time.timestamp(),
            "latitude": position.latitude,
            "longitude": position.longitude,
            "altitude": position.altitude,
            "speed": position.speed,
            "course": position.course,
            "accuracy": position.accuracy,
            "valid": position.valid,
            "attributes": position.attributes,
        }
    )


async def accept_positions(
    redis: ArqRedis,
    partitions: int,
    positions: Sequence[tuple[int, DecodedPosition]],
    server_time: datetime,
) -> None:
    """Put positions in their partitions' streams and make sure a drain job will run for each.

    When this returns, the positions are in Redis: the caller may answer the device 2xx.
    """
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for device_id, position in positions:
        by_partition[stream.partition_of(device_id, partitions)].append(
            encode_position(device_id, position, server_time)
        )
    for partition in await stream.append(redis, by_partition):
        await enqueue(redis, DRAIN_JOB, partition=partition)


async def schedule_backlog(redis: ArqRedis, partitions: int) -> list[int]:
    """Enqueue a drain for every partition with waiting entries and no drain scheduled."""
    waiting = await stream.unscheduled_backlog(redis, partitions)
    for partition in waiting:
        await enqueue(redis, DRAIN_JOB, partition=partition)
    return waiting


@dataclass
class DrainResult:
    partition: int
    batches: int = 0
    entries: int = 0
    stored: int = 0
    locked_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "batches": self.batches,
            "entries": self.entries,
            "stored": self.stored,
            "lockedOut": self.locked_out,
        }


async def drain_partition(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
    partition: int,
    *,
    consumer: str,
    batch_size: int,
) -> DrainResult:
    """Store everything waiting in one partition, a batch at a time, acknowledging each after commit."""
    result = DrainResult(partition)
    await redis.delete(stream.scheduled_key(partition))  # before reading: see the module's docstring
    await stream.ensure_group(redis, partition)
    lock = stream.PartitionLock(redis, partition)
    if not await lock.acquire(wait_s=stream.LOCK_TTL_MS / 1000 + 5):
        result.locked_out = True
        return result
    try:
        while entries := await stream.read_batch(redis, partition, consumer, batch_size):
            rows = [position_row(fields[b"p"]) for _, fields in entries]
            async with transaction(sessions) as session:
                result.stored += await store_positions(session, rows)
            await stream.acknowledge(redis, partition, [entry_id for entry_id, _ in entries])
            await lock.refresh()
            result.batches += 1
            result.entries += len(entries)
    finally:
        await lock.release()
    return result


def position_to_api(position: Position) -> dict[str, Any]:
    """A position in Traccar's field names."""
    return {
        "id": position.id,
        "deviceId": position.device_id,
        "protocol": position.protocol,
        "fixTime": iso(position.fix_time),
        "serverTime": iso(position.server_time),
        "valid": position.valid,
        "latitude": position.latitude,
        "longitude": position.longitude,
        "altitude": position.altitude,
        "speed": position.speed,
        "course": position.course,
        "accuracy": position.accuracy,
        "attributes": position.attributes,
    }


async def list_positions(
    session: AsyncSession,
    principal: Principal,
    device_ids: list[int],
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[Position]:
    """Positions in a time range (ordered per device by fix time), or each visible device's latest."""
    query = select(Position).where(col(Position.device_id).in_(visible_device_ids(principal)))
    if device_ids:
        query = query.where(col(Position.device_id).in_(device_ids))
    if start is None and end is None:
        latest = select(Device.position_id).where(col(Device.position_id).is_not(None))
        query = query.where(col(Position.id).in_(latest))
        return list((await session.execute(query.order_by(col(Position.device_id)))).scalars())
    if start is not None:
        query = query.where(col(Position.fix_time) >= start)
    if end is not None:
        query = query.where(col(Position.fix_time) <= end)
    query = query.order_by(col(Position.device_id), col(Position.fix_time)).limit(limit)
    return list((await session.execute(query)).scalars())
