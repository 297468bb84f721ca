"""Accepting positions into Redis, draining them through the pipeline into the database, reading them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.db import reading, transaction
from tracker_jobs.core.principal import Principal
from tracker_jobs.core.trip_rule import trip_defaults
from tracker_jobs.devices.keys import rate_key
from tracker_jobs.devices.models import Device, DeviceStatus
from tracker_jobs.devices.service import visible_device_ids
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import PROCESS_POSITION_BATCH
from tracker_jobs.monitor.counters import POSITIONS_DROPPED, POSITIONS_STORED
from tracker_jobs.positions import live, stream
from tracker_jobs.positions.detectors import (
    DETECTORS,
    DetectMaintenance,
    DetectOverspeed,
    load_maintenance_reminders,
)
from tracker_jobs.positions.geofencing import DetectGeofences, ShapeCache, load_geofencing
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.motion_events import load_motion, place_motion_events
from tracker_jobs.positions.pipeline import PIPELINE, DetectedEvent, PipelineConfig, Step, run_pipeline
from tracker_jobs.positions.record import PositionRecord, from_entry, iso_epoch, to_entry_item
from tracker_jobs.positions.store import (
    REFUSED_FOR_GOOD,
    StoredDevice,
    insert_positions,
    load_devices,
    load_maintenance,
    move_devices,
    store_events,
)

log = logging.getLogger(__name__)
ENTRIES_PER_READ = 10  # entries hold up to thousands of positions: read a few at a time
MAX_DRAIN_S = 60.0  # a drain under endless load hands over, so no job runs into its time limit


@dataclass(frozen=True)
class RateLimit:
    """Positions one device may send per window (the listener's per-device limit)."""

    limit: int
    window_s: int


@dataclass
class Accepted:
    job_ids: dict[int, str]  # partition -> its drain job
    waits_ms: list[int]  # per position: 0 accepted, else refused by its device's rate limit for this long


async def accept_positions(
    redis: ArqRedis,
    partitions: int,
    positions: Sequence[tuple[PositionRecord, RateLimit | None]],
    server_time: datetime,
) -> Accepted:
    """Put positions (each with its device id) in their partitions' streams (those within their rate
    limit), stamped with `server_time`, and make sure a drain job will run for each partition. When
    this returns, the caller may answer 2xx for every position whose wait is 0."""
    bulk: dict[int, list[bytes]] = defaultdict(list)
    limited: list[stream.Limited] = []
    limited_at: list[int] = []
    window_s = 60
    stamp = server_time.timestamp()
    for index, (position, limit) in enumerate(positions):
        position.server_time = stamp
        partition = stream.partition_of(position.device_id, partitions)
        payload = to_entry_item(position)
        if limit is None:
            bulk[partition].append(payload)
        else:
            limited.append(stream.Limited(partition, payload, rate_key(position.device_id), limit.limit))
            limited_at.append(index)
            window_s = limit.window_s
    scheduled = await stream.append(redis, bulk, limited, window_s)
    for partition, job_id in scheduled.new.items():
        await enqueue(redis, PROCESS_POSITION_BATCH, job_id=job_id, partition=partition)
    waits = [0] * len(positions)
    for index, wait in zip(limited_at, scheduled.waits_ms, strict=True):
        waits[index] = wait
    return Accepted(job_ids=scheduled.job_ids, waits_ms=waits)


async def schedule_backlog(redis: ArqRedis, partitions: list[int]) -> list[int]:
    """Enqueue a drain for each of these partitions with waiting entries and no drain scheduled."""
    waiting = await stream.unscheduled(redis, partitions)
    for partition, job_id in waiting.items():
        await enqueue(redis, PROCESS_POSITION_BATCH, job_id=job_id, partition=partition)
    return sorted(waiting)


@dataclass
class DrainResult:
    partition: int
    batches: int = 0
    entries: int = 0
    stored: int = 0
    events: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    set_aside: int = 0  # refused by the database for good: kept in the set-aside stream
    locked_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "batches": self.batches,
            "entries": self.entries,
            "stored": self.stored,
            "events": self.events,
            "dropped": dict(self.dropped),
            "setAside": self.set_aside,
            "lockedOut": self.locked_out,
        }


@dataclass
class BatchOutcome:
    stored: int
    dropped: Counter[str]
    events: int  # stored by this batch
    deliveries: list[int]  # owed by those events: enqueue once the batch commits
    newest: list[tuple[float, dict[str, Any]]]  # (fix time, API position) per device moved forward
    devices: list[dict[str, Any]]  # API device changes


async def store_batch(
    sessions: async_sessionmaker[AsyncSession],
    records: list[PositionRecord],
    config: PipelineConfig,
    now: float,
    shapes: ShapeCache | None = None,
) -> BatchOutcome:
    """Pipeline and store one batch, its positions and events in one transaction; say what changed
    for live updates. `shapes`: the worker's parsed geofences (None: no geofence detection).
    What the pipeline reads (the devices, their newest positions and detector state) is read outside any
    transaction, and the pipeline runs before the write's: the tables are held only while a statement
    reads them and while the batch is written, not while Python works (which, beside the process's other
    drains, can take long; table DDL waits for every transaction in flight). Only this drain (it holds
    the partition's lock) moves its devices forward, so nothing it read changes meanwhile."""
    async with reading(sessions) as session:
        devices = await load_devices(session, (record.device_id for record in records))
        dropped: Counter[str] = Counter()
        usable = []
        for record in records:
            device = devices.get(record.device_id)
            if device is None or device.disabled:
                dropped["unknownDevice" if device is None else "disabled"] += 1
            else:
                usable.append(record)
        steps: tuple[Step, ...] = (*PIPELINE, *DETECTORS)
        fenced = [device.id for device in devices.values() if device.geofenced]
        geofencing = await load_geofencing(session, fenced, shapes) if shapes is not None and fenced else None
        if geofencing is not None:
            steps = (*steps, DetectGeofences(geofencing))
        limits = {device.id: device.speed_limit for device in devices.values() if device.speed_limit}
        geofence_limits = geofencing.speed_limits if geofencing is not None else {}
        if limits or geofence_limits:
            multiplier, minimal_s = config.overspeed_multiplier, config.overspeed_minimal_s
            steps = (*steps, DetectOverspeed(limits, multiplier, minimal_s, geofence_limits))
        if maintained := [device.id for device in devices.values() if device.maintained]:
            steps = (*steps, DetectMaintenance(await load_maintenance(session, maintained)))
            steps = (*steps, await load_maintenance_reminders(session, maintained))
        steps = (*steps, await load_motion(session, devices, trip_defaults(config)))
    states = {d.id: d.state for d in devices.values() if d.state}
    result = run_pipeline(usable, states, config, now, steps=steps)
    seen: dict[int, float] = {}
    for record in result.kept:
        seen[record.device_id] = max(seen.get(record.device_id, 0.0), record.server_time)
    # A device that was not online is now: deviceOnline, at its newest position (a device that
    # sent only late positions is online again, but late positions make no event).
    back = [result.newest[d] for d in seen if devices[d].status != DeviceStatus.ONLINE and d in result.newest]
    found = [*result.events, *(DetectedEvent(record, "deviceOnline", 0) for record in back)]
    wanted = [(device_id, record.fix_time) for device_id, record in result.newest.items()]
    wanted += [(event.position.device_id, event.position.fix_time) for event in found]
    async with transaction(sessions) as session:
        inserted = await insert_positions(session, result.kept, wanted)
        ids = inserted.ids
        dropped.update(result.dropped)
        dropped["duplicate"] += len(result.kept) - inserted.stored  # kept, but stored already by an earlier run
        await move_devices(session, seen, result.newest, ids, result.motion_states)
        found = await place_motion_events(session, found, ids)
        recorded = await store_events(session, found, ids, datetime.fromtimestamp(now, UTC), config.notify_max_age_s)
    newest = []
    for device_id, record in result.newest.items():
        record.id = ids.get((device_id, record.fix_time))
        if record.id is not None:
            newest.append((record.fix_time, record.to_api()))
    changes = [
        _device_change(devices[device_id], server_time, result.newest.get(device_id))
        for device_id, server_time in seen.items()
    ]
    return BatchOutcome(
        stored=inserted.stored,
        dropped=+dropped,
        events=len(recorded.events),
        deliveries=recorded.deliveries,
        newest=newest,
        devices=changes,
    )


def _device_change(device: StoredDevice, server_time: float, newest: PositionRecord | None) -> dict[str, Any]:
    change: dict[str, Any] = {
        "id": device.id,
        "name": device.name,
        "uniqueId": device.unique_id,
        "status": "online",
        "lastUpdate": iso_epoch(server_time),
    }
    if newest is not None and newest.id is not None:
        change["positionId"] = newest.id
        change["totalDistance"] = newest.attributes["totalDistance"]
        change["motion"] = newest.attributes["motion"]
    return change


async def drain_partition(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
    partition: int,
    *,
    consumer: str,
    batch_size: int,
    config: PipelineConfig,
    shapes: ShapeCache | None = None,
    gate: asyncio.Semaphore | None = None,
) -> DrainResult:
    """Store everything waiting in one partition, a batch at a time, acknowledging each after commit.
    `gate`: shared by the process's drains, so that only so many batches run at once; the others wait
    their turn before they read, and so read more (see `batch_gate`)."""
    result = DrainResult(partition)
    await stream.ensure_group(redis, partition)
    lock = stream.PartitionLock(redis, partition)
    if not await lock.acquire():
        # Leave the flag set, so accepts do not pile up jobs: the holder clears it and re-checks the
        # stream when it lets go, so whatever this job was for is drained.
        result.locked_out = True
        return result
    deadline = time.monotonic() + MAX_DRAIN_S
    try:
        await redis.delete(stream.scheduled_key(partition))  # before reading: see stream's docstring
        while time.monotonic() < deadline and not lock.lost:
            async with gate or contextlib.nullcontext():
                if time.monotonic() >= deadline or lock.lost:  # it may have waited its turn a while
                    break
                # Before reading: a drain held up by table DDL then reads what arrived meanwhile with
                # its batch, rather than storing a batch read before the pause and only then the rest.
                await stream.wait_while_paused(redis)
                entries = await _next_batch(redis, partition, consumer, batch_size)
                if not entries:
                    break
                records = [record for _, fields in entries for record in from_entry(fields[b"p"])]
                try:
                    outcome = await store_batch(sessions, records, config, datetime.now(UTC).timestamp(), shapes)
                except REFUSED_FOR_GOOD:
                    # A batch the database refuses for good must not stall its partition: set it aside
                    # (kept, for an operator) and go on with the rest. Anything else (the database away,
                    # a device deleted meanwhile) fails the job, and the entries wait to be run again.
                    log.exception(
                        "setting aside %d positions of partition %d the database refuses", len(records), partition
                    )
                    await stream.set_aside(redis, partition, entries)
                    result.set_aside += len(records)
                    continue
                counts = {POSITIONS_STORED: outcome.stored, POSITIONS_DROPPED: sum(outcome.dropped.values())}
                await live.publish_batch(redis, outcome.newest, outcome.devices, counts)
                await enqueue_deliveries(redis, outcome.deliveries)
                await stream.acknowledge(redis, partition, [entry_id for entry_id, _ in entries])
                result.batches += 1
                result.entries += len(records)
                result.stored += outcome.stored
                result.events += outcome.events
                result.dropped.update(outcome.dropped)
    finally:
        await lock.release()
    # Whatever arrived while this drain held the lock (a job turned away left the flag set for it),
    # or a drain cut short by its deadline left: hand it to a fresh drain.
    await redis.delete(stream.scheduled_key(partition))
    await schedule_backlog(redis, [partition])
    return result


def batch_gate(cpus: int | None = None) -> asyncio.Semaphore:
    """How many batches one worker process runs at once: two per CPU it may run on (a batch waits on the database for
    part of its time). Its partitions' drains take turns beyond that: on a busy machine more batches at
    once only stretch each one, each of them smaller, paying its fixed cost more often; waiting for its
    turn, a drain reads what arrived meanwhile in one batch."""
    return asyncio.Semaphore(2 * (cpus or len(os.sched_getaffinity(0)) or 1))


async def _next_batch(
    redis: ArqRedis, partition: int, consumer: str, batch_size: int
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Stream entries holding about `batch_size` positions (an entry holds one request group's):
    every unacknowledged entry first, oldest first, so a device's positions stay in order after an
    interrupted drain; then new ones."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    positions, cursor = 0, b"0-0"
    while positions < batch_size:
        claimed, cursor = await stream.claim_entries(redis, partition, consumer, ENTRIES_PER_READ, cursor)
        entries.extend(claimed)
        positions += sum(int(fields[b"n"]) for _, fields in claimed)
        if cursor == b"0-0":
            break
    while positions < batch_size and cursor == b"0-0":
        more = await stream.read_new_entries(redis, partition, consumer, ENTRIES_PER_READ)
        if not more:
            break
        entries.extend(more)
        positions += sum(int(fields[b"n"]) for _, fields in more)
    return entries


async def visible_ids(session: AsyncSession, principal: Principal, device_ids: list[int]) -> list[int]:
    query = visible_device_ids(principal)
    rows = (await session.execute(query)).scalars().all()
    allowed = [device_id for device_id in rows if device_id is not None]
    return [d for d in allowed if d in set(device_ids)] if device_ids else allowed


async def latest_positions(
    session: AsyncSession, redis: ArqRedis, principal: Principal, device_ids: list[int]
) -> list[dict[str, Any]]:
    """Each visible device's newest position: from the live cache, the database for any it lacks."""
    ids = await visible_ids(session, principal, device_ids)
    cached = await live.latest_positions(redis, ids)
    missing = set(ids) - {position["deviceId"] for position in cached}
    if missing:
        newest = select(Device.position_id).where(col(Device.id).in_(missing))
        stored = (await session.execute(select(Position).where(col(Position.id).in_(newest)))).scalars()
        cached.extend(PositionRecord.from_row(position.model_dump()).to_api() for position in stored)
    return sorted(cached, key=lambda position: position["deviceId"])


async def positions_in_range(
    session: AsyncSession,
    principal: Principal,
    device_ids: list[int],
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Positions in a time range, ordered per device by fix time."""
    query = select(Position).where(col(Position.device_id).in_(visible_device_ids(principal)))
    if device_ids:
        query = query.where(col(Position.device_id).in_(device_ids))
    if start is not None:
        query = query.where(col(Position.fix_time) >= start)
    if end is not None:
        query = query.where(col(Position.fix_time) <= end)
    query = query.order_by(col(Position.device_id), col(Position.fix_time)).limit(limit)
    stored = (await session.execute(query)).scalars()
    return [PositionRecord.from_row(position.model_dump()).to_api() for position in stored]
