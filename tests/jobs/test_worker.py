"""Worker processes: queue selection, heartbeats that /health counts, and cron ticks that run once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq import Worker, cron
from arq.connections import ArqRedis

from tracker_jobs import worker as worker_module
from tracker_jobs.core.config import Settings
from tracker_jobs.core.redis import redis_settings
from tracker_jobs.core.serialization import deserialize_job, serialize_job
from tracker_jobs.jobs.heartbeat import CURRENT_PROCESS, live_workers
from tracker_jobs.jobs.refs import POSITIONS, QUEUES
from tracker_jobs.worker import build_worker, parse_queues


def test_queue_selection() -> None:
    assert parse_queues(None) == list(QUEUES)
    assert parse_queues("positions, reports,positions") == ["positions", "reports"]
    with pytest.raises(ValueError, match="unknown queue"):
        parse_queues("positions,emails")


def test_every_queue_has_arq_settings_with_json_serialisation() -> None:
    for queue in QUEUES:
        settings_class = getattr(worker_module, f"{queue.title()}Worker")  # as the arq CLI looks it up
        assert vars(settings_class)["queue_name"] == f"tracker:queue:{queue}"
        assert vars(settings_class)["job_serializer"] is serialize_job


async def test_a_running_worker_beats_and_health_counts_it(
    settings: Settings, admin_client: TestClient[Any, Any], redis: ArqRedis
) -> None:
    assert settings.redis_url is not None
    worker = build_worker(POSITIONS, settings.redis_url, handle_signals=False, ctx={"settings": settings})
    run = asyncio.create_task(worker.async_run())
    try:
        for _ in range(100):
            if await live_workers(redis):
                break
            await asyncio.sleep(0.05)
        workers = await live_workers(redis)
        assert len(workers) == 1
        assert workers[0]["pid"] == CURRENT_PROCESS.pid
        assert workers[0]["queues"] == [POSITIONS]
        assert workers[0]["state"] == "live"
        health = await (await admin_client.get("/health")).json()
        assert health["status"] == "healthy"
        assert health["workers"] == 1
    finally:
        worker.handle_sig(15)
        await asyncio.gather(run, return_exceptions=True)
        await worker.close()
    assert await live_workers(redis) == []


async def test_two_workers_run_each_cron_tick_once(redis_url: str, redis: ArqRedis) -> None:
    """arq's unique cron job ids (name + tick time), with our serialiser, as the cron table uses them."""

    async def tick(ctx: dict[str, Any]) -> None:
        await ctx["redis"].incr("test:ticks")

    def make_worker() -> Worker:
        return Worker(
            cron_jobs=[cron(tick, name="tick", second=set(range(60)), keep_result=3600)],  # type: ignore[arg-type]
            queue_name="test:cron",
            redis_settings=redis_settings(redis_url),
            job_serializer=serialize_job,
            job_deserializer=deserialize_job,
            handle_signals=False,
            poll_delay=0.05,
        )

    workers = [make_worker(), make_worker()]
    runs = [asyncio.create_task(worker.async_run()) for worker in workers]
    await asyncio.sleep(3.5)
    for worker in workers:
        worker.handle_sig(15)
    await asyncio.gather(*runs, return_exceptions=True)
    for worker in workers:
        await worker.close()
    ran = sum(worker.jobs_complete for worker in workers)
    assert ran == int(await redis.get("test:ticks") or 0)
    assert 2 <= ran <= 5  # one per second elapsed, not two
