"""Typed keys for what the admin app keeps: settings, Redis, the database; and the caller of a request."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import session_factory
from tracker_jobs.core.principal import Principal

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", ArqRedis)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
PRINCIPAL = web.RequestKey("principal", Principal)  # the authenticated caller


def set_resources(app: web.Application, settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> None:
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
