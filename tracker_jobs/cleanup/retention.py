"""Retention: positions and events past their keeping time go, without holding up ingest.

Positions: each device keeps `days_to_keep` days of them, or what its `retentionDays` attribute says (more
or less; 0 keeps them for ever), and always its newest position (the one `devices.position_id` names),
however old. On PostgreSQL, each daily partition whose every row is past every device's cutoff is detached
and dropped whole (partitions.detach_partitions, which copies the newest positions in it out first); what
is left past a cutoff (the boundary day, days some devices keep longer, the default partition) is swept
by page ranges; devices keeping less than the default are trimmed in chunks through the (device_id,
fix_time) index. SQLite has only the chunks.

A run that is cancelled or killed stops between chunks (or rolls back the one it was in): every chunk and
every detach is its own transaction, so the next run simply carries on. Nothing inside a device's window
is ever selected: every condition is "older than this device's cutoff".

Events go the same way with one cutoff for all (weeks wholly past it detached and dropped on PostgreSQL,
the rest in chunks), with the deliveries made for them; an event keeps its own coordinates, so it stays
readable after its position has gone.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.cleanup import chunks
from tracker_jobs.cleanup.chunks import CleanupRun, count_rows, delete_in_chunks, in_groups
from tracker_jobs.cleanup.partitions import (
    EVENTS_BY_WEEK,
    POSITIONS_BY_DAY,
    Partition,
    detach_partitions,
    devices_in,
    drop_detached,
    holds_other_than_newest,
    list_partitions,
    rows_of,
    sweep_partition,
)
from tracker_jobs.core.concurrency import side_by_side
from tracker_jobs.devices.models import Device
from tracker_jobs.events.models import Delivery, Event
from tracker_jobs.positions.models import Position

RETENTION_ATTRIBUTE = "retentionDays"
MAX_RETENTION_DAYS = 36_500

POSITIONS = Position.__table__  # type: ignore[attr-defined]
EVENTS = Event.__table__  # type: ignore[attr-defined]
DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]


def own_retention_days(attributes: Mapping[str, Any]) -> int | None:
    """The device's `retentionDays` when it is a whole number of days (0: for ever), else None."""
    value = attributes.get(RETENTION_ATTRIBUTE)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETENTION_DAYS:
        return None
    return value


def cutoff_of(now: datetime, days: int) -> datetime | None:
    """Rows before this are past retention; None keeps them for ever."""
    return None if days == 0 else now - timedelta(days=days)


@dataclass(frozen=True)
class Retention:
    """Each device's cutoff: the default's, or its own (`retentionDays`); None keeps for ever."""

    default: datetime | None
    default_devices: list[int]
    own: dict[datetime | None, list[int]]  # devices with their own retention, by cutoff
    every_device: bool = True  # False: only the devices named

    def by_cutoff(self) -> dict[datetime | None, list[int]]:
        groups: dict[datetime | None, list[int]] = defaultdict(list, {self.default: list(self.default_devices)})
        for cutoff, ids in self.own.items():
            groups[cutoff] += ids
        return {cutoff: ids for cutoff, ids in groups.items() if ids}

    @functools.cached_property
    def _own_cutoffs(self) -> dict[int, datetime | None]:
        return {device_id: cutoff for cutoff, ids in self.own.items() for device_id in ids}

    def cutoff_for(self, device_id: int) -> datetime | None:
        """The device's cutoff (a device the run did not see, made since, has the default's)."""
        return self._own_cutoffs.get(device_id, self.default)

    def last_shared_cutoff(self) -> datetime | None:
        """Before this, every device's rows are past retention (None: some device keeps for ever)."""
        cutoffs = [self.default, *self.own]
        return None if None in cutoffs else min(cutoff for cutoff in cutoffs if cutoff is not None)

    def expired(self, table: sa.TableClause) -> sa.ColumnElement[bool]:
        """The rows of `table` (positions, or one of its partitions) past their device's cutoff, but no
        device's newest position (read at each statement, so a newest stored meanwhile is kept too).
        Over every device, the default's are "all but those with their own": no list of them to send."""
        excepted = [device_id for ids in self.own.values() for device_id in ids]
        clauses = [
            sa.and_(table.c.device_id.in_(ids), table.c.fix_time < cutoff)
            for cutoff, ids in self.own.items()
            if cutoff is not None
        ]
        if self.default is not None:
            others: sa.ColumnElement[bool] = sa.true()
            if not self.every_device:
                others = table.c.device_id.in_(self.default_devices)
            elif excepted:
                others = table.c.device_id.not_in(excepted)
            clauses.append(sa.and_(others, table.c.fix_time < self.default))
        # Only a newest position older than some cutoff can be among these rows: usually none, so the
        # list every row is checked against is short (its check was a quarter of a sweep's time).
        cutoffs = [cutoff for cutoff in (self.default, *self.own) if cutoff is not None]
        if not cutoffs:
            return sa.false()  # every device keeps its positions for ever
        newest = select(Device.position_id).where(
            col(Device.position_id).is_not(None),
            sa.or_(col(Device.position_time).is_(None), col(Device.position_time) < max(cutoffs)),
        )
        return sa.and_(sa.or_(sa.false(), *clauses), table.c.id.not_in(newest.scalar_subquery()))


async def device_retention(
    session: AsyncSession, now: datetime, days_to_keep: int, device_ids: Sequence[int] | None
) -> Retention:
    """The devices (those named, or all) and their cutoffs."""
    # The whole attributes, not the one value: SQLite's json_extract gives a JSON true as 1, which would
    # pass for a number of days.
    query = select(Device.id, Device.attributes).order_by(col(Device.id))
    if device_ids is not None:
        query = query.where(col(Device.id).in_(device_ids))
    default_devices: list[int] = []
    own: dict[datetime | None, list[int]] = defaultdict(list)
    for device_id, attributes in await session.execute(query):
        days = own_retention_days(attributes or {})
        if days is None:
            default_devices.append(device_id)
        else:
            own[cutoff_of(now, days)].append(device_id)
    return Retention(cutoff_of(now, days_to_keep), default_devices, dict(own), every_device=device_ids is None)


def old_positions(device_ids: list[int], cutoff: datetime) -> sa.ColumnElement[bool]:
    """Positions of these devices older than the cutoff, except each one's newest."""
    return Retention(None, [], {cutoff: device_ids}, every_device=False).expired(POSITIONS)


def _groups(cutoffs: Mapping[datetime | None, list[int]]) -> list[tuple[datetime, list[int]]]:
    return [(cutoff, group) for cutoff, ids in cutoffs.items() if cutoff is not None for group in in_groups(ids)]


@dataclass(frozen=True)
class PositionsPlan:
    """What a retention run over positions does: whole partitions to drop; partitions to sweep in block
    ranges (PostgreSQL: the boundary day, the default partition, days kept for some devices only); and
    device groups whose old rows the (device_id, fix_time) index finds in chunks (SQLite; a run for some
    devices; devices keeping less than the default)."""

    retention: Retention
    partitioned: bool
    to_drop: list[Partition]
    to_sweep: list[Partition]
    groups: list[tuple[datetime, list[int]]]  # (cutoff, devices) to delete through the index

    @property
    def steps(self) -> int:
        return (1 if self.to_drop else 0) + len(self.to_sweep) + len(self.groups)

    def details(self) -> dict[str, Any]:
        return {
            "cutoff": _iso(self.retention.default),
            "partitions": [partition.name for partition in self.to_drop],
            "swept": [partition.name for partition in self.to_sweep],
        }


async def plan_positions(
    session: AsyncSession, now: datetime, days_to_keep: int, device_ids: Sequence[int] | None = None
) -> PositionsPlan:
    retention = await device_retention(session, now, days_to_keep, device_ids)
    partitions = await list_partitions(session, POSITIONS_BY_DAY)
    default = retention.default
    # Only a run over every device may drop or sweep a partition (it holds every device's rows).
    if device_ids is not None or default is None or not partitions:
        return PositionsPlan(retention, bool(partitions), [], [], _groups(retention.by_cutoff()))
    shared = retention.last_shared_cutoff()
    to_drop = [p for p in partitions if shared is not None and p.upper is not None and p.upper <= shared]
    past_default = [p for p in partitions if p not in to_drop and (p.lower is None or p.lower < default)]
    to_sweep = [p for p in past_default if await _has_expired_rows(session, p, retention)]
    # Devices keeping less than the default have old rows in newer partitions than those swept.
    shorter: dict[datetime | None, list[int]] = {
        cutoff: ids for cutoff, ids in retention.own.items() if cutoff is not None and cutoff > default
    }
    return PositionsPlan(retention, True, to_drop, to_sweep, _groups(shorter))


async def _has_expired_rows(session: AsyncSession, partition: Partition, retention: Retention) -> bool:
    """Whether a day partition may hold rows past their device's cutoff, other than a newest position.
    Once swept, a day that only some devices keep longer holds nothing more to remove until their cutoff
    reaches it or a late position lands in it: read through the index, one probe per device in it, rather
    than every page of it, every hour. The default partition (small, of any day) is read for one: a run
    that has none to sweep there need not wait for its detach's commit (which locks that partition too).
    The newest positions the detach copies into it are kept, and a stray stored meanwhile waits for the
    next run."""
    if partition.lower is None:
        leaf = POSITIONS_BY_DAY.leaf(partition.name)
        found = await session.execute(
            sa.select(sa.literal(1)).select_from(leaf).where(retention.expired(leaf)).limit(1)
        )
        return found.first() is not None
    for device_id in await devices_in(session, partition.name):
        cutoff = retention.cutoff_for(device_id)
        past = cutoff is not None and cutoff > partition.lower
        if past and await holds_other_than_newest(session, partition.name, device_id):
            return True
    return False


async def remove_old_positions(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    run: CleanupRun,
    *,
    now: datetime,
    days_to_keep: int,
    device_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Positions past their device's retention, each device's newest kept: dropped partitions, then chunks."""
    async with run.step("plan"), sessions() as session:
        plan = await plan_positions(session, now, days_to_keep, device_ids)
    details = plan.details()
    if run.dry_run:
        details["by_device"] = await _count_by_device(sessions, plan, run)
        return run.result(**details)
    done = 0

    async def advanced(message: str) -> None:
        nonlocal done
        done += 1
        await run.progress(done, plan.steps, message)

    detached = asyncio.Event()  # the detach locks the default partition too: its sweep waits for this
    out_at: list[float] = []  # when each kind of removal had its last old rows out of the table

    def rows_out() -> None:
        out_at.append(time.perf_counter())
        detached.set()

    async def detach() -> None:
        try:
            await detach_all()
        finally:
            detached.set()

    async def detach_all() -> None:
        async with run.step("detach_partitions"):
            # An analysed partition's rows are the planner's estimate: counting would read every row the
            # drop does not.
            sizes = [await rows_of(sessions, partition) for partition in plan.to_drop]
            kept = await detach_partitions(sessions, redis, POSITIONS_BY_DAY, plan.to_drop, committed=rows_out)
            run.count("positions", max(sum(rows for rows, _ in sizes) - kept, 0))
            details["newest_kept_from_dropped"] = kept
            details["dropped_rows_estimated"] = any(estimated for _, estimated in sizes)
            await advanced(f"detached {len(plan.to_drop)} partitions")

    async def sweep() -> None:
        async with run.step("sweep_partitions"):
            for partition in plan.to_sweep:  # the default partition last
                if partition.is_default:
                    await detached.wait()
                leaf = POSITIONS_BY_DAY.leaf(partition.name)
                run.count("positions", await sweep_partition(sessions, leaf, plan.retention.expired(leaf)))
                await advanced(f"swept {partition.name}")
            out_at.append(time.perf_counter())

    started = time.perf_counter()
    # Side by side: the detach mostly waits for the drains' writes in flight to end, the sweeps of other
    # days (the boundary day, days kept longer for some devices) work meanwhile; the default partition's
    # waits for the detach's commit.
    if not plan.to_drop:
        detached.set()
    await side_by_side(*([detach()] if plan.to_drop else []), sweep())
    async with run.step("delete_chunks"):
        for cutoff, ids in plan.groups:
            run.count("positions", await delete_in_chunks(sessions, POSITIONS, old_positions(ids, cutoff)))
            await advanced(f"trimmed devices {ids[0]}..{ids[-1]}")
    if plan.groups:
        out_at.append(time.perf_counter())
    # From the first removal until every old row was out of the table: the steps above overlap, so this
    # is not their sum; the plan's reads before them are its own step, and what the detach does after its
    # commit (dropping the detached tables' foreign keys) and the drop of the tables are tidying.
    details["purge_s"] = round(max(out_at, default=started) - started, 3)
    if plan.partitioned:
        async with run.step("drop_tables"):  # last: the rows are gone already, this gives the disk back
            details["dropped_tables"] = await drop_detached(sessions, redis, POSITIONS_BY_DAY)
    return run.result(**details)


async def _count_by_device(
    sessions: async_sessionmaker[AsyncSession], plan: PositionsPlan, run: CleanupRun
) -> dict[str, int]:
    async with run.step("count"), sessions() as session:
        counted = await session.execute(
            sa.select(POSITIONS.c.device_id, sa.func.count())
            .where(plan.retention.expired(POSITIONS))
            .group_by(POSITIONS.c.device_id)
        )
        by_device = {str(device_id): int(count) for device_id, count in counted}
    await run.progress(1, 1, "counted")
    run.count("positions", sum(by_device.values()))
    return by_device


async def remove_old_events(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    run: CleanupRun,
    *,
    now: datetime,
    days_to_keep: int,
    device_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Events older than the cutoff, and the deliveries made for them. On PostgreSQL, every week wholly
    past the cutoff is detached and dropped; the rest (the boundary week, the default partition, a run for
    some devices) goes a group of devices at a time, in chunks."""
    cutoff = cutoff_of(now, days_to_keep)
    details: dict[str, Any] = {"cutoff": _iso(cutoff)}
    if cutoff is None:
        return run.result(**details)
    async with run.step("plan"), sessions() as session:
        partitions = await list_partitions(session, EVENTS_BY_WEEK)
    # Only a run over every device may drop a week (it holds every device's events).
    to_drop = [p for p in partitions if device_ids is None and p.upper is not None and p.upper <= cutoff]
    details["partitions"] = [partition.name for partition in to_drop]
    groups = _groups({cutoff: await chunks.device_ids(sessions, device_ids)})
    deliveries = DELIVERIES.c.created_at < cutoff
    if device_ids is not None:
        deliveries = sa.and_(deliveries, DELIVERIES.c.device_id.in_(device_ids))
    if run.dry_run:
        async with run.step("count"), sessions() as session:
            for _, ids in groups:
                run.count("events", await count_rows(session, EVENTS, _old_events(ids, cutoff)))
            run.count("deliveries", await count_rows(session, DELIVERIES, deliveries))
        return run.result(**details)
    async with run.step("delete_deliveries"):
        run.count("deliveries", await delete_in_chunks(sessions, DELIVERIES, deliveries))
    steps = len(groups) + (1 if to_drop else 0)
    if to_drop:
        async with run.step("detach_partitions"):
            sizes = [await rows_of(sessions, partition) for partition in to_drop]
            await detach_partitions(sessions, redis, EVENTS_BY_WEEK, to_drop)
            run.count("events", sum(rows for rows, _ in sizes))
            details["dropped_rows_estimated"] = any(estimated for _, estimated in sizes)
            await run.progress(1, steps, f"detached {len(to_drop)} weeks")
    async with run.step("delete_events"):
        for done, (_, ids) in enumerate(groups, start=steps - len(groups) + 1):
            run.count("events", await delete_in_chunks(sessions, EVENTS, _old_events(ids, cutoff)))
            await run.progress(done, steps, f"events of {ids[0]}..{ids[-1]}")
    if partitions:
        async with run.step("drop_tables"):  # last: the rows are gone already, this gives the disk back
            details["dropped_tables"] = await drop_detached(sessions, redis, EVENTS_BY_WEEK)
    return run.result(**details)


def _old_events(device_ids: list[int], cutoff: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(EVENTS.c.device_id.in_(device_ids), EVENTS.c.event_time < cutoff)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
