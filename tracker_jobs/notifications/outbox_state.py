"""A delivery's life in the outbox table: claimed for one try (a lease, so two jobs never send it at
once and a killed sender's deliveries are taken over), then sent, failed (tried again after a
backoff) or dead; found again by the sweep when its job was lost."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.events.models import Delivery
from tracker_jobs.notifications.attempt import Attempt

PENDING, SENT, FAILED, DEAD = "pending", "sent", "failed", "dead"
STATES = (PENDING, SENT, FAILED, DEAD)
LEASE_S = 75.0  # longer than a delivery job may run (60 s): a lease still held means its sender is alive
MAX_BACKOFF_S = 3600.0
SWEEP_GRACE_S = 30.0  # a due delivery nobody claimed for this long lost its job: the sweep sends it
ERROR_CHARS = 500
_TABLE: sa.Table = Delivery.__table__  # type: ignore[attr-defined]


async def claim(
    session: AsyncSession,
    now: datetime,
    *,
    ids: Sequence[int] | None = None,
    user_id: int | None = None,
    channel: str | None = None,
) -> list[Mapping[str, Any]]:
    """Take the due, unleased deliveries among `ids` (or all of a user's on a channel) for one try:
    counted as an attempt and leased, in one statement, so no other job takes them meanwhile."""
    due = [
        col(Delivery.state).in_((PENDING, FAILED)),
        col(Delivery.next_attempt_at) <= now,
        sa.or_(col(Delivery.leased_until).is_(None), col(Delivery.leased_until) < now),
    ]
    if ids is not None:
        due.append(col(Delivery.id).in_(list(ids)))
    if user_id is not None:
        due.append(col(Delivery.user_id) == user_id)
    if channel is not None:
        due.append(col(Delivery.channel) == channel)
    statement = (
        sa.update(_TABLE)
        .where(*due)
        .values(attempts=_TABLE.c.attempts + 1, leased_until=now + timedelta(seconds=LEASE_S))
        .returning(*_TABLE.c)
    )
    return [dict(row._mapping) for row in (await session.execute(statement)).all()]


def backoff_s(attempts: int, base_s: float) -> float:
    """Twice as long after each failed try, at most an hour, with a little jitter so the retries of
    one outage do not all come back in the same second."""
    delay = min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)
    return float(delay * random.uniform(0.9, 1.1))


async def record(
    session: AsyncSession,
    claimed: Iterable[Mapping[str, Any]],
    outcomes: Mapping[int, Attempt],
    now: datetime,
    *,
    retry_for_s: float,
    backoff_base_s: float,
) -> dict[float, list[int]]:
    """Write each try's outcome; return the failed deliveries to try again, by delay (s)."""
    retries: dict[float, list[int]] = {}
    changes: list[dict[str, Any]] = []
    for delivery in claimed:
        attempt = outcomes.get(delivery["id"])
        if attempt is None:  # not tried after all (a mail digest window): give back the lease and the attempt
            continue
        change: dict[str, Any] = {"b_id": delivery["id"], "leased_until": None}
        if attempt.ok:
            change |= {"state": SENT, "sent_at": now, "last_error": None, "next_attempt_at": now}
        else:
            delay = backoff_s(delivery["attempts"], backoff_base_s)
            too_late = now + timedelta(seconds=delay) > delivery["created_at"] + timedelta(seconds=retry_for_s)
            dead = attempt.permanent or too_late
            error = (attempt.error or "failed")[:ERROR_CHARS]
            change |= {"state": DEAD if dead else FAILED, "sent_at": None, "last_error": error}
            change["next_attempt_at"] = now if dead else now + timedelta(seconds=delay)
            if not dead:
                # Grouped by tenths of a second, rounded up: the job must never come before the row is due.
                retries.setdefault(math.ceil(delay * 10) / 10, []).append(delivery["id"])
        changes.append(change)
    if changes:
        statement = (
            sa.update(_TABLE)
            .where(_TABLE.c.id == sa.bindparam("b_id"))
            .values(
                state=sa.bindparam("state"),
                sent_at=sa.bindparam("sent_at"),
                last_error=sa.bindparam("last_error"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                leased_until=sa.bindparam("leased_until"),
            )
        )
        await session.execute(statement, changes, execution_options={"synchronize_session": False})
    return retries


async def postpone(session: AsyncSession, delivery_ids: Sequence[int], until: datetime) -> None:
    """Hand claimed deliveries back untried, due at `until` (their attempt does not count)."""
    if delivery_ids:
        await session.execute(
            sa.update(_TABLE)
            .where(_TABLE.c.id.in_(list(delivery_ids)))
            .values(attempts=_TABLE.c.attempts - 1, leased_until=None, next_attempt_at=until)
        )


async def lost(session: AsyncSession, now: datetime, limit: int = 10_000) -> list[int]:
    """Due deliveries that nobody has claimed for a while: their job was never enqueued (a crash
    between commit and enqueue), or was lost with Redis, or their sender was killed mid-try."""
    query = (
        select(col(Delivery.id))
        .where(
            col(Delivery.state).in_((PENDING, FAILED)),
            col(Delivery.next_attempt_at) < now - timedelta(seconds=SWEEP_GRACE_S),
            sa.or_(col(Delivery.leased_until).is_(None), col(Delivery.leased_until) < now),
        )
        .order_by(col(Delivery.id))
        .limit(limit)
    )
    return [delivery_id for delivery_id in (await session.execute(query)).scalars() if delivery_id is not None]


async def retry_now(session: AsyncSession, delivery: Delivery, now: datetime) -> None:
    """An operator's retry of a failed or dead delivery: due now, with its tries counted afresh."""
    delivery.state = FAILED if delivery.state == DEAD else delivery.state
    delivery.next_attempt_at = now
    delivery.leased_until = None
    delivery.created_at = now  # the retry window starts again
