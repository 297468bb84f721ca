"""The device listener: a 200 only once the position is in Redis; bad requests are refused whole."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.services import make_settings, open_listener
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.jobs.base import queue_key
from tracker_jobs.jobs.refs import POSITIONS
from tracker_jobs.positions import stream

Client = TestClient[Any, Any]


async def stream_lengths(redis: ArqRedis, partitions: int) -> int:
    """Positions waiting in the streams (an entry holds a group's positions; its field n counts them)."""
    total = 0
    for partition in range(partitions):
        for _, fields in await redis.xrange(stream.stream_key(partition)):
            total += int(fields[b"n"])
    return total


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"lat": "1", "lon": "2"}, "id"),
        ({"id": "d1", "lat": "95", "lon": "2"}, "lat"),
        ({"id": "d1", "lat": "1", "lon": "x"}, "lon"),
        ({"id": "d1", "lat": "1"}, "lon"),
        ({"id": "d1", "lat": "1", "lon": "2", "timestamp": "tomorrow"}, "timestamp"),
    ],
)
async def test_bad_requests_are_400_and_nothing_is_enqueued(
    ingest_client: aiohttp.ClientSession, redis: ArqRedis, settings: Settings, query: dict[str, str], field: str
) -> None:
    response = await ingest_client.get("/", params=query)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["message"].startswith(f"{field}:")
    assert await stream_lengths(redis, settings.position_partitions) == 0
    assert await redis.zcard(queue_key(POSITIONS)) == 0


async def test_unknown_device_is_404_when_auto_register_is_off(
    ingest_client: aiohttp.ClientSession, redis: ArqRedis, settings: Settings
) -> None:
    assert settings.auto_register is False
    response = await ingest_client.get("/", params={"id": "stranger", "lat": "1", "lon": "2"})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "unknown_device"
    assert await stream_lengths(redis, settings.position_partitions) == 0


async def test_auto_register_creates_the_device_and_stores_form_posts(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    engine: AsyncEngine,
    admin_client: Client,
    admin_headers: dict[str, str],
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_AUTO_REGISTER="true")
    async with open_listener(settings, redis, engine) as client:
        for second in range(3):
            response = await client.post(
                "/", data={"id": "phone-1", "lat": "48.1", "lon": "11.5", "timestamp": str(1767225600 + second)}
            )
            assert response.status == 200
    assert await stream_lengths(redis, settings.position_partitions) == 3
    await run_burst(settings, POSITIONS)
    assert await stream_lengths(redis, settings.position_partitions) == 0
    devices = await (await admin_client.get("/api/devices", headers=admin_headers)).json()
    assert [d["uniqueId"] for d in devices] == ["phone-1"]
    positions = await (
        await admin_client.get(
            "/api/positions",
            params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
            headers=admin_headers,
        )
    ).json()
    assert [p["fixTime"][-11:] for p in positions] == ["00:00+00:00", "00:01+00:00", "00:02+00:00"]
    device = devices[0]
    assert device["status"] == "online"
    assert device["positionId"] == positions[-1]["id"]


async def test_a_rerun_batch_stores_nothing_twice(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    engine: AsyncEngine,
    admin_client: Client,
    admin_headers: dict[str, str],
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_AUTO_REGISTER="true")
    query = {"id": "twice", "lat": "1", "lon": "2", "timestamp": "1767225600"}
    async with open_listener(settings, redis, engine) as client:
        assert (await client.get("/", params=query)).status == 200
        await run_burst(settings, POSITIONS)
        assert (await client.get("/", params=query)).status == 200  # the device sends it again
        await run_burst(settings, POSITIONS)
    positions = await (
        await admin_client.get("/api/positions", params={"from": "2026-01-01T00:00:00Z"}, headers=admin_headers)
    ).json()
    assert len(positions) == 1


async def test_redis_down_answers_503_with_retry_after(database_url: str, redis_url: str, engine: AsyncEngine) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_AUTO_REGISTER="true")
    dead = ArqRedis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
    async with open_listener(settings, dead, engine) as client:
        response = await client.get("/", params={"id": "any", "lat": "1", "lon": "2"})
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"]["code"] == "unavailable"
    await dead.aclose()


async def test_each_device_has_its_own_rate_limit(
    database_url: str, redis_url: str, redis: ArqRedis, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_AUTO_REGISTER="true", TRACKER_DEVICE_RATE_LIMIT="2")
    async with open_listener(settings, redis, engine) as client:
        for second in range(2):
            response = await client.get(
                "/", params={"id": "chatty", "lat": "1", "lon": "2", "timestamp": str(1767225600 + second)}
            )
            assert response.status == 200
        limited = await client.get("/", params={"id": "chatty", "lat": "1", "lon": "2", "timestamp": "1767225602"})
        assert limited.status == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert (await limited.json())["error"]["code"] == "rate_limited"
        # Another tracker behind the same gateway (same address) is not affected.
        other = await client.get("/", params={"id": "quiet", "lat": "1", "lon": "2"})
        assert other.status == 200
    assert await stream_lengths(redis, settings.position_partitions) == 3  # the refused one was not kept


async def test_other_paths_and_methods_are_refused_with_json(ingest_client: aiohttp.ClientSession) -> None:
    query = {"id": "d1", "lat": "1", "lon": "2"}
    elsewhere = await ingest_client.get("/api/positions", params=query)
    assert (elsewhere.status, (await elsewhere.json())["error"]["code"]) == (404, "not_found")
    deleted = await ingest_client.delete("/", params=query)
    assert (deleted.status, deleted.headers["Allow"]) == (405, "GET, POST")
    assert (await deleted.json())["error"]["code"] == "method_not_allowed"


async def test_a_repeated_field_keeps_its_first_value_and_garbage_bytes_are_replaced(
    database_url: str, redis_url: str, redis: ArqRedis, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_AUTO_REGISTER="true")
    async with open_listener(settings, redis, engine) as client:
        assert (await client.get("/?id=gw-1&lat=1&lat=95&lon=2&note=%ff+x")).status == 200
    [(_, fields)] = [
        entry for p in range(settings.position_partitions) for entry in await redis.xrange(stream.stream_key(p))
    ]
    [position] = orjson.loads(fields[b"p"])
    assert position["latitude"] == 1.0
    assert position["attributes"] == {"note": "\ufffd x"}


async def test_form_bodies_follow_their_charset_and_ignore_a_trailing_line_break(
    database_url: str, redis_url: str, redis: ArqRedis, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_AUTO_REGISTER="true")
    body = "id=gw-2&lat=1&lon=2&driver=J%FCrgen&motion=true\r\n".encode("latin-1")
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"}
    async with open_listener(settings, redis, engine) as client:
        assert (await client.post("/", data=body, headers=headers)).status == 200
    [(_, fields)] = [
        entry for p in range(settings.position_partitions) for entry in await redis.xrange(stream.stream_key(p))
    ]
    [position] = orjson.loads(fields[b"p"])
    assert position["attributes"] == {"driver": "Jürgen", "motion": True}
