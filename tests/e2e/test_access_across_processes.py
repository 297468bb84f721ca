"""A change of access made through one admin process reaches every other at once (issue 9, items 1, 2
and 10), on the real processes: two `tracker-jobs admin`, two `tracker-jobs listener` and a worker
sharing Redis and a database.

- an open websocket closes when its session ends, its user's password changes, its token is revoked,
  its user is disabled or deleted; a demoted admin's socket is filtered as a user's from then on;
- a device deleted through one process is forgotten by the other's listener: reporting again, it is
  registered anew under a new id and its positions are stored, not dropped;
- a device disabled through one process is refused by the other's listener.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from tests.support.processes import engine_env, listening, running, tracker_jobs_command, wait_for
from tests.support.services import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class Engine:
    """Two admin processes, two listeners and a positions worker."""

    def __init__(self, first: dict[str, str], second: dict[str, str]) -> None:
        self.admin = [f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}" for env in (first, second)]
        self.listener = [f"http://127.0.0.1:{env['TRACKER_OSMAND_PORT']}" for env in (first, second)]


@pytest.fixture
def engine(tmp_path: Path, redis_url: str, redis: Any) -> Iterator[Engine]:  # `redis`: flushed before they start
    shared = {
        "TRACKER_DATABASE_URL": f"sqlite:///{tmp_path / 'access.db'}",
        "TRACKER_REDIS_URL": redis_url,
        "TRACKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "TRACKER_AUTO_REGISTER": "true",
    }
    first, second = engine_env(**shared), engine_env(**shared)
    subprocess.run(tracker_jobs_command("migrate"), cwd=tmp_path, env=first, check=True, capture_output=True)
    with ExitStack() as stack:
        for env in (first, second):
            stack.enter_context(running(tracker_jobs_command("admin"), tmp_path, env))
            stack.enter_context(running(tracker_jobs_command("listener"), tmp_path, env))
        stack.enter_context(running(tracker_jobs_command("worker", "--queues", "positions"), tmp_path, first))
        yield Engine(first, second)


@pytest.fixture
async def http(engine: Engine) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:

        async def both_up() -> bool:
            for url in engine.admin:
                async with session.get(f"{url}/health") as response:
                    if response.status != 200:
                        return False
            return True

        await wait_for(both_up, 60, "both admin processes")
        for url in engine.listener:
            await wait_for(lambda url=url: listening(session, url), 60, "both listeners")
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None, token: str = ADMIN_TOKEN) -> Any:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status < 300, (method, url, response.status, await response.text())
        return None if response.status == 204 else await response.json()


async def open_socket(http: aiohttp.ClientSession, admin_url: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{admin_url}/api/socket", params={"token": token})
    assert "devices" in orjson.loads((await ws.receive(timeout=10)).data)
    assert "positions" in orjson.loads((await ws.receive(timeout=10)).data)
    return ws


async def closed_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> int | None:
    """The close code once the server closes the socket, skipping live updates meanwhile."""
    while True:
        message = await ws.receive(timeout=seconds)
        if message.type in CLOSED:
            return ws.close_code


async def new_user(http: aiohttp.ClientSession, url: str, email: str, role: str = "user") -> tuple[int, str]:
    """A user and a session token of theirs."""
    user = await call(http, "POST", f"{url}/api/users", {"email": email, "password": "long enough", "role": role})
    async with http.post(f"{url}/api/session", json={"email": email, "password": "long enough"}) as response:
        assert response.status == 200
        token: str = (await response.json())["token"]
    return user["id"], token


async def test_sockets_lose_what_their_users_lose_in_every_process(engine: Engine, http: aiohttp.ClientSession) -> None:
    here, there = engine.admin  # the sockets live in one process; every change is made through the other

    ann, ann_session = await new_user(http, there, "ann@example.com")
    ws = await open_socket(http, here, ann_session)
    await call(http, "PUT", f"{there}/api/users/{ann}", {"password": "another long one"})
    assert await closed_within(ws, 10) == 1008

    async with http.post(
        f"{there}/api/session", json={"email": "ann@example.com", "password": "another long one"}
    ) as r:
        ann_session = (await r.json())["token"]
    ws = await open_socket(http, here, ann_session)
    await call(http, "DELETE", f"{there}/api/session", token=ann_session)
    assert await closed_within(ws, 10) == 1008

    api_token = await call(http, "POST", f"{there}/api/users/{ann}/tokens", {"name": "map"})
    ws = await open_socket(http, here, api_token["token"])
    await call(http, "DELETE", f"{there}/api/users/{ann}/tokens/{api_token['id']}")
    assert await closed_within(ws, 10) == 1008

    api_token = await call(http, "POST", f"{there}/api/users/{ann}/tokens", {"name": "map"})
    ws = await open_socket(http, here, api_token["token"])
    await call(http, "PUT", f"{there}/api/users/{ann}", {"disabled": True})
    assert await closed_within(ws, 10) == 1008

    bob, bob_session = await new_user(http, there, "bob@example.com")
    ws = await open_socket(http, here, bob_session)
    await call(http, "DELETE", f"{there}/api/users/{bob}")
    assert await closed_within(ws, 10) == 1008


async def test_a_demoted_admins_socket_sees_only_their_devices_from_then_on(
    engine: Engine, http: aiohttp.ClientSession
) -> None:
    here, there = engine.admin
    carl, carl_session = await new_user(http, there, "carl@example.com", role="admin")
    watcher = await open_socket(http, here, ADMIN_TOKEN)
    carl_ws = await open_socket(http, here, carl_session)
    await call(http, "PUT", f"{there}/api/users/{carl}", {"role": "user"})

    async def stored_for(ws: aiohttp.ClientWebSocketResponse, unique_id: str) -> bool:
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.TEXT, message
        return unique_id in {device["uniqueId"] for device in orjson.loads(message.data).get("devices", [])}

    async with http.get(engine.listener[1], params={"id": "someone-elses", "lat": 1, "lon": 2}) as response:
        assert response.status == 200
    await wait_for(lambda: stored_for(watcher, "someone-elses"), 20, "the admin's socket to see the new device")

    async def until_quiet() -> None:
        while True:  # nothing of the other user's device reaches carl any more
            message = await carl_ws.receive(timeout=2)
            assert message.type == WSMsgType.TEXT
            assert "someone-elses" not in message.data

    with pytest.raises(TimeoutError):
        await until_quiet()


async def test_a_device_deleted_or_disabled_in_one_process_is_forgotten_by_every_listener(
    engine: Engine, http: aiohttp.ClientSession
) -> None:
    here, there = engine.admin

    async def report(second: int) -> int:
        params = {"id": "phone-1", "lat": 1, "lon": 2 + second / 1000, "timestamp": 1_767_225_600 + second}
        async with http.get(engine.listener[0], params=params) as response:
            return response.status

    async def devices() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await call(http, "GET", f"{there}/api/devices")
        return found

    assert await report(0) == 200  # auto-registered through the first process's listener
    (old,) = [device["id"] for device in await devices()]
    await call(http, "DELETE", f"{there}/api/devices/{old}")
    assert await report(10) == 200  # the first process forgot the old id: a new device, a new id
    (new,) = [device["id"] for device in await devices()]
    assert new > old

    async def stored() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await call(
            http, "GET", f"{here}/api/positions?deviceId={new}&from=2026-01-01T00:00:00Z"
        )
        return found

    assert [p["deviceId"] for p in await wait_for(stored, 20, "the new device's position")] == [new]

    await call(http, "PUT", f"{there}/api/devices/{new}", {"disabled": True})

    async def refused() -> bool:  # the announcement crosses Redis pub/sub: milliseconds, not the minute's reload
        return await report(20) == 403

    await wait_for(refused, 5, "the other process's listener to refuse the disabled device")
