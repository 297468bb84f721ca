"""Typed keys for what the aiohttp apps keep: settings, Redis, database."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tracker_jobs.config import Settings
from tracker_jobs.db import session_factory
from tracker_jobs.users.service import Principal

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
