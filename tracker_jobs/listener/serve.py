"""Running the device listener: the server, and the access watch that keeps its uniqueId directory
true to every change made through any admin process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from tracker_jobs.core.access import watch_access_changes
from tracker_jobs.core.config import Settings
from tracker_jobs.listener.http1 import HttpServer
from tracker_jobs.listener.osmand import Ingest, serve_listener

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running_listener(settings: Settings, ingest: Ingest, host: str, port: int) -> AsyncIterator[HttpServer]:
    """The listener serving on host:port (0: any free port) while the block runs."""
    watch = asyncio.create_task(watch_access_changes(ingest.acceptor.redis, ingest.directory.apply))
    try:
        server = await serve_listener(settings, ingest, host, port)
        try:
            yield server
        finally:
            await server.close()
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def serve(settings: Settings, ingest: Ingest, stopping: asyncio.Event) -> None:
    """Serve devices on TRACKER_HOST:TRACKER_OSMAND_PORT until `stopping` is set."""
    async with running_listener(settings, ingest, settings.host, settings.osmand_port):
        log.info("device listener on http://%s:%d", settings.host, settings.osmand_port)
        await stopping.wait()
