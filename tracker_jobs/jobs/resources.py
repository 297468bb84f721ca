"""What every job in a worker process shares, and the typed way a job reaches it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tracker_jobs.core.config import Settings
from tracker_jobs.jobs.records import RecordFlusher


@dataclass
class WorkerResources:
    """Settings, the database, the process's stream consumer name; opened once per worker process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    consumer: str
    users: int = 0  # the queues this process serves that share these
    heartbeat: asyncio.Task[None] | None = field(default=None, repr=False)
    records: RecordFlusher | None = field(default=None, repr=False)
    # What a domain keeps between its jobs in this process (arq gives each job a fresh ctx dict); a
    # value with an async close() is closed when the process stops.
    caches: dict[str, Any] = field(default_factory=dict, repr=False)


def resources(ctx: dict[str, Any]) -> WorkerResources:
    """A job's shared resources (arq hands every job the same `ctx`; the worker's start-up fills it)."""
    found: WorkerResources = ctx["resources"]
    return found
