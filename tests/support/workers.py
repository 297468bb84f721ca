"""Running the real arq workers inside a test: burst mode drains a queue, then returns."""

from __future__ import annotations

from tracker_jobs.core.config import Settings
from tracker_jobs.worker import build_worker


async def run_burst(settings: Settings, queue: str) -> int:
    """Run the queue's real worker until its queue is empty; return how many jobs completed."""
    assert settings.redis_url is not None
    worker = build_worker(
        queue, settings.redis_url, burst=True, handle_signals=False, poll_delay=0.05, ctx={"settings": settings}
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()
    completed: int = worker.jobs_complete
    return completed
