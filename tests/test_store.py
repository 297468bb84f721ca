"""Storing a batch exactly once: a batch run again after a crash (stored, not yet acknowledged)
stores nothing twice and leaves the devices where they were."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, func, select

from tests.test_batch_api import add_device
from tracker_jobs.devices.models import Device
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.pipeline import PipelineConfig
from tracker_jobs.positions.service import store_batch

T0 = 1_767_225_600.0


def rows(device_id: int) -> list[dict[str, Any]]:
    return [{"device_id": device_id, "protocol": "osmand", "fix_time": T0 + second, "server_time": T0 + 100,
             "latitude": 10.0 + second * 0.0001, "longitude": 20.0, "altitude": 0.0, "speed": 12.0, "course": 0.0,
             "accuracy": 5.0, "valid": True, "attributes": {}}
            for second in range(50)]  # fmt: skip


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
    async with sessions() as session:
        count = (await session.execute(select(func.count()).select_from(Position))).scalar_one()
        device = await session.get(Device, device_id)
        assert device is not None
        newest = (await session.execute(select(Position).where(col(Position.id) == device.position_id))).scalar_one()
    assert count == 50
    assert (device.position_id, device.total_distance) == (position_id, odometer)
    assert newest.fix_time.timestamp() == T0 + 49
    assert odometer > 500  # 49 steps of ~11 m
