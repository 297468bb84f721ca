"""Storing a batch exactly once: a batch run again after a crash (stored, not yet acknowledged)
stores nothing twice and leaves the devices where they were."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, func, select

from tests.support.factories import add_device
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.positions import stream
from tracker_jobs.positions.decode import typed_value
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.pipeline import PipelineConfig
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import accept_positions, batch_gate, drain_partition, store_batch
from tracker_jobs.positions.store import move_devices

T0 = 1_767_225_600.0


def rows(device_id: int) -> list[PositionRecord]:
    return [
        PositionRecord(
            device_id=device_id,
            fix_time=T0 + second,
            server_time=T0 + 100,
            latitude=10.0 + second * 0.0001,
            longitude=20.0,
            speed=12.0,
            accuracy=5.0,
        )
        for second in range(50)
    ]


async def stored_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(Position))).scalar_one()


async def stored_state(sessions: async_sessionmaker[AsyncSession], device_id: int) -> tuple[int, Device, Position]:
    """Positions stored in all, the device, and the position it points at as its newest."""
    count = await stored_count(sessions)
    async with sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        newest = (await session.execute(select(Position).where(col(Position.id) == device.position_id))).scalar_one()
    return count, device, newest


async def test_a_batch_run_twice_is_stored_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    device_id = await add_device(sessions, "twice")
    first = await store_batch(sessions, rows(device_id), PipelineConfig(), T0 + 200)
    assert first.stored == 50
    assert first.dropped == {}
    async with sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        position_id, odometer = device.position_id, device.total_distance
    again = await store_batch(sessions, rows(device_id), PipelineConfig(), T0 + 300)
    assert again.stored == 0
    assert again.dropped == {"duplicate": 50}
    assert again.newest == []
    count, device, newest = await stored_state(sessions, device_id)
    assert count == 50
    assert (device.position_id, device.total_distance) == (position_id, odometer)
    assert newest.fix_time.timestamp() == T0 + 49
    assert odometer > 500  # 49 steps of ~11 m


async def test_every_seen_device_comes_online_and_only_a_newer_position_moves_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    names = ("ahead", "behind", "seen-only", "first-position")
    ahead, behind, silent, fresh = [await add_device(sessions, name) for name in names]
    for device_id in (ahead, behind, silent):
        await store_batch(sessions, rows(device_id), PipelineConfig(), T0 + 200)
    async with transaction(sessions) as session:
        for device_id in (ahead, behind, silent, fresh):
            device = await session.get(Device, device_id)
            assert device is not None
            device.status, device.motion_state = "offline", {"kept": device_id}

    async def read() -> dict[int, Device]:
        async with sessions() as session:
            return {device_id: await session.get_one(Device, device_id) for device_id in (ahead, behind, silent, fresh)}

    before = await read()

    def record(device_id: int, fix_time: float) -> PositionRecord:
        attributes = {"totalDistance": 12_345.0 + device_id, "motion": True}
        return PositionRecord(
            device_id=device_id, fix_time=fix_time, latitude=1.0, longitude=2.0, attributes=attributes
        )

    # "behind" has a newest that is older than its stored one (a drain that lost its lock would): refused.
    # "fresh" has no stored position yet (position_time NULL) and no new motion state (it keeps its own).
    newest = {ahead: record(ahead, T0 + 60), behind: record(behind, T0 + 10), fresh: record(fresh, T0 + 5)}
    ids = {(ahead, T0 + 60): 9_000_001, (behind, T0 + 10): 9_000_002, (fresh, T0 + 5): 9_000_003}
    seen = dict.fromkeys((ahead, behind, silent, fresh), T0 + 300)
    async with transaction(sessions) as session:
        await move_devices(session, seen, newest, ids, {ahead: {"moved": True}})
    after = await read()
    for device in after.values():
        assert device.status == "online"
        assert device.last_update is not None
        assert device.last_update.timestamp() == T0 + 300
    moved = after[ahead]
    assert (moved.position_id, moved.total_distance, moved.motion, moved.motion_state) == (
        9_000_001,
        12_345.0 + ahead,
        True,
        {"moved": True},
    )
    assert moved.position_time is not None
    assert moved.position_time.timestamp() == T0 + 60
    first = after[fresh]
    assert before[fresh].position_time is None
    assert (first.position_id, first.total_distance, first.motion_state) == (
        9_000_003,
        12_345.0 + fresh,
        {"kept": fresh},
    )
    assert first.position_time is not None
    assert first.position_time.timestamp() == T0 + 5
    for device_id in (behind, silent):
        kept, was = after[device_id], before[device_id]
        assert (kept.position_id, kept.position_time, kept.total_distance, kept.motion, kept.motion_state) == (
            was.position_id,
            was.position_time,
            was.total_distance,
            was.motion,
            {"kept": device_id},
        )


async def test_a_rerun_batch_with_new_positions_stores_the_new_ones_atomically(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A drain killed after its commit and before its acknowledgement runs the batch again, perhaps
    with entries that arrived since: the stored part is skipped, the new part stored, in one transaction."""
    device_id = await add_device(sessions, "rerun")
    assert (await store_batch(sessions, rows(device_id)[:30], PipelineConfig(), T0 + 200)).stored == 30
    again = await store_batch(sessions, rows(device_id), PipelineConfig(), T0 + 300)
    assert (again.stored, again.dropped) == (20, {"duplicate": 30})
    count, _, newest = await stored_state(sessions, device_id)
    assert count == 50
    assert newest.fix_time.timestamp() == T0 + 49


async def test_an_interrupted_drain_resumes_in_order(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A drainer that died holding 30 entries: the next one stores them before newer ones, so the
    odometer runs along the whole track (a position handled after a newer one adds no distance)."""
    device_id = await add_device(sessions, "resumed")
    partition = stream.partition_of(device_id, settings.position_partitions)
    await stream.ensure_group(redis, partition)
    server = datetime.fromtimestamp(T0 + 100, UTC)

    def one(second: int) -> list[tuple[PositionRecord, None]]:
        position = PositionRecord(
            device_id=device_id, fix_time=T0 + second, latitude=10.0 + second * 0.0001, longitude=20.0, speed=12.0
        )
        return [(position, None)]

    for second in range(30):
        await accept_positions(redis, settings.position_partitions, one(second), server)
    dead = await stream.read_new_entries(redis, partition, "dead-worker", 100)  # read, never acknowledged
    assert len(dead) == 30
    for second in range(30, 40):
        await accept_positions(redis, settings.position_partitions, one(second), server)
    result = await drain_partition(
        redis, sessions, partition, consumer="next-worker", batch_size=5000, config=PipelineConfig()
    )
    assert result.stored == 40
    async with sessions() as session:
        device = await session.get(Device, device_id)
    assert device is not None
    assert device.total_distance == pytest.approx(39 * 11.132, rel=1e-3)


async def test_drains_take_turns_at_their_process_gate_and_read_what_waited_meanwhile(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """While the process's gate is held by other batches, a drain stores nothing; once it has its
    turn it stores everything that arrived while it waited, in one batch."""
    device_id = await add_device(sessions, "gated")
    partition = stream.partition_of(device_id, settings.position_partitions)
    server = datetime.fromtimestamp(T0 + 100, UTC)
    first, rest = rows(device_id)[:10], rows(device_id)[10:]
    await accept_positions(redis, settings.position_partitions, [(row, None) for row in first], server)
    gate = batch_gate(cpus=1)
    assert gate._value == 2  # two batches per CPU
    for _ in range(2):
        await gate.acquire()  # two batches of other partitions under way
    drain = asyncio.create_task(
        drain_partition(
            redis, sessions, partition, consumer="gated", batch_size=5000, config=PipelineConfig(), gate=gate
        )
    )
    await asyncio.sleep(0.3)
    assert not drain.done()
    assert (await stored_count(sessions)) == 0
    await accept_positions(redis, settings.position_partitions, [(row, None) for row in rest], server)
    gate.release()
    result = await asyncio.wait_for(drain, 10)
    assert (result.batches, result.stored) == (1, 50)


async def test_attributes_postgresql_cannot_store_are_refused_at_the_door(ingest_client: Any) -> None:
    response = await ingest_client.get("/", params={"id": "nul", "lat": "1", "lon": "2", "note": "a\x00b"})
    assert response.status == 400
    assert (await response.json())["error"]["message"] == "attributes: must not contain NUL characters"


def test_huge_whole_numbers_stay_text() -> None:
    assert typed_value("123456789012345678901234567890") == "123456789012345678901234567890"
    assert typed_value("-42") == -42
