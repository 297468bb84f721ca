"""The checks a cleanup's arguments pass, the same whether they come from the cleanup API (a 400 naming
the field) or a job run by hand or by the cron (the job fails saying so)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.cleanup.retention import MAX_RETENTION_DAYS
from tracker_jobs.core.errors import FieldError
from tracker_jobs.devices.models import Device

MAX_DEVICE_IDS = 10_000


def check_days(days_to_keep: int | None, default: int) -> int:
    """Days to keep: the given whole number (0: for ever), or the setting's `default`."""
    if days_to_keep is None:
        return default
    if isinstance(days_to_keep, bool) or not isinstance(days_to_keep, int):
        raise FieldError("days_to_keep", "must be a whole number of days")
    if not 0 <= days_to_keep <= MAX_RETENTION_DAYS:
        raise FieldError("days_to_keep", f"must be from 0 (keep for ever) to {MAX_RETENTION_DAYS}")
    return days_to_keep


async def check_device_ids(sessions: async_sessionmaker[AsyncSession], device_ids: Sequence[int] | None) -> None:
    """Every named device exists (a cleanup of a device that is not there is a mistake worth saying)."""
    if device_ids is None:
        return
    if not device_ids or len(device_ids) > MAX_DEVICE_IDS:
        raise FieldError("device_ids", f"must name from 1 to {MAX_DEVICE_IDS} devices (leave it out for all)")
    async with sessions() as session:
        found = set((await session.execute(select(Device.id).where(col(Device.id).in_(device_ids)))).scalars())
    unknown = sorted(set(device_ids) - found)
    if unknown:
        raise FieldError("device_ids", f"no device {', '.join(map(str, unknown[:10]))}")
