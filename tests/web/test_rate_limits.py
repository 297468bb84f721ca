"""Rate limits in Redis, answered with 429 and Retry-After: per token on the admin API, per address
without a token, per device (never per address) on the device listener."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.client import bearer
from tests.support.factories import USER_TOKEN, Users
from tests.support.services import make_settings, open_listener
from tracker_jobs.core.config import Settings
from tracker_jobs.web.app import create_admin_app

Client = TestClient[Any, Any]


@pytest.fixture
def limited(database_url: str, redis_url: str) -> Settings:
    return make_settings(
        database_url,
        redis_url,
        TRACKER_API_RATE_LIMIT="3",
        TRACKER_ANONYMOUS_RATE_LIMIT="2",
        TRACKER_DEVICE_RATE_LIMIT="2",
        TRACKER_RATE_LIMIT_WINDOW="1",
        TRACKER_AUTO_REGISTER="true",
    )


@pytest.fixture
async def limited_admin(limited: Settings, redis: ArqRedis, engine: AsyncEngine) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_admin_app(limited, redis, engine))) as client:
        yield client


async def test_the_admin_api_limits_each_token_and_each_address_without_one(
    limited_admin: Client, admin_headers: dict[str, str], users: Users
) -> None:
    for _ in range(3):
        assert (await limited_admin.get("/api/devices", headers=admin_headers)).status == 200
    refused = await limited_admin.get("/api/devices", headers=admin_headers)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert (await limited_admin.get("/api/devices", headers=bearer(USER_TOKEN))).status == 200  # its own count
    assert (await limited_admin.get("/health")).status == 200  # not under /api/

    login = {"email": "user@example.com", "password": "wrong"}
    statuses = [(await limited_admin.post("/api/session", json=login)).status for _ in range(3)]
    assert statuses == [401, 401, 429]  # guessing passwords from one address is slowed down

    await asyncio.sleep(1.1)  # the window passes
    assert (await limited_admin.get("/api/devices", headers=admin_headers)).status == 200


async def test_the_device_listener_limits_each_device_not_the_address(
    limited: Settings, redis: ArqRedis, engine: AsyncEngine
) -> None:
    async with open_listener(limited, redis, engine) as listener:

        async def report(device: str, second: int) -> int:
            query = {"id": device, "lat": "52.5", "lon": "13.4", "timestamp": str(1_767_225_600 + second)}
            return (await listener.get("/", params=query)).status

        assert [await report("truck-1", second) for second in range(3)] == [200, 200, 429]
        assert [await report("truck-2", second) for second in range(2)] == [200, 200]  # same address, own count
