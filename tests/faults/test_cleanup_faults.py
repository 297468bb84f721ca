"""Retention of positions under faults, against a real `tracker-jobs worker` on each database.

- kill -9 the worker in the middle of `cleanup_old_positions` (some device groups trimmed, on PostgreSQL
  some daily partitions dropped, the rest not): nothing inside any device's window is gone, every
  device's newest position is still there (by its id, with its fix time), no position is there twice (a
  dropped partition's newest rows are copied into the default partition: a copy whose partition stayed
  would share its id), and on PostgreSQL no partition is half detached. The next run
  finishes the work (and drops what a killed run detached): everything past each device's cutoff is gone but the newest positions.
- positions streaming in through the batch API (a busy fleet's rate) while the cleanup
  runs on a worker that also stores them: each one accepted is stored exactly once, the cleanup removes
  none of them nor anything else inside a window, and it still gets its work done (on PostgreSQL, a
  partition drop is not starved by the writers: see DROP_UNDER_INGEST_S).

The fleet: 600 devices (three groups of DEVICES_PER_GROUP for the chunked deletes), a position every
3 hours for 60 days (about 260,000 rows, so that a run lasts long enough to be caught in the middle).
Every 50th device keeps 45 days (`retentionDays`), so on PostgreSQL only the days past 45 are whole
partitions to drop and the days between 30 and 45 go row by row: a kill may land in either. Every 10th
device went silent 50 days ago: its newest position is past every cutoff, in a partition that is
dropped, and must survive.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from tests.support.aged import table
from tests.support.processes import engine_env, tracker_jobs_command, wait_for
from tests.support.services import ADMIN_TOKEN
from tracker_jobs.cleanup.chunks import DEVICES_PER_GROUP
from tracker_jobs.cleanup.partitions import (
    POSITIONS_BY_DAY,
    ensure_partitions,
    is_partitioned,
)
from tracker_jobs.core.db import UTCDateTime, dialect_name, transaction, utcnow
from tracker_jobs.devices.models import Device
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.progress import read_progress
from tracker_jobs.positions.models import Position

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEVICES = 600
DAYS = 60
# A position every 3 hours, the newest 90 minutes old: no row sits within an hour of a cutoff (the job
# computes its own, a few seconds after the test's), and none inside the minutes the test streams into.
STEP_MIN = 180
OFFSET_MIN = 90
STEPS = DAYS * 24 * 60 // STEP_MIN
STREAM_S = 3600  # the streamed fixes' times: the last hour, one second apart (a round every PACE_S)
PACE_S = 0.05
KEEP_DAYS = 30  # the job's days_to_keep
KEEPER_DAYS = 45  # every 50th device's retentionDays
SILENT_DAYS = 50  # every 10th device's last report, this many days ago
TIMEOUT_S = 60
# PostgreSQL: what dropping one partition may take, on average, while positions stream in (alone: ~20 ms).
DROP_UNDER_INGEST_S = 1.0

assert DEVICES > 2 * DEVICES_PER_GROUP  # the kill must be able to land between groups


def kind(index: int) -> str:
    if index % 50 == 0:
        return "keeper"
    return "silent" if index % 10 == 5 else "van"


@dataclass(frozen=True)
class Fleet:
    now: datetime  # whole seconds: the positions' times are whole seconds on both databases
    devices: dict[int, str]  # id -> kind

    @property
    def cutoff(self) -> datetime:
        return self.now - timedelta(days=KEEP_DAYS)

    @property
    def keeper_cutoff(self) -> datetime:
        return self.now - timedelta(days=KEEPER_DAYS)


# Per database, one INSERT ... SELECT over the devices and a counter (both speak WITH RECURSIVE) makes
# the positions in seconds; SQLite stores times as naive text, '.000000' included.
AGE_MIN = ":offset + :step * k.n"
FIX_TIME = {
    "postgresql": f"CAST(:now AS timestamptz) - ({AGE_MIN}) * interval '1 minute'",
    "sqlite": f"strftime('%Y-%m-%d %H:%M:%S', :epoch - 60 * ({AGE_MIN}), 'unixepoch') || '.000000'",
}
EMPTY_JSON = {"postgresql": "CAST('{}' AS jsonb)", "sqlite": "'{}'"}


async def build_fleet(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> Fleet:
    now = utcnow().replace(microsecond=0)
    async with sessions() as session:
        if await is_partitioned(session, POSITIONS_BY_DAY):
            # Every day of the data has its partition, as after months of running (and none without
            # data: every partition the run drops takes rows with it).
            first = (now - timedelta(minutes=OFFSET_MIN + STEP_MIN * (STEPS - 1))).date()
            await ensure_partitions(sessions, redis, first, ahead_days=(now.date() - first).days + 7)
    devices = [
        {
            "unique_id": f"{kind(index)}-{index}",
            "name": f"{kind(index)}-{index}",
            "status": "offline",
            "disabled": False,
            "total_distance": 0.0,
            "motion": False,
            "attributes": {"retentionDays": KEEPER_DAYS} if kind(index) == "keeper" else {},
            "created_at": now,
        }
        for index in range(DEVICES)
    ]
    async with transaction(sessions) as session:
        await session.execute(sa.insert(Device.__table__), devices)  # type: ignore[attr-defined]
        dialect = dialect_name(session)
        insert = sa.text(
            "INSERT INTO positions (device_id, protocol, fix_time, server_time, latitude, longitude, altitude,"  # noqa: S608 (constants only)
            " speed, course, accuracy, valid, attributes)"
            " WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < :last)"
            f" SELECT d.id, 'osmand', {FIX_TIME[dialect]}, :now, 50.0 + d.id * 0.001, 8.0, 0, 0, 0, 0, true,"
            f" {EMPTY_JSON[dialect]} FROM devices AS d, k"
            # a silent device's positions stop SILENT_DAYS ago
            f" WHERE d.unique_id NOT LIKE 'silent-%' OR {AGE_MIN} >= :silent_min"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime()))
        await session.execute(
            insert,
            {
                "now": now,
                "epoch": int(now.timestamp()),
                "offset": OFFSET_MIN,
                "step": STEP_MIN,
                "last": STEPS - 1,
                "silent_min": SILENT_DAYS * 24 * 60,
            },
        )
        await session.execute(
            sa.text(
                "UPDATE devices SET (position_id, position_time) = (SELECT p.id, p.fix_time FROM positions AS p"
                " WHERE p.device_id = devices.id ORDER BY p.fix_time DESC LIMIT 1)"
            )
        )
        named = await session.execute(sa.text("SELECT id, unique_id FROM devices"))
        kinds = {device_id: name.split("-")[0] for device_id, name in named}  # "van-12" -> "van"
    return Fleet(now, kinds)


@dataclass(frozen=True)
class Snapshot:
    rows: int
    distinct_ids: int
    window: int  # rows inside their device's window
    old: int  # rows past their device's cutoff that are not its newest
    old_ids: frozenset[int]  # those rows' ids (only read when asked: see `snapshot`)
    newest: dict[int, tuple[int | None, datetime | None]]  # device -> (position_id, the fix time of that row)


async def snapshot(sessions: async_sessionmaker[AsyncSession], fleet: Fleet, *, old_ids: bool = False) -> Snapshot:
    cutoff = "CASE WHEN d.unique_id LIKE 'keeper-%' THEN :keeper_cutoff ELSE :cutoff END"
    newest = "SELECT position_id FROM devices WHERE position_id IS NOT NULL"
    old = f"p.fix_time < {cutoff} AND p.id NOT IN ({newest})"
    params = {"cutoff": fleet.cutoff, "keeper_cutoff": fleet.keeper_cutoff}
    bind = (sa.bindparam("cutoff", type_=UTCDateTime()), sa.bindparam("keeper_cutoff", type_=UTCDateTime()))
    async with sessions() as session:
        rows, distinct, window, old_count = (
            await session.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT p.id),"  # noqa: S608
                    f" coalesce(sum(CASE WHEN p.fix_time >= {cutoff} THEN 1 ELSE 0 END), 0),"
                    f" coalesce(sum(CASE WHEN {old} THEN 1 ELSE 0 END), 0)"
                    " FROM positions AS p JOIN devices AS d ON d.id = p.device_id"
                ).bindparams(*bind),
                params,
            )
        ).one()
        found: frozenset[int] = frozenset()
        if old_ids:
            found = frozenset(
                (
                    await session.execute(
                        sa.text(
                            f"SELECT p.id FROM positions AS p JOIN devices AS d ON d.id = p.device_id WHERE {old}"  # noqa: S608
                        ).bindparams(*bind),
                        params,
                    )
                ).scalars()
            )
        named = await session.execute(
            sa.text(
                "SELECT d.id, d.position_id, p.fix_time FROM devices AS d LEFT JOIN positions AS p ON p.id = d.position_id"
            ).columns(sa.column("id"), sa.column("position_id"), sa.column("fix_time", UTCDateTime()))
        )
        newest_rows = {device_id: (position_id, fix_time) for device_id, position_id, fix_time in named}
    return Snapshot(int(rows), int(distinct), int(window), int(old_count), found, newest_rows)


async def stray_partitions(sessions: async_sessionmaker[AsyncSession]) -> tuple[list[str], list[str]]:
    """PostgreSQL: (tables named like a partition that are not attached to positions, the attached ones)."""
    async with sessions() as session:
        names = await session.execute(
            sa.text(
                "SELECT c.relname, EXISTS (SELECT 1 FROM pg_inherits AS i WHERE i.inhrelid = c.oid"
                " AND i.inhparent = to_regclass('positions')) FROM pg_class AS c"
                " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            )
        )
        found = [(name, attached) for name, attached in names if POSITIONS_BY_DAY.is_partition(name)]
    return sorted(name for name, attached in found if not attached), sorted(
        name for name, attached in found if attached
    )


async def partitioned(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as session:
        return await is_partitioned(session, POSITIONS_BY_DAY)


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    # The in-process admin app of the `settings` fixture writes 4 position streams: the worker drains 4.
    # A cron tick of the retention job (minute 10) would do what the test's job does, no more.
    return engine_env(
        TRACKER_DATABASE_URL=database_url,
        TRACKER_REDIS_URL=redis_url,
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
        TRACKER_POSITION_PARTITIONS="4",
        TRACKER_RETENTION_POSITIONS_DAYS=str(KEEP_DAYS),
    )


@contextmanager
def worker_log(directory: Path) -> Iterator[IO[str]]:
    with open(directory / "workers.log", "a+") as log:
        yield log


def start_worker(env: dict[str, str], directory: Path, log: IO[str], queues: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        tracker_jobs_command("worker", "--queues", queues),
        cwd=directory,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill(worker: subprocess.Popen[str]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGKILL)
    worker.wait()


def tail(directory: Path) -> str:
    return (directory / "workers.log").read_text(errors="replace")[-3000:]


async def wait_mid_run(redis: ArqRedis, job_id: str, directory: Path) -> dict[str, Any]:
    """Poll the job's progress closely (a step takes tens of milliseconds) until it is past its first
    step and short of its last."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        progress = await read_progress(redis, job_id)
        if progress is not None:
            assert progress["percent"] < 100, f"the cleanup ended before it could be killed: {progress}"
            if progress["percent"] > 0:
                return progress
        await asyncio.sleep(0.005)
    raise AssertionError(f"the cleanup never got going:\n{tail(directory)}")


async def test_a_cleanup_killed_mid_run_leaves_no_half_state_and_the_next_run_finishes(
    database_url: str, redis_url: str, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    fleet = await build_fleet(sessions, redis)
    on_postgres = await partitioned(sessions)
    before = await snapshot(sessions, fleet)
    silent = [device for device, what in fleet.devices.items() if what == "silent"]
    assert before.old > 120_000  # the fleet is as big as meant: a run takes long enough to be caught
    assert all(before.newest[device][1] < fleet.keeper_cutoff for device in silent)  # type: ignore[operator]
    env = worker_env(database_url, redis_url)

    with worker_log(tmp_path) as log:
        worker = start_worker(env, tmp_path, log, "cleanup")
        try:
            job = await enqueue(redis, refs.CLEANUP_OLD_POSITIONS, days_to_keep=KEEP_DAYS)
            assert job is not None
            progress = await wait_mid_run(redis, job.job_id, tmp_path)
            kill(worker)  # no shutdown, no rollback by the worker: whatever was in flight is cut off
        finally:
            kill(worker)

        # What the killed run left: some of the old rows gone (it was past its first step), not all (it was
        # killed before its last), and nothing else touched.
        after_kill = await snapshot(sessions, fleet)
        assert 0 < after_kill.old < before.old, (progress, after_kill.old, before.old)
        assert after_kill.window == before.window
        assert after_kill.newest == before.newest  # every device's newest position, by id and fix time
        assert after_kill.distinct_ids == after_kill.rows  # no newest copied while its partition stayed
        assert after_kill.rows == after_kill.window + after_kill.old + DEVICES - count_newest_in_window(before, fleet)
        if on_postgres:
            # Detaching (with the copies of the newest positions) is one transaction, all or nothing; a
            # kill before the drop that follows may leave detached day tables, which no query sees and
            # the next run drops (checked below).
            _, attached = await stray_partitions(sessions)
            assert POSITIONS_BY_DAY.default_partition in attached

        # The next run (a new worker; the killed job stays claimed by the dead one until its timeout) finishes.
        worker = start_worker(env, tmp_path, log, "cleanup")
        try:
            again = await enqueue(redis, refs.CLEANUP_OLD_POSITIONS, days_to_keep=KEEP_DAYS)
            assert again is not None
            result = await again.result(timeout=TIMEOUT_S, poll_delay=0.1)
        finally:
            kill(worker)

    done = await snapshot(sessions, fleet)
    assert done.old == 0, result
    assert done.window == before.window
    assert done.newest == before.newest
    assert done.rows == done.distinct_ids == before.window + DEVICES - count_newest_in_window(before, fleet)
    if not on_postgres:  # chunks count exactly (a dropped partition is counted from the planner's estimate)
        assert result["removed"]["positions"] == after_kill.old
    else:
        detached, attached = await stray_partitions(sessions)
        assert detached == []
        # Every day past every device's cutoff is gone as a whole; the days some device keeps stay.
        first_kept = fleet.keeper_cutoff.date()
        for age in range(DAYS + 3):
            day = (fleet.now - timedelta(days=age)).date()
            assert (POSITIONS_BY_DAY.partition_name(day) in attached) == (day >= first_kept), day
        async with sessions() as session:
            in_default = set(
                (await session.execute(sa.select(table(POSITIONS_BY_DAY.default_partition).c.id))).scalars()
            )
        # ... and a silent device's newest position, whose day went, lives on in the default partition.
        assert in_default == {before.newest[device][0] for device in silent}


async def stored(sessions: async_sessionmaker[AsyncSession], fleet: Fleet) -> list[tuple[int, int]]:
    """(device, fix time) of the positions of the last STREAM_S seconds: those the test streams in."""
    async with sessions() as session:
        rows = await session.execute(
            sa.select(col(Position.device_id), col(Position.fix_time)).where(
                col(Position.fix_time) >= fleet.now - timedelta(seconds=STREAM_S)
            )
        )
        return [(device, int(fix_time.timestamp())) for device, fix_time in rows]


def count_newest_in_window(snap: Snapshot, fleet: Fleet) -> int:
    """How many devices' newest positions are inside their window (the others are kept past it)."""
    return sum(
        1
        for device, (_, fix_time) in snap.newest.items()
        if fix_time is not None
        and fix_time >= (fleet.keeper_cutoff if fleet.devices[device] == "keeper" else fleet.cutoff)
    )


@dataclass
class Stream:
    """Positions posted through the batch API, one a second of fix time for each reporting device."""

    devices: list[int]
    base: int  # fix time of the first round
    sent: set[tuple[int, int]] = field(default_factory=set)
    accepted: int = 0
    rounds: list[tuple[datetime, datetime]] = field(default_factory=list)  # (posted, answered) of each round

    def during(self, start: datetime, finish: datetime) -> int:
        """Rounds posted after the cleanup began and answered before it ended (the worker's own times)."""
        return sum(start < posted and answered < finish for posted, answered in self.rounds)

    async def run(self, admin: TestClient[Any, Any], stop: asyncio.Event) -> None:
        for second in range(STREAM_S):
            if stop.is_set():
                return
            posted = utcnow()
            body = [
                {
                    "deviceId": device,
                    "fixTime": self.base + second,
                    "latitude": 50.0 + device * 0.001,
                    "longitude": 8.0 + second * 1e-5,
                    "speed": 1.0,
                }
                for device in self.devices
            ]
            response = await admin.post("/api/positions", json=body, headers=HEADERS)
            assert response.status == 202, await response.text()
            answer = await response.json()
            assert answer["rejected"] == []
            self.accepted += answer["accepted"]
            self.sent.update((device, self.base + second) for device in self.devices)
            self.rounds.append((posted, utcnow()))
            # A busy fleet (~2,000 positions/s), not a flood: one that keeps SQLite's single write lock
            # taken all the time would starve any other writer, the cleanup's chunks too.
            await asyncio.sleep(PACE_S)


async def test_positions_streaming_in_during_cleanup_are_stored_once_and_none_lost(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
    admin_client: TestClient[Any, Any],
    tmp_path: Path,
) -> None:
    fleet = await build_fleet(sessions, redis)
    before = await snapshot(sessions, fleet, old_ids=True)
    # Every 5th device reports: vans of every group, the keepers, and the silent ones, whose newest moves
    # from a position past every cutoff to one inside the window while the cleanup is at work.
    stream = Stream(sorted(fleet.devices)[::5], base=int(fleet.now.timestamp()) - STREAM_S)
    assert {fleet.devices[device] for device in stream.devices} == {"van", "keeper", "silent"}

    with worker_log(tmp_path) as log:
        worker = start_worker(worker_env(database_url, redis_url), tmp_path, log, "positions,cleanup")
        stop = asyncio.Event()
        try:
            job = await enqueue(redis, refs.CLEANUP_OLD_POSITIONS, days_to_keep=KEEP_DAYS)
            assert job is not None
            streaming = asyncio.create_task(stream.run(admin_client, stop))
            try:
                # The cleanup must do its work while positions stream in (not give way to them for ever).
                result = await job.result(timeout=TIMEOUT_S, poll_delay=0.1)
            except TimeoutError:
                progress = await read_progress(redis, job.job_id)
                raise AssertionError(
                    f"the cleanup did not end in {TIMEOUT_S} s: {progress}\n{tail(tmp_path)}"
                ) from None
            finally:
                stop.set()
                await streaming
            assert result["removed"]["positions"] > 0
            info = await job.result_info()
            assert info is not None
            during = stream.during(info.start_time, info.finish_time)
            assert during >= 3, (
                during,
                len(stream.rounds),
                info.finish_time - info.start_time,
            )  # went in while it worked
            if result["partitions"]:
                # A drop waits at most a lock timeout for the writers ahead of it, then they go on: on a
                # quiet database one takes ~20 ms, so a second each is many timeouts lost to ingest.
                per_drop = result["steps_s"]["detach_partitions"] / len(result["partitions"])
                assert per_drop < DROP_UNDER_INGEST_S, result["steps_s"]

            async def all_stored() -> bool:
                return len(await stored(sessions, fleet)) >= stream.accepted

            await wait_for(all_stored, TIMEOUT_S, f"{stream.accepted} positions stored")
            await asyncio.sleep(1.0)  # a second copy would show up now
        finally:
            kill(worker)

    assert stream.accepted == len(stream.sent)
    assert sorted(await stored(sessions, fleet)) == sorted(stream.sent), tail(tmp_path)  # each once, none lost
    after = await snapshot(sessions, fleet, old_ids=True)
    assert after.rows == after.distinct_ids  # no id twice
    assert after.window == before.window + stream.accepted  # nothing inside a window removed
    # What is left past a cutoff is what was some device's newest when the run began: a silent device's
    # old newest may go once its new one is stored, or stay, if its group was trimmed before that.
    assert after.old_ids <= {position_id for position_id, _ in before.newest.values()}
    newest_sent = {
        device: max(when for reporter, when in stream.sent if reporter == device) for device in stream.devices
    }
    for device, (position_id, fix_time) in after.newest.items():
        assert fix_time is not None, (device, position_id)  # every device's newest is stored
        if device in newest_sent:
            assert int(fix_time.timestamp()) == newest_sent[device]
