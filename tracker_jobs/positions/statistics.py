"""Device statistics over a time range: distance, max and average speed, moving time, positions.

Computed vectorised from the stored positions; cached in Redis, since the same ranges are asked for
again and again (today's, by every dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.core.geo import haversine_m
from tracker_jobs.positions.models import Position

CACHE_TTL_S = 60


def summarise(
    fix_times: np.ndarray, lats: np.ndarray, lons: np.ndarray, speeds: np.ndarray, motion_speed_kn: float
) -> dict[str, Any]:
    """Statistics of one device's positions, sorted by fix time (epoch seconds; speeds in knots)."""
    count = len(fix_times)
    if count == 0:
        return {"positions": 0, "distance": 0.0, "maxSpeed": 0.0, "averageSpeed": 0.0, "movingTime": 0.0}
    steps = haversine_m(lats[:-1], lons[:-1], lats[1:], lons[1:])
    moving = speeds[:-1] > motion_speed_kn
    return {
        "positions": count,
        "distance": round(float(steps.sum()), 2),
        "maxSpeed": float(speeds.max()),
        "averageSpeed": round(float(speeds.mean()), 3),
        "movingTime": float(np.diff(fix_times)[moving].sum()),  # seconds spent between a moving fix and the next
    }


def statistics_key(device_id: int, start: datetime, end: datetime) -> str:
    return f"tracker:device-stats:{device_id}:{int(start.timestamp())}:{int(end.timestamp())}"


async def device_statistics(
    session: AsyncSession,
    redis: Redis,
    device_id: int,
    start: datetime,
    end: datetime,
    motion_speed_kn: float,
    *,
    refresh: bool = False,
) -> dict[str, Any]:
    """The device's statistics from `start` to `end`, from the cache unless `refresh`."""
    key = statistics_key(device_id, start, end)
    if not refresh and (cached := await redis.get(key)) is not None:
        found: dict[str, Any] = orjson.loads(cached)
        return found
    query = (
        sa.select(col(Position.fix_time), col(Position.latitude), col(Position.longitude), col(Position.speed))
        .where(col(Position.device_id) == device_id, col(Position.fix_time) >= start, col(Position.fix_time) <= end)
        .order_by(col(Position.fix_time))
    )
    rows = (await session.execute(query)).all()
    times = np.fromiter((row[0].timestamp() for row in rows), dtype=np.float64, count=len(rows))
    columns = np.array([row[1:] for row in rows], dtype=np.float64).reshape(len(rows), 3)
    result = {
        "deviceId": device_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        **summarise(times, columns[:, 0], columns[:, 1], columns[:, 2], motion_speed_kn),
    }
    await redis.set(key, orjson.dumps(result), ex=CACHE_TTL_S)
    return result


def today_range(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """From local midnight (in the configured time zone) to now, as UTC."""
    local = now.astimezone(ZoneInfo(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(UTC), now
