"""Jobs that exist only for these tests, registered on the cleanup queue: they fail, time out and log
on purpose, so the real worker shows how the job base records each case."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq import Worker

from tracker_jobs.core.config import Settings
from tracker_jobs.jobs.base import job
from tracker_jobs.jobs.refs import CLEANUP, JobRef
from tracker_jobs.worker import build_worker, queue_functions

log = logging.getLogger(__name__)
PROBE_TRANSIENT_FAILURE = JobRef("probe_transient_failure", CLEANUP)
PROBE_TIMEOUT = JobRef("probe_timeout", CLEANUP)
PROBE_LOG_LINE = JobRef("probe_log_line", CLEANUP)


@job(PROBE_TRANSIENT_FAILURE, timeout_s=60, max_tries=2)
async def probe_transient_failure(ctx: dict[str, Any]) -> None:
    raise ConnectionError("a pretend outage")


@job(PROBE_TIMEOUT, timeout_s=1, max_tries=3)
async def probe_timeout(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)


@job(PROBE_LOG_LINE, timeout_s=10)
async def probe_log_line(ctx: dict[str, Any], text: str) -> dict[str, Any]:
    log.warning("probe says %s", text)
    return {"said": text}


async def run_cleanup_burst(settings: Settings) -> Worker:
    """The real cleanup worker in burst mode, with the probe jobs registered above."""
    assert settings.redis_url is not None
    worker = build_worker(
        CLEANUP,
        settings.redis_url,
        burst=True,
        handle_signals=False,
        poll_delay=0.05,
        ctx={"settings": settings},
        functions=queue_functions(CLEANUP),
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()
    return worker
