"""Device statistics over a time range: distance, max and average speed, moving time, positions.

Computed by the database in one aggregate over the range (a month of a busy device never travels to
the admin process), and cached in Redis, since the same ranges are asked for again and again (today's,
by every dashboard). `distance` is the odometer's advance over the range: the pipeline's per-position
`distance` (from the position before it) added up from the range's second position on, which is
every metre the device moved, the summary report's `distance` too while positions arrive in order (a
late position adds nothing to the odometer, while the report walks the track in fix-time order); the
report's `drivingDistance` counts only the road inside trips.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.core.db import dialect_name
from tracker_jobs.core.redis import cache_key
from tracker_jobs.positions.models import Position

CACHE_TTL_S = 60


async def summarise(
    session: AsyncSession, device_id: int, start: datetime, end: datetime, motion_speed_kn: float
) -> dict[str, Any]:
    """Statistics of one device's positions from `start` to `end` (speeds in knots, times in seconds).
    Moving: a speed above `motion_speed_kn`; moving time is the time from each moving fix to the next."""
    fix_time = col(Position.fix_time)
    if dialect_name(session) == "postgresql":
        epoch_s: sa.ColumnElement[Any] = sa.extract("epoch", fix_time)
    else:
        epoch_s = sa.func.julianday(fix_time) * 86_400.0  # SQLite keeps times as text
    step_m = sa.func.coalesce(sa.type_coerce(col(Position.attributes), sa.JSON())["distance"].as_float(), 0.0)
    in_range = (
        sa.select(
            col(Position.speed).label("speed"),
            (sa.func.lead(epoch_s).over(order_by=fix_time) - epoch_s).label("gap_s"),
            step_m.label("step_m"),
            sa.func.first_value(step_m).over(order_by=fix_time).label("first_step_m"),  # from before the range
        )
        .where(col(Position.device_id) == device_id, fix_time >= start, fix_time <= end)
        .subquery()
    )
    moving = in_range.c.speed > motion_speed_kn
    count, top, average, moving_s, distance = (
        await session.execute(
            sa.select(
                sa.func.count(),
                sa.func.max(in_range.c.speed),
                sa.func.avg(sa.case((moving, in_range.c.speed))),
                sa.func.sum(sa.case((moving, in_range.c.gap_s))),
                sa.func.sum(in_range.c.step_m) - sa.func.max(in_range.c.first_step_m),
            )
        )
    ).one()
    return {
        "positions": count,
        "distance": round(float(distance or 0.0), 2),
        "maxSpeed": float(top or 0.0),
        "averageSpeed": round(float(average or 0.0), 3),  # while moving
        "movingTime": round(float(moving_s or 0.0), 3),
    }


def statistics_key(device_id: int, start: datetime, end: datetime) -> str:
    return cache_key("device-stats", device_id, int(start.timestamp()), int(end.timestamp()))


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
    result = {
        "deviceId": device_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        **await summarise(session, device_id, start, end, motion_speed_kn),
    }
    await redis.set(key, orjson.dumps(result), ex=CACHE_TTL_S)
    return result


def today_range(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """From local midnight (in the configured time zone) to now, as UTC."""
    local = now.astimezone(ZoneInfo(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(UTC), now
