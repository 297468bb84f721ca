"""Task benchmark (issue 4): what job records cost, and how fast statistics answer over a million of them.

On PostgreSQL (a sibling database of TRACKER_TEST_DATABASE_URL named <db>_bench_tasks, created and
migrated here) and Redis (db 13 of TRACKER_TEST_REDIS_URL's server), in one process and one run:
  1. record overhead: a no-op job (`ping`) through the full machinery — enqueue() with its record,
     the job base, records flushed to the database, heartbeat — against the same no-op on bare arq
     (same Redis, same JSON serialiser, same concurrency), in alternating rounds. A round is timed from
     the first enqueue until the last job ran and, for the machinery, every record is committed;
  2. GET /api/tasks/stats (1h and 24h) over 1,000,000 stored records, through the real admin app.
Ends with: RESULT overhead_ratio=... stats_ms_1m=... (plus the per-job costs behind the ratio).
`--quick` runs smaller rounds and fewer requests over the same million records, in under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from typing import Any
from urllib.parse import urlparse, urlunparse

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from arq import Worker
from arq.connections import ArqRedis
from arq.worker import func as arq_function
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, func, select

from tracker_jobs.core.config import Settings, load_settings
from tracker_jobs.core.db import create_engine, session_factory, transaction
from tracker_jobs.core.redis import connect_redis, redis_settings
from tracker_jobs.core.serialization import deserialize_job, serialize_job
from tracker_jobs.embedded import free_port
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.models import DURATION_BOUNDS_S, JobRecord
from tracker_jobs.jobs.records import Outcomes, RecordBatch, RecordFlusher, write_now
from tracker_jobs.jobs.refs import CLEANUP, JOBS
from tracker_jobs.migrations import upgrade_database
from tracker_jobs.users.service import ensure_bootstrap_admin
from tracker_jobs.web.app import create_admin_app
from tracker_jobs.worker import build_worker

TOKEN = "bench-admin-token"
RECORDS = 1_000_000
CONCURRENCY = 16  # jobs a worker runs at once, the same for both sides
BARE_QUEUE = "bench:bare"
SEED_PREFIX = "seed-"
# (share of the seeded records in tenths, job name, queue): position drains dominate, as in a fleet.
SEEDED_JOBS = [
    (6, "process_position_batch", "positions"),
    (2, "send_webhook", "notifications"),
    (1, "ping", "cleanup"),
    (1, "generate_device_report", "reports"),
]


def bench_urls() -> tuple[str, str, str]:
    """(database URL, its server's maintenance URL, Redis URL) beside the test ones, never them."""
    test_database = os.environ.get("TRACKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    test_redis = os.environ.get("TRACKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    parsed = urlparse(test_database)
    database = urlunparse(parsed._replace(path=f"{parsed.path}_bench_tasks"))
    maintenance = urlunparse(parsed._replace(path="/postgres"))
    return database, maintenance, urlunparse(urlparse(test_redis)._replace(path="/13"))


async def create_database(database: str, maintenance: str) -> None:
    name = urlparse(database).path.lstrip("/")
    engine = create_engine(maintenance).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if not exists:
                await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    await asyncio.to_thread(upgrade_database, database)


SEED_RECORDS = sa.text("""
    INSERT INTO job_records (id, name, queue, args, state, enqueued_at, started_at, finished_at, tries, worker,
                             progress, progress_message, revision)
    SELECT :prefix || i, (:names)[1 + i % 10], (:queues)[1 + i % 10], '{"partition": 3}'::jsonb,
           CASE WHEN i % 1000 = 1 THEN 'queued' WHEN i % 50 = 0 THEN 'failed' ELSE 'complete' END,
           t, CASE WHEN i % 1000 = 1 THEN NULL ELSE t + interval '3 ms' END,
           CASE WHEN i % 1000 = 1 THEN NULL ELSE t + interval '3 ms' + (i % 997) * interval '0.4 ms' END,
           CASE WHEN i % 1000 = 1 THEN 0 ELSE 1 END, 'bench-host:1', 100, '', CASE WHEN i % 1000 = 1 THEN 0 ELSE 5 END
    FROM (SELECT i, now() - i * :spacing_ms * interval '1 ms' AS t FROM generate_series(1, :count) AS i) AS g
""").bindparams(sa.bindparam("names", type_=ARRAY(sa.Text)), sa.bindparam("queues", type_=ARRAY(sa.Text)))
# What the flushers would have counted for those records: per minute, job, outcome and duration bucket.
FINISHED_TRIES = sa.text("""
    SELECT date_trunc('minute', finished_at), name, queue, state, width_bucket(d, :bounds), count(*), sum(d), max(d)
    FROM (SELECT name, queue, state, finished_at, extract(epoch FROM finished_at - started_at)::float8 AS d
          FROM job_records WHERE state IN ('complete', 'failed')) AS timed
    GROUP BY 1, 2, 3, 4, 5
""").bindparams(sa.bindparam("bounds", type_=ARRAY(sa.Float)))


async def seed_records(engine: AsyncEngine, count: int) -> float:
    """A day of job records (finished over the last 24 h, 2% failed, 0.1% still queued), and their rollups
    written through the flushers' own upsert. Returns the seconds it took."""
    started = time.perf_counter()
    tenths = [(name, queue) for share, name, queue in SEEDED_JOBS for _ in range(share)]
    async with engine.begin() as connection:
        await connection.execute(sa.text("TRUNCATE job_records, job_stat_minutes, job_stat_totals"))
        await connection.execute(
            SEED_RECORDS,
            {
                "prefix": SEED_PREFIX,
                "names": [name for name, _ in tenths],
                "queues": [queue for _, queue in tenths],
                "spacing_ms": 86_400_000 / count,
                "count": count,
            },
        )
        finished = (await connection.execute(FINISHED_TRIES, {"bounds": list(DURATION_BOUNDS_S)})).all()
    batch = RecordBatch()
    for minute, name, queue, state, bucket, number, duration_sum, duration_max in finished:
        outcomes = batch.outcomes.setdefault((minute, name, queue), Outcomes())
        outcomes.counts[state] += number
        outcomes.buckets[bucket] += number
        outcomes.duration_sum_s += duration_sum
        outcomes.duration_max_s = max(outcomes.duration_max_s, duration_max)
    await write_now(session_factory(engine), batch)
    async with engine.connect() as connection:
        await connection.execute(sa.text("ANALYZE job_records"))
        await connection.execute(sa.text("ANALYZE job_stat_minutes"))
        await connection.commit()
    return time.perf_counter() - started


async def noop(ctx: dict[str, Any]) -> dict[str, Any]:
    """What `ping` does with its defaults, without the machinery around it."""
    return {"slept": 0.0, "steps": 1}


async def bare_round(redis: ArqRedis, redis_url: str, jobs: int) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        await redis.enqueue_job("noop", _queue_name=BARE_QUEUE)
    worker = Worker(
        functions=[arq_function(noop, name="noop")],
        queue_name=BARE_QUEUE,
        redis_settings=redis_settings(redis_url),
        burst=True,
        handle_signals=False,
        poll_delay=0,
        max_jobs=CONCURRENCY,
        keep_result=3600,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
    )
    await worker.async_run()
    await worker.close()
    assert worker.jobs_complete == jobs
    return time.perf_counter() - started


async def recorded_round(redis: ArqRedis, settings: Settings, engine: AsyncEngine, jobs: int) -> float:
    """enqueue() from a process that writes its records (as the admin app does), then the real worker."""
    assert settings.redis_url is not None
    sessions = session_factory(engine)
    started = time.perf_counter()
    enqueuer = RecordFlusher(redis, sessions)
    enqueuer.start()
    ids = []
    for _ in range(jobs):
        job = await enqueue(redis, JOBS["ping"])
        assert job is not None
        ids.append(job.job_id)
    await enqueuer.stop()  # its queued records are committed, as another process's would be
    worker = build_worker(
        CLEANUP,
        settings.redis_url,
        burst=True,
        handle_signals=False,
        poll_delay=0,
        max_jobs=CONCURRENCY,
        ctx={"settings": settings},
    )
    await worker.async_run()
    await worker.close()  # the worker's last records are written before it stops
    elapsed = time.perf_counter() - started
    async with transaction(sessions) as session:
        mine = col(JobRecord.id).in_(ids)
        done = await session.scalar(
            select(func.count()).select_from(JobRecord).where(mine, col(JobRecord.state) == "complete")
        )
        await session.execute(sa.delete(JobRecord).where(mine))
    assert done == jobs, f"{done} of {jobs} records complete"
    return elapsed


async def measure_overhead(
    redis: ArqRedis, redis_url: str, settings: Settings, engine: AsyncEngine, jobs: int, rounds: int
) -> tuple[float, float]:
    """Median seconds per job, (bare arq, full machinery), over alternating rounds after a warm-up."""
    await bare_round(redis, redis_url, min(jobs, 200))
    await recorded_round(redis, settings, engine, min(jobs, 200))
    bare, recorded = [], []
    for _ in range(rounds):
        bare.append(await bare_round(redis, redis_url, jobs) / jobs)
        recorded.append(await recorded_round(redis, settings, engine, jobs) / jobs)
    return statistics.median(bare), statistics.median(recorded)


async def measure_stats(settings: Settings, redis: ArqRedis, engine: AsyncEngine, requests: int) -> dict[str, float]:
    """Median milliseconds of GET /api/tasks/stats per window, through the admin app over HTTP."""
    port = free_port()
    runner = web.AppRunner(create_admin_app(settings, redis, engine), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    medians = {}
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for window in ("1h", "24h"):
                timings = []
                for attempt in range(requests + 1):
                    started = time.perf_counter()
                    async with http.get(f"http://127.0.0.1:{port}/api/tasks/stats?window={window}") as response:
                        assert response.status == 200, await response.text()
                        body = await response.json()
                    if attempt:  # the first one warms the connection pool
                        timings.append((time.perf_counter() - started) * 1000)
                counted = sum(entry["counts"]["complete"] + entry["counts"]["failed"] for entry in body)
                assert counted > 0
                medians[window] = statistics.median(timings)
    finally:
        await runner.cleanup()
    return medians


async def main(quick: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    database, maintenance, redis_url = bench_urls()
    await create_database(database, maintenance)
    settings = load_settings(
        {
            "TRACKER_DATABASE_URL": database,
            "TRACKER_REDIS_URL": redis_url,
            "TRACKER_ADMIN_TOKEN": TOKEN,
            "TRACKER_LOG_LEVEL": "WARNING",
        }
    )
    engine = create_engine(database)
    redis = await connect_redis(redis_url)
    await redis.flushdb()
    try:
        async with transaction(session_factory(engine)) as session:
            await ensure_bootstrap_admin(session, TOKEN)
        seeded_s = await seed_records(engine, RECORDS)
        print(f"seeded {RECORDS:,} job records and their rollups in {seeded_s:.1f} s", flush=True)
        jobs, rounds = (1_000, 3) if quick else (5_000, 5)
        bare_s, recorded_s = await measure_overhead(redis, redis_url, settings, engine, jobs, rounds)
        ratio = recorded_s / bare_s
        print(
            f"no-op job: bare arq {bare_s * 1e6:.0f} us, with records {recorded_s * 1e6:.0f} us "
            f"({jobs:,} jobs x {rounds} rounds each, median)",
            flush=True,
        )
        stats_ms = await measure_stats(settings, redis, engine, 5 if quick else 20)
        print(
            f"GET /api/tasks/stats over {RECORDS:,} records: 1h {stats_ms['1h']:.1f} ms, 24h {stats_ms['24h']:.1f} ms "
            "(median)",
            flush=True,
        )
        print(
            f"RESULT overhead_ratio={ratio:.2f} stats_ms_1m={max(stats_ms.values()):.1f} "
            f"bare_us_per_job={bare_s * 1e6:.0f} recorded_us_per_job={recorded_s * 1e6:.0f}",
            flush=True,
        )
    finally:
        await redis.flushdb()
        await redis.aclose()
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller rounds, under a minute")
    asyncio.run(main(parser.parse_args().quick))
