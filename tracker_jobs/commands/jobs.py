"""Jobs of the commands queue: thin, over commands/service.py and commands/gateway.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tracker_jobs.commands import gateway, service
from tracker_jobs.commands.models import Command, State
from tracker_jobs.commands.service import send_job_id
from tracker_jobs.commands.types import GATEWAY
from tracker_jobs.core.db import transaction
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.events.store import record_events
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import enqueue, job
from tracker_jobs.jobs.resources import resources
from tracker_jobs.notifications.jobs import shared_webhook_client

FIRST_TRY_S = 60  # a gateway command with no try this long after it was made: its job was lost


@job(refs.SEND_COMMAND, timeout_s=120, max_tries=1)
async def send_command(ctx: dict[str, Any], command_id: int) -> dict[str, Any]:
    """One try at handing a command to its device's gateway (a failed try is retried by
    retry_failed_commands while the command has time left)."""
    shared = resources(ctx)
    async with shared.sessions() as session:
        found = await gateway.device_and_command(session, command_id)
    now = datetime.now(UTC)
    if found is None or found[0].state != State.QUEUED or found[0].expires_at <= now:
        return {"command": command_id, "state": found[0].state if found else "gone", "tried": False}
    attempt = await gateway.post(shared_webhook_client(ctx), *found)
    now = datetime.now(UTC)
    async with transaction(shared.sessions) as session:
        command = await session.get(Command, command_id, with_for_update=True)
        if command is None or command.state != State.QUEUED:  # cancelled or expired during the try
            return {"command": command_id, "state": command.state if command else "gone", "tried": True}
        sent = gateway.record_attempt(command, attempt, now, shared.settings.delivery_backoff_s)
        events = [service.sent_event(command, now)] if sent else []
        recorded = await record_events(session, events, now, shared.settings.notify_max_age_s)
        answer = {"command": command_id, "state": command.state, "tried": True, "error": command.error}
    await enqueue_deliveries(ctx["redis"], recorded.deliveries)
    return answer


@job(refs.RETRY_FAILED_COMMANDS, timeout_s=60)
async def retry_failed_commands(ctx: dict[str, Any]) -> dict[str, Any]:
    """Gateway commands whose last try failed and whose next try is due, before their expiry; and any
    whose first try never happened (its job lost: the database or Redis was away) after FIRST_TRY_S."""
    now = datetime.now(UTC)
    commands = service.COMMANDS.c
    first_try_lost = sa.and_(
        commands.next_attempt_at.is_(None), commands.created_at <= now - timedelta(seconds=FIRST_TRY_S)
    )
    async with resources(ctx).sessions() as session:
        due = await session.execute(
            sa.select(
                commands.id, commands.attempts, sa.func.coalesce(commands.next_attempt_at, commands.created_at)
            ).where(
                commands.transport == GATEWAY,
                commands.state == State.QUEUED,
                commands.expires_at > now,
                sa.or_(commands.next_attempt_at <= now, first_try_lost),
            )
        )
        tries = due.all()
    for command_id, attempts, due in tries:
        job_id = send_job_id(command_id, attempts, due)
        await enqueue(ctx["redis"], refs.SEND_COMMAND, job_id=job_id, command_id=command_id)
    return {"retried": len(tries)}


@job(refs.EXPIRE_COMMANDS, timeout_s=60)
async def expire_commands(ctx: dict[str, Any]) -> dict[str, Any]:
    """Queued or sent commands past their expiry become expired, with a commandExpired event each; also
    records what the listener saw and no job recorded yet (a lost enqueue)."""
    shared = resources(ctx)
    # Expiry first: a recording that fails (the database away) holds nothing else up.
    expired = await service.expire(shared.sessions, ctx["redis"], datetime.now(UTC), shared.settings.notify_max_age_s)
    recorded = await service.record_updates(shared.sessions, ctx["redis"], shared.settings.notify_max_age_s)
    return {"expired": expired, **recorded}


@job(refs.RECORD_COMMAND_UPDATES, timeout_s=120)
async def record_command_updates(ctx: dict[str, Any]) -> dict[str, Any]:
    """What the listener saw (commands sent in replies, results devices reported) into the database."""
    shared = resources(ctx)
    return await service.record_updates(shared.sessions, ctx["redis"], shared.settings.notify_max_age_s)
