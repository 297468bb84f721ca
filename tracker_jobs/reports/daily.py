"""The midnight reports: yesterday's summary and trips of every user's devices, one report per user."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.core.principal import Principal
from tracker_jobs.reports.builders import Progress, ReportRequest, no_progress
from tracker_jobs.reports.models import Report
from tracker_jobs.reports.service import parameters_of, run_report, visible_devices_among
from tracker_jobs.users.models import User

log = logging.getLogger(__name__)


def yesterday(now: datetime, timezone: str) -> tuple[str, datetime, datetime]:
    """The local day before `now`: its date and its [start, end) in UTC."""
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    day = today - timedelta(days=1)
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(today, time(0), tzinfo=zone).astimezone(UTC)
    return day.isoformat(), start, end


async def generate_daily_reports(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime, task_id: str, progress: Progress
) -> dict[str, Any]:
    """Yesterday's summary and trips for every enabled user with devices; a re-run skips finished ones."""
    day, start, end = yesterday(now, settings.timezone)
    async with sessions() as session:
        users = (await session.execute(select(User.id, User.role).where(col(User.disabled).is_(False)))).all()
    made, failed = [], []
    for done, (user_id, role) in enumerate(users, start=1):
        report_id = await _daily_report(sessions, settings, Principal(int(user_id), role), day, start, end)
        if report_id is not None:
            try:
                await run_report(sessions, settings, report_id, task_id, no_progress)
                made.append(report_id)
            except Exception:
                log.exception("daily report %d failed", report_id)
                failed.append(report_id)
        await progress(done, len(users))
    if failed:
        raise RuntimeError(f"daily reports {failed} failed; a retry runs them again")
    return {"day": day, "reports": made}


async def _daily_report(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    user: Principal,
    day: str,
    start: datetime,
    end: datetime,
) -> int | None:
    """The user's daily report for `day` still to make (found or created); None when done or without devices."""
    async with transaction(sessions) as session:
        query = select(Report).where(
            col(Report.kind) == "daily",
            col(Report.user_id) == user.user_id,
            col(Report.parameters)["day"].as_string() == day,
        )
        report = (await session.execute(query)).scalars().first()
        if report is None:
            device_ids = await visible_devices_among(session, user, None)
            if not device_ids:
                return None
            request = ReportRequest("daily", tuple(device_ids), start, end)
            report = Report(
                kind="daily",
                user_id=user.user_id,
                parameters={**parameters_of(request, ["json"], settings.timezone), "day": day},
            )
            session.add(report)
            await session.flush()
        elif report.status == "complete":
            return None
        assert report.id is not None
        return report.id
