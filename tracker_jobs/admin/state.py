"""Typed keys for what the admin app keeps: settings, Redis, the database, the position acceptor."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import session_factory
from tracker_jobs.positions.acceptor import Acceptor
from tracker_jobs.users.service import Principal

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", ArqRedis)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
PRINCIPAL = web.RequestKey("principal", Principal)  # the authenticated caller
ACCEPTOR = web.AppKey("acceptor", Acceptor)  # the batch API's group commit into Redis


def set_resources(app: web.Application, settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> None:
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
    app[ACCEPTOR] = Acceptor(redis, settings.position_partitions)
