"""/metrics in the Prometheus text format (read back with prometheus_client's parser), and JSON log
lines that carry the running job's id and name."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.probes import run_cleanup_burst
from tests.support.services import make_settings
from tracker_jobs.core.config import Settings
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.logs import configure_logging
from tracker_jobs.jobs.records import FLUSH_INTERVAL_S
from tracker_jobs.jobs.refs import CLEANUP, JOBS, REPORTS
from tracker_jobs.monitor import counters
from tracker_jobs.web.app import create_admin_app
from tracker_jobs.web.socket import CLIENTS_KEY

Client = TestClient[Any, Any]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_show_jobs_queues_workers_and_engine_counters(
    admin_client: Client, settings: Settings, redis: ArqRedis
) -> None:
    for arguments in ({}, {"seconds": 0.01}, {"seconds": -1}):
        await enqueue(redis, JOBS["ping"], **arguments)
    await run_cleanup_burst(settings)
    await enqueue(redis, JOBS["ping"])  # left waiting: no worker serves it now
    await asyncio.sleep(FLUSH_INTERVAL_S * 2)  # its record is written behind it
    await counters.count(redis, {counters.POSITIONS_ACCEPTED: 7, counters.POSITIONS_STORED: 5})
    await redis.hset(CLIENTS_KEY, mapping={"host:1": 2, "host:2": 3})  # type: ignore[misc]

    response = await admin_client.get("/metrics")  # no token needed by default
    assert response.status == 200
    assert response.content_type == "text/plain"
    found = samples(await response.text())
    ping = {("name", "ping"), ("queue", CLEANUP)}
    assert found[("tracker_jobs_finished_total", frozenset({*ping, ("outcome", "complete")}))] == 2
    assert found[("tracker_jobs_finished_total", frozenset({*ping, ("outcome", "failed")}))] == 1
    assert found[("tracker_job_duration_seconds_count", frozenset(ping))] == 3
    assert found[("tracker_job_duration_seconds_bucket", frozenset({*ping, ("le", "+Inf")}))] == 3
    assert found[("tracker_job_duration_seconds_bucket", frozenset({*ping, ("le", "0.001")}))] <= 2
    assert found[("tracker_job_duration_seconds_sum", frozenset(ping))] >= 0.01
    assert found[("tracker_jobs", frozenset({*ping, ("state", "queued")}))] == 1
    assert found[("tracker_queue_length", frozenset({("queue", CLEANUP)}))] == 1
    assert found[("tracker_queue_length", frozenset({("queue", REPORTS)}))] == 0
    assert found[("tracker_workers", frozenset({("state", "live")}))] == 0
    assert found[("tracker_positions_accepted_total", frozenset())] == 7
    assert found[("tracker_positions_stored_total", frozenset())] == 5
    assert found[("tracker_positions_rejected_total", frozenset())] == 0
    assert found[("tracker_websocket_clients", frozenset())] == 5


async def test_a_metrics_token_is_required_once_set(
    database_url: str, redis_url: str, redis: ArqRedis, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_METRICS_TOKEN="scrape-secret")
    async with TestClient(TestServer(create_admin_app(settings, redis, engine))) as client:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})).status == 200


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Logging as `TRACKER_LOG_FORMAT=json TRACKER_LOG_LEVEL=DEBUG` sets it up, writing into a buffer
    instead of stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", "json")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_json_log_lines_carry_the_job(settings: Settings, redis: ArqRedis, json_logs: io.StringIO) -> None:
    job = await enqueue(redis, JOBS["probe_log_line"], text="hello")
    assert job is not None
    await run_cleanup_burst(settings)
    lines = [orjson.loads(line) for line in json_logs.getvalue().splitlines()]
    said = next(line for line in lines if line["message"] == "probe says hello")
    assert (said["job_id"], said["job_name"], said["level"]) == (job.job_id, "probe_log_line", "WARNING")
    assert said["logger"] == "tests.support.probes"
    outside = next(line for line in lines if line["logger"] == "arq.worker")
    assert "job_id" not in outside
    assert outside["level"] == "DEBUG"  # arq's routine lines (a job's start and success) are DEBUG
