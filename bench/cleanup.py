"""Cleanup benchmark (issue 13): retention of positions on PostgreSQL, ours against the seed's DELETE.

On PostgreSQL and Redis (the database <test database>_bench_cleanup, Redis db 12 of the test server), with
the real `tracker-jobs listener` and `tracker-jobs worker` processes on the same machine, in one run:
  1. N positions over 1,000 devices spread over the last 60 days in the engine's partitioned table, and
     the same rows in `positions_seed`, a plain table with the seed's keys (the seed's design);
     both vacuumed and analysed, as autovacuum leaves tables that filled over days;
  2. OsmAnd ingest at a steady 2,000 positions/s from then on, each position timed from its request to
     its batch's live message (published once the batch is stored);
  3. retention of 30 days by the engine's `cleanup_old_positions` job (a worker process of the cleanup
     queue): whole daily partitions detached while the boundary day is swept, then the detached days
     dropped. purge_s: the job's `purge_s`, from its first removal until the old rows are out of the
     table (as the DELETE's time is); its plan before (reads) and the drop that gives the disk back after
     are printed apart (the DELETE gives none back);
  4. then, on the identical plain table, the seed's `DELETE FROM positions_seed WHERE fix_time < cutoff`;
  5. table sizes before and after each (the DELETE gives nothing back until a VACUUM FULL).
Latency "during" an operation: positions sent while it ran (at least its first second); "before": the
seconds before it started. Each position's latency is saved to latencies.json in the logs folder. Ends with: RESULT purge_s=... delete_baseline_s=... purge_speedup=...
ingest_p99_ratio_during_purge=... baseline_ingest_p99_ratio=... reclaimed_mb=...
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import uvloop
from ingest import (
    DEVICES,
    KeepAliveClient,
    bench_urls,
    prepare_database,
    process_env,
    send_paced,
    start,
    wait_listening,
)

from tracker_jobs.cleanup.partitions import DAY, POSITIONS_BY_DAY, day_start, ensure_partitions
from tracker_jobs.core.db import create_engine, session_factory
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.embedded import free_port
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import CLEANUP_OLD_POSITIONS
from tracker_jobs.positions.live import LIVE_CHANNEL
from tracker_jobs.positions.record import iso_epoch

FULL_ROWS = 20_000_000
# Enough that the seed's DELETE takes seconds, against which the fixed cost of a detach is small, as in
# the full run; the load (most of the run) still fits in two minutes.
QUICK_ROWS = 8_000_000
DAYS = 60
KEEP_DAYS = 30
RATE = 2000  # positions/s of the steady ingest
BEFORE_S = 6  # seconds of ingest measured before each operation
MIN_DURING_S = 1.0  # "during" covers at least this long, so a quick operation still has samples


@dataclass
class Ingest:
    """The steady ingest: when each position was sent, and when it was seen stored."""

    sent: dict[tuple[int, str], float] = field(default_factory=dict)
    seen: dict[tuple[int, str], float] = field(default_factory=dict)
    stored: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first position seen stored

    def p99_ms(self, start: float, end: float) -> float:
        latencies = [
            (self.seen[key] - sent) * 1000
            for key, sent in self.sent.items()
            if start <= sent < end and key in self.seen
        ]
        if len(latencies) < 100:
            raise RuntimeError(f"only {len(latencies)} positions timed between {start:.1f} and {end:.1f}")
        return float(np.percentile(latencies, 99))

    def save(self, path: Path, origin: float) -> None:
        """Each position's send time and latency (seconds from `origin`, ms), to look at a run afterwards."""
        rows = [
            (round(sent - origin, 4), round((self.seen[key] - sent) * 1000, 1) if key in self.seen else None)
            for key, sent in self.sent.items()
        ]
        path.write_bytes(orjson.dumps(rows))


async def load(pool: asyncpg.Pool, database: str, redis_url: str, rows: int) -> None:
    """The fleet, its 60 days of positions (time order, as they arrived) in both tables, each device's
    newest named by its row; then VACUUM (ANALYZE), as autovacuum leaves a table that filled over days."""
    await pool.execute(
        "INSERT INTO devices (unique_id, name, status, disabled, total_distance, motion, attributes, created_at)"
        " SELECT 'bench-' || i, 'bench-' || i, 'offline', false, 0, false, '{}', now() FROM generate_series(0, $1 - 1) i",
        DEVICES,
    )
    now = datetime.now(UTC)
    per_device = rows // DEVICES
    end = now - timedelta(minutes=5)
    first = end - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / per_device
    started = time.perf_counter()
    insert = (
        "INSERT INTO {table} (device_id, protocol, fix_time, server_time, latitude, longitude, altitude, speed,"
        " course, accuracy, valid, attributes) SELECT d.id, 'osmand', $1::timestamptz + i * $2::interval,"
        " $1::timestamptz + i * $2::interval, 50 + (i % 1000) * 0.0001, 8 + d.id * 0.001, 0, 10, 0, 5, true,"
        " '{{\"motion\": true}}'::jsonb FROM generate_series($3::int, $4::int - 1) AS i CROSS JOIN devices AS d"
        " WHERE $1::timestamptz + i * $2::interval >= $5 AND $1::timestamptz + i * $2::interval < $6"
    )

    def steps_between(lower: datetime, upper: datetime) -> tuple[int, int]:
        """The range of i whose fix times may fall between (a step wider each side; the WHERE is exact)."""
        return max(0, int((lower - first) / step) - 1), min(per_device, int((upper - first) / step) + 2)

    days = [first.date() + timedelta(days=k) for k in range((end.date() - first.date()).days + 1)]

    async def fill_ours() -> None:
        """A day table at a time, filled, then attached as the day's partition: PostgreSQL builds its keys
        in one sort each (faster than key by key as rows come), as the seed's table gets them below."""
        async with pool.acquire() as connection:
            made = {row[0] for row in await connection.fetch("SELECT relname FROM pg_class")}  # today's, at least
            for day in days:
                name, lower = POSITIONS_BY_DAY.partition_name(day), day_start(day)
                if name not in made:
                    await connection.execute(f"CREATE TABLE {name} (LIKE positions INCLUDING DEFAULTS)")
                between = (lower, lower + DAY)
                await connection.execute(insert.format(table=name), first, step, *steps_between(*between), *between)
            for day in days:
                name, lower = POSITIONS_BY_DAY.partition_name(day), day_start(day)
                if name not in made:
                    await connection.execute(
                        f"ALTER TABLE positions ATTACH PARTITION {name} FOR VALUES FROM ('{lower}') TO ('{lower + DAY}')"
                    )

    async def fill_seed() -> None:
        async with pool.acquire() as connection:
            await connection.execute("CREATE TABLE positions_seed (LIKE positions INCLUDING DEFAULTS)")
            everything = (first, end + DAY)
            await connection.execute(
                insert.format(table="positions_seed"), first, step, *steps_between(*everything), *everything
            )
            await connection.execute(
                "ALTER TABLE positions_seed ADD PRIMARY KEY (id), ADD UNIQUE (device_id, fix_time)"
            )

    await asyncio.gather(fill_ours(), fill_seed())  # two connections, two CPUs
    filled = time.perf_counter()
    # The days the ingest writes to, made ahead as the engine does.
    engine = create_engine(database)
    redis = await connect_redis(redis_url)
    await ensure_partitions(session_factory(engine), redis, days[-1] + DAY)
    await redis.aclose()
    await engine.dispose()
    await pool.execute(
        "UPDATE devices SET (position_id, position_time) = (SELECT id, fix_time FROM positions AS p"
        " WHERE p.device_id = devices.id ORDER BY fix_time DESC LIMIT 1)"
    )
    await asyncio.gather(pool.execute("VACUUM (ANALYZE) positions"), pool.execute("VACUUM (ANALYZE) positions_seed"))
    await pool.execute("CHECKPOINT")
    print(
        f"  {rows:,} positions x 2 tables filled and keyed in {filled - started:.0f} s, vacuumed and analysed"
        f" in {time.perf_counter() - filled:.0f} s",
        flush=True,
    )


async def table_bytes(pool: asyncpg.Pool, table: str) -> int:
    # pg_partition_tree holds a partitioned table's every partition, and nothing for a plain table.
    size: int = await pool.fetchval(
        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(to_regclass($1))"
        " WHERE isleaf), pg_total_relation_size(to_regclass($1)))",
        table,
    )
    return size


async def steady_ingest(
    port: int, redis_url: str, ingest: Ingest, stop: asyncio.Event, device_ids: dict[str, int]
) -> int:
    """OsmAnd requests at RATE/s with the current time as fix time, each timed to its live message; how
    many were answered 200."""
    redis = await connect_redis(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(LIVE_CHANNEL)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                arrived = time.perf_counter()
                for position in orjson.loads(message["data"]).get("positions", []):
                    ingest.seen.setdefault((position["deviceId"], position["fixTime"]), arrived)
                    ingest.stored.set()

    listening = asyncio.create_task(listen())
    accepted = 0

    # Each pass sends every device one position, a second of fix time after the last pass (passes go
    # twice a second: fix times run ahead of the clock, within the day partitions made ahead).
    first_second = int(time.time())

    async def send(connection: KeepAliveClient, item: tuple[int, int]) -> None:
        nonlocal accepted
        device, second = item
        ingest.sent[(device_ids[f"bench-{device}"], iso_epoch(second))] = time.perf_counter()
        path = f"/?id=bench-{device}&lat=50.1&lon={8 + device * 0.001:.4f}&timestamp={second}&speed=10"
        if await connection.get(path) == 200:
            accepted += 1

    def schedule() -> Iterator[tuple[int, int]]:
        passes = 0
        while not stop.is_set():
            yield from ((device, first_second + passes) for device in range(DEVICES))
            passes += 1

    try:
        # One paced stream over the same kept-alive connections throughout, as trackers hold theirs.
        await send_paced(port, schedule(), RATE, send)
        await asyncio.sleep(3)  # the last positions' messages
    finally:
        listening.cancel()
        await pubsub.aclose()
        await redis.aclose()
    return accepted


async def run_job(redis_url: str) -> tuple[float, dict[str, Any]]:
    """The engine's retention job on its worker; (seconds until the old rows were out of the table, its
    result). Its last step, dropping the detached tables (the disk given back), is reported apart: the
    DELETE it is compared with gives nothing back."""
    redis = await connect_redis(redis_url)
    try:
        job = await enqueue(redis, CLEANUP_OLD_POSITIONS, days_to_keep=KEEP_DAYS)
        assert job is not None
        result = await job.result(timeout=600, poll_delay=0.05)
    finally:
        await redis.aclose()
    return float(result["purge_s"]), result


async def main(rows: int) -> None:
    began = time.perf_counter()
    database, maintenance, redis_url = bench_urls("cleanup", 12)
    await prepare_database(database, maintenance)
    redis = await connect_redis(redis_url)
    await redis.flushdb()
    await redis.aclose()
    pool = await asyncpg.create_pool(database, min_size=2, max_size=3)
    print(f"loading {rows:,} positions of {DEVICES:,} devices over {DAYS} days:", flush=True)
    await load(pool, database, redis_url, rows)
    device_ids = {row["unique_id"]: row["id"] for row in await pool.fetch("SELECT id, unique_id FROM devices")}
    logs = Path(tempfile.mkdtemp(prefix="bench-cleanup-"))
    port = free_port()
    env = process_env(database, redis_url, TRACKER_OSMAND_PORT=str(port))
    processes = [
        start(["-m", "tracker_jobs", "listener"], env, logs / "listener.log"),
        start(["-m", "tracker_jobs", "worker", "--queues", "positions"], env, logs / "worker.log"),
        start(["-m", "tracker_jobs", "worker", "--queues", "cleanup"], env, logs / "cleanup.log"),
    ]
    ingest, stop = Ingest(), asyncio.Event()
    try:
        await wait_listening(port, processes[0])
        before_ours = await table_bytes(pool, "positions")
        before_seed = await table_bytes(pool, "positions_seed")
        first_fix = datetime.now(UTC).replace(microsecond=0)
        ingesting = asyncio.create_task(steady_ingest(port, redis_url, ingest, stop, device_ids))
        # Until positions come out stored (the workers have started: slowly, on a busy machine), then a
        # warm-up, then the seconds measured before.
        await asyncio.wait(
            [ingesting, asyncio.ensure_future(ingest.stored.wait())], timeout=60, return_when="FIRST_COMPLETED"
        )
        await asyncio.sleep(2 + BEFORE_S)
        if ingesting.done():  # it failed: say why now, not after the run
            await ingesting
        if not ingest.stored.is_set():
            raise RuntimeError("no position came out stored within a minute")
        ours_start = time.perf_counter()
        purge_s, result = await run_job(redis_url)
        ours_end = time.perf_counter()
        print(
            f"  ours: planned in {result['steps_s']['plan']:.3f} s, then the old rows out of the table in {purge_s:.3f} s,"
            f" their disk back {result['steps_s']['drop_tables']:.3f}"
            f" s later (steps: {result['steps_s']}); removed {result['removed']}",
            flush=True,
        )
        await asyncio.sleep(BEFORE_S)
        cutoff = datetime.now(UTC) - timedelta(days=KEEP_DAYS)
        seed_start = time.perf_counter()
        deleted = await pool.execute("DELETE FROM positions_seed WHERE fix_time < $1", cutoff)
        seed_end = time.perf_counter()
        delete_s = seed_end - seed_start
        print(f"  the seed's single DELETE: {deleted} in {delete_s:.3f} s", flush=True)
        await asyncio.sleep(2)
        stop.set()
        accepted = await ingesting
        stored = await pool.fetchval("SELECT count(*) FROM positions WHERE fix_time >= $1", first_fix)
        distinct = await pool.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT device_id, fix_time FROM positions WHERE fix_time >= $1) AS d",
            first_fix,
        )
        after_ours = await table_bytes(pool, "positions")
        # What the drains' rewrites of devices did to it (every sweep statement and the detach read all of it).
        devices = await pool.fetchrow(
            "SELECT pg_relation_size(relid) / current_setting('block_size')::int AS pages, n_tup_upd,"
            " n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'devices'"
        )
        after_seed = await table_bytes(pool, "positions_seed")
    finally:
        stop.set()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
    await pool.close()
    lost = accepted - distinct
    print(f"  ingest during the run: {accepted:,} accepted, {stored:,} stored ({distinct:,} distinct): {lost} lost")
    if lost or stored != distinct:
        raise RuntimeError(f"{lost} positions lost, {stored - distinct} stored twice")
    ingest.save(logs / "latencies.json", ours_start)
    before_p99 = ingest.p99_ms(ours_start - BEFORE_S, ours_start)
    during_p99 = ingest.p99_ms(ours_start, max(ours_end, ours_start + MIN_DURING_S))
    seed_before_p99 = ingest.p99_ms(seed_start - BEFORE_S, seed_start)
    seed_during_p99 = ingest.p99_ms(seed_start, max(seed_end, seed_start + MIN_DURING_S))
    print(
        f"  ingest p99 (request -> stored): ours {before_p99:.0f} ms before, {during_p99:.0f} ms during;"
        f" the DELETE's {seed_before_p99:.0f} ms before, {seed_during_p99:.0f} ms during",
        flush=True,
    )
    print(
        f"  table bytes: ours {before_ours / 2**20:,.0f} -> {after_ours / 2**20:,.0f} MiB,"
        f" the seed's {before_seed / 2**20:,.0f} -> {after_seed / 2**20:,.0f} MiB; logs in {logs}",
        flush=True,
    )
    hot = devices["n_tup_hot_upd"] / max(devices["n_tup_upd"], 1)
    print(
        f"  devices: {DEVICES:,} rows in {devices['pages']:,} pages after {devices['n_tup_upd']:,} updates,"
        f" {hot:.0%} of them HOT",
        flush=True,
    )
    print(f"(took {time.perf_counter() - began:.0f} s)", flush=True)
    print(
        f"RESULT purge_s={purge_s:.3f} delete_baseline_s={delete_s:.3f} purge_speedup={delete_s / purge_s:.1f} "
        f"ingest_p99_ratio_during_purge={during_p99 / before_p99:.2f} "
        f"baseline_ingest_p99_ratio={seed_during_p99 / seed_before_p99:.2f} "
        f"reclaimed_mb={(before_ours - after_ours) / 2**20:.0f}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} positions (under two minutes)")
    parser.add_argument(
        "--rows", type=int, help=f"this many positions (default {FULL_ROWS:,}; --quick: {QUICK_ROWS:,})"
    )
    arguments = parser.parse_args()
    uvloop.run(main(arguments.rows or (QUICK_ROWS if arguments.quick else FULL_ROWS)))
