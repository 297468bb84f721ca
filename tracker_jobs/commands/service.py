"""Commands in the database: send (checked, one row per device, handed to its transport once
committed), list, read, cancel, results from a gateway; and what the jobs do with them: record what the
listener saw (sent, results), expire, and raise the events (queuedCommandSent, commandResult,
commandExpired) through the notifications path."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.commands import queue
from tracker_jobs.commands.checks import checked_attributes, command_type, osmand_text
from tracker_jobs.commands.models import OPEN_STATES, Command, SavedCommand, State
from tracker_jobs.commands.types import OSMAND, transport_of
from tracker_jobs.core.db import iso, transaction
from tracker_jobs.core.errors import UNREACHABLE, Conflict, FieldError, Forbidden, Unavailable, not_found
from tracker_jobs.core.principal import Principal, Role
from tracker_jobs.devices.models import Device
from tracker_jobs.devices.service import get_device, visible_device_ids
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.events.store import record_events
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import SEND_COMMAND
from tracker_jobs.users.models import User

log = logging.getLogger(__name__)

COMMANDS: sa.Table = Command.__table__  # type: ignore[attr-defined]
UPDATES_PAGE = 1000  # stream entries recorded in one transaction
MAX_EXPIRY_DAYS = 30  # a command waits at most this long (TRACKER_COMMAND_TTL's most, too)
SENT_EVENT, RESULT_EVENT, EXPIRED_EVENT = "queuedCommandSent", "commandResult", "commandExpired"


# -- sending ------------------------------------------------------------------------------------------


async def send(
    session: AsyncSession,
    principal: Principal,
    now: datetime,
    ttl_s: int,
    *,
    device_ids: Sequence[int],
    fields: Mapping[str, Any],
) -> list[Command]:
    """One queued command per device (a list fans out), each checked against its device's transport;
    a saved command (`id`) gives the type and attributes. Not yet handed over: `hand_over` after commit."""
    saved_id = fields.get("id")
    if saved_id is not None:
        saved = await get_saved(session, principal, saved_id)
        type_name, attributes, description = (
            saved.type,
            saved.attributes,
            fields.get("description") or saved.description,
        )
    else:
        if not principal.is_admin and await _limited(session, principal):
            raise Forbidden("this user may send saved commands only (limitCommands): name one with `id`")
        if fields.get("type") is None:
            raise FieldError("type", "is required (or `id`, a saved command)")
        type_name, attributes, description = fields["type"], fields.get("attributes") or {}, fields.get("description")
    kind = command_type(type_name)
    expires_at = fields.get("expiresAt") or now + timedelta(seconds=ttl_s)
    if expires_at <= now:
        raise FieldError("expiresAt", "must be in the future")
    if expires_at > now + timedelta(days=MAX_EXPIRY_DAYS):
        raise FieldError("expiresAt", f"must be within {MAX_EXPIRY_DAYS} days")
    commands = []
    for device_id in dict.fromkeys(device_ids):
        device = await device_of(session, principal, device_id)
        transport = transport_of(device.attributes or {})
        checked = checked_attributes(kind, attributes, transport)
        commands.append(
            Command(
                device_id=device_id,
                user_id=principal.user_id,
                type=kind.name,
                attributes=checked,
                description=description or "",
                transport=transport,
                text=osmand_text(kind, checked) if transport == OSMAND else None,
                created_at=now,
                expires_at=expires_at,
            )
        )
    session.add_all(commands)
    await session.flush()
    return commands


async def _limited(session: AsyncSession, principal: Principal) -> bool:
    found = await session.execute(select(User.limit_commands).where(col(User.id) == principal.user_id))
    return bool(found.scalar())


def send_job_id(command_id: int, attempts: int, due: datetime | None = None) -> str:
    """One job per try of a gateway command and the moment it fell due: a retry enqueued by two cron ticks
    runs once, and a try whose job was lost (its id kept an hour by arq) is enqueued anew when due again."""
    return f"send_command:{command_id}:{attempts}:{int(due.timestamp()) if due else 0}"


async def hand_over(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, commands: Sequence[Command]) -> None:
    """Once their rows have committed: OsmAnd commands into their device's queue in Redis, gateway
    commands to the commands queue. Redis out of reach: the commands fail (nothing would deliver them)
    and the caller hears 503."""
    handed: set[int | None] = set()
    try:
        for command in commands:
            assert command.id is not None
            if command.transport == OSMAND:
                assert command.text is not None
                await queue.push(redis, command.device_id, command.id, command.text, command.expires_at.timestamp())
            else:
                await enqueue(redis, SEND_COMMAND, job_id=send_job_id(command.id, 0), command_id=command.id)
            handed.add(command.id)
    except UNREACHABLE as error:
        # Those handed over already stay queued: they will be delivered.
        ids = [command.id for command in commands if command.id not in handed]
        async with transaction(sessions) as session:
            await session.execute(
                sa.update(COMMANDS)
                .where(COMMANDS.c.id.in_(ids), COMMANDS.c.state == State.QUEUED)
                .values(state=State.FAILED, error=f"not queued: {error}"[:512], finished_at=datetime.now(UTC))
            )
        raise Unavailable(
            f"cannot queue commands right now (Redis): {len(ids)} of {len(commands)} failed; send those again later"
        ) from None


# -- reading and cancelling -----------------------------------------------------------------------------


def visible_commands(principal: Principal) -> Any:
    return select(Command).where(col(Command.device_id).in_(visible_device_ids(principal)))


async def get_command(
    session: AsyncSession, principal: Principal, command_id: int, *, for_update: bool = False
) -> Command:
    """The command, if its device is one the caller may see; `for_update`: locked until the transaction
    ends (a change made meanwhile by a job or another request waits, then is seen)."""
    query = visible_commands(principal).where(col(Command.id) == command_id)
    found: Command | None = (await session.execute(query.with_for_update() if for_update else query)).scalar()
    if found is None:
        raise not_found(f"command {command_id}")
    return found


async def list_commands(
    session: AsyncSession, principal: Principal, device_id: int | None, state: str | None, limit: int
) -> list[Command]:
    query = visible_commands(principal)
    if device_id is not None:
        query = query.where(col(Command.device_id) == device_id)
    if state is not None:
        query = query.where(col(Command.state) == state)
    return list((await session.execute(query.order_by(col(Command.id).desc()).limit(limit))).scalars())


async def cancel(session: AsyncSession, redis: ArqRedis, principal: Principal, command_id: int) -> Command:
    """A queued command taken back; Conflict once it has gone to the device (or ended otherwise)."""
    command = await get_command(session, principal, command_id, for_update=True)
    if command.state != State.QUEUED:
        raise Conflict(f"command {command_id} is {command.state}; only a queued command can be cancelled")
    if command.transport == OSMAND:
        try:
            taken = await queue.remove(redis, command.device_id, command_id)
        except UNREACHABLE:
            raise Unavailable("cannot reach the command queue (Redis); try again later") from None
        if not taken:  # a reply took it (its "sent" is on its way to this row), or it expired
            raise Conflict(f"command {command_id} has already been sent to the device")
    command.state, command.finished_at = State.CANCELLED, datetime.now(UTC)
    return command


async def answer(
    session: AsyncSession, principal: Principal, command_id: int, result: str, now: datetime, notify_max_age_s: int
) -> tuple[Command, list[int]]:
    """A gateway reports the device's result (POST /api/commands/{id}/result): the command answered and
    the commandResult event raised; the deliveries to enqueue after commit."""
    command = await get_command(session, principal, command_id, for_update=True)
    if command.state not in OPEN_STATES:
        raise Conflict(f"command {command_id} is {command.state}; only a queued or sent command takes a result")
    command.state, command.result, command.answered_at = State.ANSWERED, result, now
    command.sent_at = command.sent_at or now
    recorded = await record_events(
        session, [_event(RESULT_EVENT, command.device_id, now, command, result)], now, notify_max_age_s
    )
    return command, recorded.deliveries


# -- what the listener saw --------------------------------------------------------------------------


async def record_updates(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, notify_max_age_s: int
) -> dict[str, int]:
    """Write the listener's stream of sent commands and device results to the database, a page per
    transaction, in the stream's order, then take the page out of the stream. A page recorded twice
    (a crash in between) changes nothing more: a sent command is sent once, a result answers once (its
    entry id is kept). Entries of devices deleted since are dropped (their commands went with them)."""
    await redis.delete(queue.RECORDING_FLAG)  # entries added from now on enqueue a new run
    counts = {"sent": 0, "answered": 0, "unmatched_results": 0, "of_deleted_devices": 0}
    while True:
        entries = await redis.xrange(queue.UPDATES_KEY, count=UPDATES_PAGE)
        if not entries:
            return counts
        now = datetime.now(UTC)
        updates = [
            (_text(entry_id), {_text(key): _text(value) for key, value in raw.items()}) for entry_id, raw in entries
        ]
        async with transaction(sessions) as session:
            present = await _present_devices(session, {int(fields["device"]) for _, fields in updates})
            events: list[dict[str, Any]] = []
            sent_run: list[dict[str, str]] = []  # consecutive sent entries: recorded together
            for entry_id, fields in updates:
                if int(fields["device"]) not in present:
                    counts["of_deleted_devices"] += 1
                elif fields["kind"] == queue.SENT:
                    sent_run.append(fields)
                else:  # a result: after the commands sent before it, never one sent after it
                    events += await _record_sent(sent_run, session, counts)
                    sent_run = []
                    events.append(await _record_result(session, entry_id, fields, counts))
            events += await _record_sent(sent_run, session, counts)
            recorded = await record_events(session, events, now, notify_max_age_s)
        await enqueue_deliveries(redis, recorded.deliveries)
        await redis.xdel(queue.UPDATES_KEY, *[entry_id for entry_id, _ in entries])
        if len(entries) < UPDATES_PAGE:
            return counts


async def _present_devices(session: AsyncSession, device_ids: set[int]) -> set[int]:
    found = await session.execute(select(Device.id).where(col(Device.id).in_(device_ids)))
    return {device_id for device_id in found.scalars() if device_id is not None}


async def _record_sent(
    sent: list[dict[str, str]], session: AsyncSession, counts: dict[str, int]
) -> list[dict[str, Any]]:
    """Commands the listener handed out: sent, in two statements, with a queuedCommandSent event each.
    Once only: recorded again, they are sent already. One the cron expired meanwhile by its clock, but
    claimed before its expiry by Redis's, was sent (one expired after it was sent stays expired)."""
    if not sent:
        return []
    at = {int(fields["id"]): datetime.fromtimestamp(float(fields["at"]), UTC) for fields in sent}
    unsent = sa.or_(
        COMMANDS.c.state == State.QUEUED, sa.and_(COMMANDS.c.state == State.EXPIRED, COMMANDS.c.sent_at.is_(None))
    )
    open_ = await session.execute(
        sa.select(COMMANDS.c.id, COMMANDS.c.device_id, COMMANDS.c.type, COMMANDS.c.expires_at).where(
            COMMANDS.c.id.in_(list(at)), unsent
        )
    )
    rows = [row for row in open_.all() if row.expires_at > at[row.id]]
    if not rows:
        return []
    await session.execute(
        # No IN here: an executemany takes no list parameter.
        sa.update(COMMANDS)
        .where(COMMANDS.c.id == sa.bindparam("command_id"), unsent)
        .values(state=State.SENT, sent_at=sa.bindparam("at"), finished_at=None),
        [{"command_id": row.id, "at": at[row.id]} for row in rows],
    )
    counts["sent"] += len(rows)
    return [_event(SENT_EVENT, row.device_id, at[row.id], None, None, row.id, row.type) for row in rows]


async def _record_result(
    session: AsyncSession, entry_id: str, fields: dict[str, str], counts: dict[str, int]
) -> dict[str, Any]:
    """A device's result: the command it answers (the one its commandId names, else its oldest sent)
    answered, unless this entry answered one already; the commandResult event, tied to it if found."""
    device_id, at = int(fields["device"]), datetime.fromtimestamp(float(fields["at"]), UTC)
    result = fields["result"][: queue.MAX_RESULT]
    done = (await session.execute(select(Command).where(col(Command.result_entry) == entry_id))).scalar()
    if done is not None:
        return _event(RESULT_EVENT, device_id, at, done, result)
    target = select(Command).where(col(Command.device_id) == device_id, col(Command.state) == State.SENT)
    if fields.get("id"):  # the device named the command it answers
        target = select(Command).where(
            col(Command.device_id) == device_id,
            col(Command.id) == int(fields["id"]),
            col(Command.state).in_(OPEN_STATES),
        )
    command = (await session.execute(target.order_by(col(Command.sent_at), col(Command.id)).limit(1))).scalar()
    if command is None:
        counts["unmatched_results"] += 1
    else:
        command.state, command.result, command.answered_at, command.result_entry = State.ANSWERED, result, at, entry_id
        counts["answered"] += 1
    return _event(RESULT_EVENT, device_id, at, command, result)


def sent_event(command: Command, at: datetime) -> dict[str, Any]:
    return _event(SENT_EVENT, command.device_id, at, command, None)


def _event(
    kind: str,
    device_id: int,
    at: datetime,
    command: Command | None,
    result: str | None,
    command_id: int | None = None,
    command_type_name: str | None = None,
) -> dict[str, Any]:
    command_id = command.id if command is not None else command_id
    attributes: dict[str, Any] = {"commandId": command_id}
    if command is not None or command_type_name:
        attributes["commandType"] = command.type if command is not None else command_type_name
    if result is not None:
        attributes["result"] = result
    return {
        "type": kind,
        "device_id": device_id,
        "event_time": at,
        "subject": command_id or 0,
        "attributes": attributes,
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- expiry ---------------------------------------------------------------------------------------------


async def expire(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, now: datetime, notify_max_age_s: int
) -> int:
    """Queued or sent commands past their expiry become expired (a commandExpired event each); those
    still in a device's queue in Redis are taken out. How many."""
    async with transaction(sessions) as session:
        expired = (
            await session.execute(
                sa.update(COMMANDS)
                .where(COMMANDS.c.state.in_(OPEN_STATES), COMMANDS.c.expires_at <= now)
                .values(state=State.EXPIRED, finished_at=now)
                .returning(COMMANDS.c.id, COMMANDS.c.device_id, COMMANDS.c.type, COMMANDS.c.transport)
            )
        ).all()
        events = [
            _event(EXPIRED_EVENT, device, now, None, None, command_id, kind) for command_id, device, kind, _ in expired
        ]
        recorded = await record_events(session, events, now, notify_max_age_s)
    await enqueue_deliveries(redis, recorded.deliveries)
    for command_id, device_id, _, transport in expired:
        if transport == OSMAND:
            await queue.remove(redis, device_id, command_id)
    return len(expired)


# -- saved commands ---------------------------------------------------------------------------------


def visible_saved(principal: Principal) -> Any:
    """An admin's: all; a user's: their own and those an admin saved (what an admin offers every user,
    the only ones a user limited to saved commands has unless they saved some before)."""
    query = select(SavedCommand)
    if principal.is_admin:
        return query
    admins = select(User.id).where(col(User.role) == Role.ADMIN)
    return query.where(sa.or_(col(SavedCommand.user_id) == principal.user_id, col(SavedCommand.user_id).in_(admins)))


async def get_saved(session: AsyncSession, principal: Principal, saved_id: int) -> SavedCommand:
    found: SavedCommand | None = (
        await session.execute(visible_saved(principal).where(col(SavedCommand.id) == saved_id))
    ).scalar()
    if found is None:
        raise not_found(f"saved command {saved_id}")
    return found


async def check_may_save(session: AsyncSession, principal: Principal) -> None:
    """A user limited to saved commands may not make their own (they could save any command, then send it)."""
    if not principal.is_admin and await _limited(session, principal):
        raise Forbidden("this user may send saved commands only (limitCommands), not save new ones")


async def saved_to_change(session: AsyncSession, principal: Principal, saved_id: int) -> SavedCommand:
    """A saved command the caller may change or delete: their own (unless limited), or any for an admin."""
    saved = await get_saved(session, principal, saved_id)
    await check_may_save(session, principal)
    if not principal.is_admin and saved.user_id != principal.user_id:
        raise Forbidden(f"saved command {saved_id} is an admin's: only an admin may change it")
    return saved


async def list_saved(session: AsyncSession, principal: Principal) -> list[SavedCommand]:
    return list((await session.execute(visible_saved(principal).order_by(col(SavedCommand.id)))).scalars())


def check_saved(fields: Mapping[str, Any]) -> None:
    """A saved command's type must exist and its attributes suit at least one transport."""
    kind = command_type(fields["type"])
    checked_attributes(kind, fields.get("attributes") or {}, kind.transports()[-1])


# -- the API's shape --------------------------------------------------------------------------------


def command_to_api(command: Command) -> dict[str, Any]:
    return {
        "id": command.id,
        "deviceId": command.device_id,
        "userId": command.user_id,
        "type": command.type,
        "attributes": command.attributes,
        "description": command.description,
        "transport": command.transport,
        "state": command.state,
        "createdAt": iso(command.created_at),
        "expiresAt": iso(command.expires_at),
        "sentAt": iso(command.sent_at),
        "answeredAt": iso(command.answered_at),
        "finishedAt": iso(command.finished_at),
        "result": command.result,
        "attempts": command.attempts,
        "error": command.error,
    }


def saved_to_api(saved: SavedCommand) -> dict[str, Any]:
    return {
        "id": saved.id,
        "userId": saved.user_id,
        "description": saved.description,
        "type": saved.type,
        "attributes": saved.attributes,
    }


async def device_of(session: AsyncSession, principal: Principal, device_id: int) -> Device:
    device = await get_device(session, principal, device_id)
    if device is None:
        raise not_found(f"device {device_id}")
    return device
