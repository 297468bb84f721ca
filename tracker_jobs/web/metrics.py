"""GET /metrics in the Prometheus text format, built at each scrape from Redis and the rollup tables.

No token is needed unless TRACKER_METRICS_TOKEN is set (then `Authorization: Bearer <it>`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tracker_jobs.api.access import bearer_token
from tracker_jobs.api.keys import REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.openapi import Operation, Reply, documented
from tracker_jobs.api.routes import Route
from tracker_jobs.core.errors import HttpError
from tracker_jobs.jobs.heartbeat import live_workers
from tracker_jobs.jobs.models import DURATION_BOUNDS_S, OUTCOME_COLUMNS
from tracker_jobs.monitor import counters
from tracker_jobs.monitor.backlog import queue_backlogs
from tracker_jobs.monitor.stats import Rollup, job_totals, unfinished_counts
from tracker_jobs.web.socket import CLIENTS_KEY

COUNTER_HELP = {
    counters.POSITIONS_ACCEPTED: "Positions accepted from devices and the batch API (in Redis)",
    counters.POSITIONS_REJECTED: "Positions refused at the door: malformed, unknown or disabled device, over its rate limit",
    counters.POSITIONS_STORED: "Positions written to the database",
    counters.POSITIONS_DROPPED: "Positions the pipeline filtered out (duplicates, jumps, ...)",
}


class Snapshot(Collector):
    """The values read for one scrape, as metric families."""

    def __init__(
        self,
        totals: list[Rollup],
        unfinished: dict[tuple[str, str], dict[str, int]],
        backlogs: list[Any],
        workers: list[dict[str, Any]],
        engine_counts: dict[str, int],
        websocket_clients: int,
    ) -> None:
        self.totals = totals
        self.unfinished = unfinished
        self.backlogs = backlogs
        self.workers = workers
        self.engine_counts = engine_counts
        self.websocket_clients = websocket_clients

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._queues()
        workers = GaugeMetricFamily("tracker_workers", "Worker processes by heartbeat state", labels=["state"])
        for state in ("live", "lost"):
            workers.add_metric([state], sum(1 for worker in self.workers if worker["state"] == state))
        yield workers
        for name in sorted(COUNTER_HELP.keys() | self.engine_counts.keys()):
            yield CounterMetricFamily(
                f"tracker_{name}", COUNTER_HELP.get(name, name.replace("_", " ")), value=self.engine_counts.get(name, 0)
            )
        yield GaugeMetricFamily(
            "tracker_websocket_clients",
            "Open websocket connections on all admin processes",
            value=self.websocket_clients,
        )

    def _jobs(self) -> Iterator[Metric]:
        finished = CounterMetricFamily(
            "tracker_jobs_finished", "Finished job tries by outcome", labels=["name", "queue", "outcome"]
        )
        durations = HistogramMetricFamily(
            "tracker_job_duration_seconds", "Run time of complete and failed tries", labels=["name", "queue"]
        )
        for rollup in self.totals:
            for outcome in OUTCOME_COLUMNS:
                finished.add_metric([rollup.name, rollup.queue, outcome], rollup.counts[outcome])
            cumulative, buckets = 0, []
            for bound, number in zip((*map(str, DURATION_BOUNDS_S), "+Inf"), rollup.buckets, strict=True):
                cumulative += number
                buckets.append((bound, cumulative))
            durations.add_metric([rollup.name, rollup.queue], buckets, rollup.duration_sum_s)
        unfinished = GaugeMetricFamily(
            "tracker_jobs", "Jobs queued, running or waiting for a retry, by state", labels=["name", "queue", "state"]
        )
        for (name, queue), by_state in sorted(self.unfinished.items()):
            for state, number in by_state.items():
                unfinished.add_metric([name, queue, state], number)
        yield from (finished, durations, unfinished)

    def _queues(self) -> Iterator[Metric]:
        length = GaugeMetricFamily("tracker_queue_length", "Jobs in the queue not running", labels=["queue"])
        running = GaugeMetricFamily("tracker_queue_running", "Jobs of the queue running now", labels=["queue"])
        oldest = GaugeMetricFamily(
            "tracker_queue_oldest_waiting_age_seconds", "Age of the oldest waiting job", labels=["queue"]
        )
        for backlog in self.backlogs:
            length.add_metric([backlog.name], backlog.waiting + backlog.deferred)
            running.add_metric([backlog.name], backlog.running)
            oldest.add_metric([backlog.name], backlog.oldest_waiting_age_s or 0.0)
        yield from (length, running, oldest)


async def read_snapshot(request: web.Request) -> Snapshot:
    redis = request.app[REDIS]
    async with request.app[SESSIONS]() as session:
        totals = await job_totals(session)
        unfinished = await unfinished_counts(session)
    clients: dict[bytes, bytes] = await redis.hgetall(CLIENTS_KEY)  # type: ignore[misc]
    return Snapshot(
        totals,
        unfinished,
        await queue_backlogs(redis),
        await live_workers(redis),
        await counters.read_counts(redis),
        sum(int(count) for count in clients.values()),
    )


@documented(
    Operation(
        "Prometheus metrics: jobs by name and state, durations, queues, workers, positions, sockets",
        {200: Reply("Prometheus text format", {"type": "string"}, media_type="text/plain")},
        auth="metrics",
        tag="health",
    )
)
async def metrics(request: web.Request) -> web.Response:
    expected = request.app[SETTINGS].metrics_token
    if expected is not None and not hmac.compare_digest((bearer_token(request) or "").encode(), expected.encode()):
        raise HttpError(401, "unauthorized", "this needs Authorization: Bearer <TRACKER_METRICS_TOKEN>")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(await read_snapshot(request))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [
    Route("GET", "/metrics", metrics),
]
