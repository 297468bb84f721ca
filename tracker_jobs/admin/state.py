"""Typed keys for what the aiohttp apps keep: settings, Redis, database; what they share with the listener."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import session_factory
from tracker_jobs.devices.service import DeviceDirectory
from tracker_jobs.positions.acceptor import Acceptor
from tracker_jobs.users.service import Principal

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", ArqRedis)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
PRINCIPAL = web.RequestKey("principal", Principal)  # the authenticated caller
ACCEPTOR = web.AppKey("acceptor", Acceptor)
DIRECTORY = web.AppKey("directory", DeviceDirectory)
_ACCEPTORS: WeakKeyDictionary[ArqRedis, Acceptor] = WeakKeyDictionary()
_DIRECTORIES: WeakKeyDictionary[AsyncEngine, DeviceDirectory] = WeakKeyDictionary()


def set_resources(app: web.Application, settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> None:
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
    app[ACCEPTOR] = shared_acceptor(settings, redis)
    app[DIRECTORY] = shared_directory(engine)


# The admin app and the device listener of one process share these: a device deleted through the API
# is forgotten by the listener too, and their positions share Redis writes.
def shared_acceptor(settings: Settings, redis: ArqRedis) -> Acceptor:
    if redis not in _ACCEPTORS:
        _ACCEPTORS[redis] = Acceptor(redis, settings.position_partitions)
    return _ACCEPTORS[redis]


def shared_directory(engine: AsyncEngine) -> DeviceDirectory:
    if engine not in _DIRECTORIES:
        _DIRECTORIES[engine] = DeviceDirectory(session_factory(engine))
    return _DIRECTORIES[engine]
