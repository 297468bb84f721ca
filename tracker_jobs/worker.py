"""One arq WorkerSettings class per queue, THE cron table, and running several queues in one process.

Each class works with the arq CLI (`arq tracker_jobs.worker.PositionsWorker`, Redis from
TRACKER_REDIS_URL); `tracker-jobs worker --queues positions,reports` runs several in one event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy.exc
from arq import Worker, cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.typing import WorkerCoroutine, WorkerSettingsBase
from arq.worker import Function, func

from tracker_jobs.cleanup.partitions import ensure_partitions
from tracker_jobs.core.config import Settings, get_settings
from tracker_jobs.core.db import create_engine, session_factory, utcnow
from tracker_jobs.core.redis import connect_redis, redis_settings
from tracker_jobs.core.serialization import deserialize_job, serialize_job
from tracker_jobs.job_catalog import job_specs
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import queue_key, queue_of_key
from tracker_jobs.jobs.heartbeat import CURRENT_PROCESS
from tracker_jobs.jobs.records import RecordFlusher
from tracker_jobs.jobs.refs import CLEANUP, COMMANDS, NOTIFICATIONS, POSITIONS, QUEUES, REPORTS, JobRef
from tracker_jobs.jobs.resources import WorkerResources
from tracker_jobs.processes import stop_on_signals

log = logging.getLogger(__name__)


class RoutineArqLines(logging.Filter):
    """arq logs every job's start and success, each worker's start and health, at INFO: routine lines
    that bury what a person should read, so they are shown at DEBUG only. So are its "shutdown on ..."
    lines (two per queue, one naming a signal nobody sent): the process says once why it stops
    (processes.stop_on_signals). Failures, retries and aborts stay as arq logs them."""

    ROUTINE = (" → ", " ← ", "Starting worker", "recording health", "redis_version=", "shutdown on")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.levelno == logging.INFO and any(mark in message for mark in self.ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("tracker_jobs").isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("arq.worker").addFilter(RoutineArqLines())


def _cron(ref: JobRef, **schedule: Any) -> CronJob:
    spec = job_specs()[ref.name]
    coroutine = cast(WorkerCoroutine, spec.coroutine)
    # A kept result holds the tick's job id for an hour, so a late worker cannot run the tick again.
    return cron(coroutine, name=ref.name, timeout=spec.arq_timeout_s, keep_result=3600, **schedule)


# THE cron table: the only place a schedule lives. arq gives each tick a unique job id
# (name + time), so when several workers serve a queue, each tick runs once.
CRON_TABLE: dict[str, list[CronJob]] = {
    POSITIONS: [_cron(refs.SWEEP_POSITION_PARTITIONS, second={0, 30})],
    CLEANUP: [
        # Retention hourly, so each run removes an hour's worth (on PostgreSQL, a day's partition once a day).
        _cron(refs.CLEANUP_OLD_POSITIONS, minute=10, second=0),
        _cron(refs.CLEANUP_OLD_EVENTS, minute=20, second=0),
        _cron(refs.CLEANUP_EXPIRED_SESSIONS, minute={0, 30}, second=0),
        _cron(refs.CLEANUP_JOB_RECORDS, minute=15, second=0),
        _cron(refs.CLEANUP_CACHE, minute=25, second=0),
        _cron(refs.CREATE_PARTITIONS, minute=40, second=0),  # hourly: cheap, and catches a missed day
        _cron(refs.CLEANUP_DUPLICATE_POSITIONS, hour={1}, minute=35, second=0),
        _cron(refs.CLEANUP_ORPHANED_DATA, hour={2}, minute=35, second=0),
        _cron(refs.OPTIMIZE_DATABASE, hour={3}, minute=50, second=0),  # a quiet hour in TRACKER_TIMEZONE
    ],
    REPORTS: [_cron(refs.GENERATE_DAILY_REPORTS, hour={0}, minute={0}, second={0})],
    NOTIFICATIONS: [
        _cron(refs.SWEEP_DELIVERIES, second={15, 45}),
        _cron(refs.SEND_DAILY_SUMMARIES, minute=5, second=0),  # each user's summary at their local hour
        _cron(refs.CHECK_SYSTEM_ALERTS, second=30),
    ],
    COMMANDS: [
        _cron(refs.EXPIRE_COMMANDS, second=5),  # every minute
        _cron(refs.RETRY_FAILED_COMMANDS, second={20, 50}),
    ],
}

# How often an idle worker looks for new jobs. Positions must be visible within a second of arrival,
# and a tenth of a second lets each drain find more to store at once (fewer, larger batches). A
# notification is owed within a second of its position, and each of its jobs is already a batch: its
# queue is looked at every 20 ms (one cheap ZRANGEBYSCORE on a mostly empty set). A command's gateway try
# may wait a fifth of a second (what the listener saw is recorded a second later on purpose).
POLL_DELAY_S = {POSITIONS: 0.1, REPORTS: 0.25, CLEANUP: 0.25, NOTIFICATIONS: 0.02, COMMANDS: 0.2}
# How many jobs of a queue one process runs at once.
CONCURRENCY = {POSITIONS: 16, REPORTS: 2, CLEANUP: 2, NOTIFICATIONS: 20, COMMANDS: 20}


_resources: WorkerResources | None = None


async def on_startup(ctx: dict[str, Any]) -> None:
    """Open the process's shared resources once, however many queues the process serves."""
    global _resources
    queue = queue_of_key(ctx["redis"].default_queue_name)
    CURRENT_PROCESS.queues.add(queue)
    CURRENT_PROCESS.concurrency[queue] = CONCURRENCY[queue]
    if _resources is None:
        settings = ctx.get("settings") or get_settings()  # the arq CLI's workers have no ctx of ours
        engine = create_engine(settings.database_url)
        _resources = WorkerResources(settings, engine, session_factory(engine), consumer=CURRENT_PROCESS.key)
        await _make_partitions(_resources, ctx["redis"])  # before the process shows as live
        _resources.heartbeat = asyncio.create_task(CURRENT_PROCESS.beat_forever(ctx["redis"]))
        _resources.records = RecordFlusher(ctx["redis"], _resources.sessions)
        _resources.records.start()
    _resources.users += 1
    ctx["resources"] = _resources
    await CURRENT_PROCESS.beat(ctx["redis"])  # show the new queue now, not at the next beat


async def _make_partitions(shared: WorkerResources, redis: ArqRedis) -> None:
    """The coming days' position and event partitions, at start (and hourly by the cron): a worker that
    starts after a long stop does not write its first rows into the default partitions."""
    try:
        await ensure_partitions(shared.sessions, redis, utcnow().date())
    except sqlalchemy.exc.SQLAlchemyError as error:  # the cron tries again within the hour
        log.warning("could not make the coming days' partitions: %s", error)


async def on_shutdown(ctx: dict[str, Any]) -> None:
    global _resources
    resources = ctx.get("resources")
    if resources is None:
        return
    queue = queue_of_key(ctx["redis"].default_queue_name)  # no longer served here (it may come back)
    CURRENT_PROCESS.queues.discard(queue)
    CURRENT_PROCESS.concurrency.pop(queue, None)
    resources.users -= 1
    if resources.users == 0:
        if resources.heartbeat is not None:
            resources.heartbeat.cancel()
        if resources.records is not None:
            await resources.records.stop()  # writes what is left
        await CURRENT_PROCESS.remove(ctx["redis"])
        for cached in resources.caches.values():
            close = getattr(cached, "close", None)  # e.g. the webhook client's connections
            if inspect.iscoroutinefunction(close):
                await close()
        await resources.engine.dispose()
        _resources = None


def queue_functions(queue: str) -> list[Function]:
    return [
        func(
            cast(WorkerCoroutine, spec.coroutine),
            name=spec.name,
            timeout=spec.arq_timeout_s,
            max_tries=spec.max_tries,
            keep_result=spec.keep_result_s,
        )
        for spec in job_specs().values()
        if spec.queue == queue
    ]


def worker_settings(queue: str, settings: Settings) -> type[WorkerSettingsBase]:
    """The arq settings class of one queue (arq reads only a class's own attributes, so no base class)."""
    attributes: dict[str, Any] = {
        "queue_name": queue_key(queue),
        "functions": queue_functions(queue),
        "cron_jobs": CRON_TABLE.get(queue, []),
        "redis_settings": redis_settings(settings.redis_url or "redis://127.0.0.1:6379/0"),
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "max_jobs": CONCURRENCY[queue],
        "job_timeout": 300,
        "keep_result": 3600,
        "max_tries": 5,
        "retry_jobs": True,
        "allow_abort_jobs": True,
        "health_check_interval": 30,
        "poll_delay": POLL_DELAY_S[queue],
        "timezone": ZoneInfo(settings.timezone),
    }
    return type(f"{queue.title()}Worker", (), attributes)


# What the arq CLI names (`arq tracker_jobs.worker.PositionsWorker`): built from the settings when it is
# first looked up (module __getattr__), not when the module is imported.
_CLI_CLASSES = {f"{queue.title()}Worker": queue for queue in QUEUES}


def __getattr__(name: str) -> type[WorkerSettingsBase]:
    if name in _CLI_CLASSES:
        return worker_settings(_CLI_CLASSES[name], get_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_queues(text: str | None) -> list[str]:
    """`positions,reports` -> the queue names; empty or None -> all of them."""
    if not text:
        return list(QUEUES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUEUES]
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(unknown)}; expected some of {', '.join(QUEUES)}")
    return list(dict.fromkeys(names))


def build_worker(queue: str, redis_url: str, *, settings: Settings | None = None, **overrides: Any) -> Worker:
    """An arq worker for one queue; `settings` (default: the process's) also reach the jobs through ctx."""
    settings = settings or get_settings()
    settings_class = worker_settings(queue, settings)
    options = {key: value for key, value in vars(settings_class).items() if not key.startswith("__")}
    options["redis_settings"] = redis_settings(redis_url)
    options["ctx"] = {"settings": settings}
    options.update(overrides)
    return Worker(**options)


async def run_queues(queues: list[str], redis_url: str) -> None:
    """Serve the given queues in this event loop until SIGINT/SIGTERM; ride out Redis outages."""
    probe = await connect_redis(redis_url)  # a clear error now beats a traceback from inside arq
    await probe.aclose()
    empty = [queue for queue in queues if not queue_functions(queue)]
    if empty:
        log.warning("no jobs registered on queue(s) %s yet; not serving them", ", ".join(empty))
        queues = [queue for queue in queues if queue not in empty]
    stopping = stop_on_signals("worker")
    await asyncio.gather(*(_serve_queue(queue, redis_url, stopping) for queue in queues))


async def _serve_queue(queue: str, redis_url: str, stopping: asyncio.Event) -> None:
    delay = 1.0
    while not stopping.is_set():
        worker = build_worker(queue, redis_url, handle_signals=False)
        run = asyncio.create_task(worker.async_run())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            # Running jobs are cancelled: a drain's unacknowledged entries are claimed by the next one.
            worker.handle_sig(signal.SIGTERM)
            await asyncio.gather(run, return_exceptions=True)
            await wind_down(worker)
            await _close(worker)
            return
        stop.cancel()
        error = run.exception() if not run.cancelled() else None
        await _close(worker)
        log.warning("%s worker stopped (%s); restarting in %.0f s", queue, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def wind_down(worker: Worker) -> None:
    """Wait until the jobs a stopping worker cancelled have finished their clean-up (and told their
    records), then forget them: close() would cancel them a second time and re-raise the cancellation."""
    while unfinished := [task for task in worker.tasks.values() if not task.done()]:
        await asyncio.gather(*unfinished, return_exceptions=True)
    worker.tasks.clear()


async def _close(worker: Worker) -> None:
    try:
        await worker.close()
    except Exception as error:  # Redis may be gone; nothing left to tidy then
        log.debug("closing worker: %s", error)
