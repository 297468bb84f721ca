"""Nothing accepted is lost: kill -9 the worker mid-batch again and again, stop it with SIGTERM,
take PostgreSQL away and bring it back, crash Redis itself. Accepted positions are counted against
stored rows; none may be missing, none stored twice. The events the positions make are counted too:
every one stored, none twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis

from tests.support.private_postgres import private_postgres
from tests.support.processes import engine_env, listening, running, tracker_jobs_command, wait_for
from tests.support.services import ADMIN_TOKEN
from tracker_jobs.core.db import create_engine
from tracker_jobs.embedded import EmbeddedRedis
from tracker_jobs.migrations import upgrade_database
from tracker_jobs.positions import stream

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = 1_767_225_600
DEVICES = 40


async def count_rows(database_url: str) -> tuple[int, int]:
    """(rows, distinct (device, fix time)) in positions."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(sa.text("SELECT count(*) FROM positions"))).scalar_one()
            distinct = (
                await connection.execute(
                    sa.text("SELECT count(*) FROM (SELECT DISTINCT device_id, fix_time FROM positions) AS d")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(rows), int(distinct)


def batch(round_: int, size: int) -> list[dict[str, Any]]:
    """Plausible positions (no pipeline filter drops them), unique per device and second."""
    return [
        {
            "uniqueId": f"fault-{i % DEVICES}",
            "fixTime": T0 + round_ * 10 + i // DEVICES,
            "latitude": 50.0 + (round_ * 10 + i // DEVICES) * 0.0001,
            "longitude": 8.0 + (i % DEVICES) * 0.01,
            "speed": 20.0,
            "attributes": {"ignition": (round_ * 10 + i // DEVICES) % 2 == 1},  # an edge at every position
        }
        for i in range(size)
    ]


async def count_events(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(sa.text("SELECT type, count(*) FROM events GROUP BY type"))
            return {kind: int(count) for kind, count in rows}
    finally:
        await engine.dispose()


async def send(http: aiohttp.ClientSession, admin: str, body: list[dict[str, Any]]) -> int:
    async with http.post(f"{admin}/api/positions", json=body, headers=HEADERS) as response:
        assert response.status == 202, await response.text()
        accepted: int = (await response.json())["accepted"]
        return accepted


async def wait_until_stored(database_url: str, expected: int, seconds: float) -> None:
    async def all_there() -> bool:
        rows, _ = await count_rows(database_url)
        return rows >= expected

    await wait_for(all_there, seconds, f"{expected} stored positions")


@pytest.fixture
def engine_processes(
    tmp_path: Path, clean_postgres_url: str, redis_url: str, redis: ArqRedis
) -> Iterator[dict[str, Any]]:
    env = engine_env(
        TRACKER_DATABASE_URL=clean_postgres_url,
        TRACKER_REDIS_URL=redis_url,
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
        TRACKER_AUTO_REGISTER="true",
        TRACKER_POSITION_BATCH_SIZE="200",
    )
    with ExitStack() as stack:
        stack.enter_context(running(tracker_jobs_command("admin"), tmp_path, env))
        log = stack.enter_context(open(tmp_path / "workers.log", "a"))  # what the workers say, for a post-mortem
        yield {
            "env": env,
            "admin": f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}",
            "log": log,
            "database_url": clean_postgres_url,
            "tmp_path": tmp_path,
        }


def start_worker(processes: dict[str, Any]) -> subprocess.Popen[str]:
    command = tracker_jobs_command("worker", "--queues", "positions")
    return subprocess.Popen(
        command,
        cwd=processes["tmp_path"],
        env=processes["env"],
        stdout=processes["log"],
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_kill_9_the_worker_again_and_again(engine_processes: dict[str, Any]) -> None:
    admin, accepted = engine_processes["admin"], 0
    worker = start_worker(engine_processes)
    kills = 0
    try:
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _healthy(http, admin), 20, "the admin app")
            for round_ in range(30):
                accepted += await send(http, admin, batch(round_, 400))
                await asyncio.sleep(0.5)  # devices keep reporting after each kill, as they do
                if round_ % 6 == 2:  # mid-stream, while batches are being stored
                    worker.send_signal(signal.SIGKILL)
                    worker.wait()
                    kills += 1
                    worker = start_worker(engine_processes)
        assert kills == 5
        await wait_until_stored(engine_processes["database_url"], accepted, 90)
        await asyncio.sleep(1.0)  # a double store would show up now
        rows, distinct = await count_rows(engine_processes["database_url"])
        assert (rows, distinct) == (accepted, accepted) == (12_000, 12_000)
        # Each device's 300 positions switch the ignition 299 times (on at the odd seconds, off at
        # the even ones after the first); each device came online once.
        events = await count_events(engine_processes["database_url"])
        assert events == {"deviceOnline": DEVICES, "ignitionOn": DEVICES * 150, "ignitionOff": DEVICES * 149}
    finally:
        worker.kill()
        worker.wait()


async def test_sigterm_returns_the_batch_and_exits(engine_processes: dict[str, Any]) -> None:
    admin, accepted = engine_processes["admin"], 0
    worker = start_worker(engine_processes)
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _healthy(http, admin), 20, "the admin app")
        # A worker still importing has no handler for SIGTERM yet: it would simply die of it.
        await wait_for(lambda: _worker_live(http, admin), 30, "the worker")
        for round_ in range(5):
            accepted += await send(http, admin, batch(round_, 400))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, (engine_processes["tmp_path"] / "workers.log").read_text()[-3000:]
        for round_ in range(5, 8):
            accepted += await send(http, admin, batch(round_, 400))
    worker = start_worker(engine_processes)
    try:
        await wait_until_stored(engine_processes["database_url"], accepted, 60)
        assert await count_rows(engine_processes["database_url"]) == (accepted, accepted)
    finally:
        worker.terminate()
        worker.wait()


async def _healthy(http: aiohttp.ClientSession, admin: str) -> bool:
    async with http.get(f"{admin}/health") as response:
        return (await response.json())["redis"]["connected"] is True


async def _worker_live(http: aiohttp.ClientSession, admin: str) -> bool:
    async with http.get(f"{admin}/health") as response:
        return int((await response.json())["workers"]) >= 1


async def test_postgresql_outage_loses_nothing(tmp_path: Path, redis_url: str, redis: ArqRedis) -> None:
    """Devices keep reporting through an outage, every position is stored once it ends, and a device's
    queued command still goes out in a reply meanwhile (the listener needs only Redis), recorded as sent
    once the database is back."""
    with private_postgres() as postgres:
        await asyncio.to_thread(upgrade_database, postgres.url)
        env = engine_env(
            TRACKER_DATABASE_URL=postgres.url,
            TRACKER_REDIS_URL=redis_url,
            TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
            TRACKER_AUTO_REGISTER="true",
        )
        listener = f"http://127.0.0.1:{env['TRACKER_OSMAND_PORT']}"
        admin = f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with (
            running(tracker_jobs_command("admin"), tmp_path, env),
            running(tracker_jobs_command("listener"), tmp_path, env),
            running(tracker_jobs_command("worker", "--queues", "positions,commands"), tmp_path, env),
        ):
            accepted = 0
            replies: list[str] = []  # what device pg-0 was answered
            async with aiohttp.ClientSession() as http:
                await wait_for(lambda: _healthy(http, admin), 20, "the admin app")
                await wait_for(lambda: listening(http, listener), 20, "the listener")

                async def report(second: int) -> None:
                    nonlocal accepted
                    for device in range(5):
                        query = f"id=pg-{device}&lat={50 + second * 0.0001}&lon={8 + device}&timestamp={T0 + second}"
                        async with http.get(f"{listener}/?{query}") as response:
                            assert response.status == 200, await response.text()
                            accepted += 1
                            if device == 0:
                                replies.append(await response.text())

                for second in range(10):
                    await report(second)
                await wait_until_stored(postgres.url, accepted, 20)
                async with http.get(f"{admin}/api/devices", headers=headers) as response:
                    [phone] = [device["id"] for device in await response.json() if device["uniqueId"] == "pg-0"]
                command = {"deviceId": phone, "type": "custom", "attributes": {"data": "hello"}}
                async with http.post(f"{admin}/api/commands/send", json=command, headers=headers) as response:
                    assert response.status == 202
                    command_id = (await response.json())["id"]
                await asyncio.sleep(1.2)  # the listener's copy of which devices have commands
                postgres.stop("immediate")
                for second in range(10, 40):  # devices keep reporting; Redis holds what they send
                    await report(second)
                async with http.get(f"{admin}/health") as response:
                    assert response.status == 503
                    assert (await response.json())["database"]["connected"] is False
                assert replies.count("hello") == 1  # delivered during the outage, once
                await asyncio.sleep(2)
                postgres.start()
                await wait_until_stored(postgres.url, accepted, 90)
                assert await count_rows(postgres.url) == (accepted, accepted) == (200, 200)

                async def recorded_sent() -> bool:
                    async with http.get(f"{admin}/api/commands/{command_id}", headers=headers) as response:
                        return response.status == 200 and (await response.json())["state"] == "sent"

                await wait_for(recorded_sent, 90, "the command recorded as sent")


async def test_redis_hard_crash_keeps_what_the_append_only_file_has(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    client = ArqRedis.from_url(first.url)
    try:
        for index in range(500):
            await client.xadd(stream.stream_key(0), {"p": f"position {index}"})
        await asyncio.sleep(1.5)  # appendfsync everysec: older than a second is on disk
    finally:
        await client.aclose()
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)  # no shutdown, no final flush
    first.process.wait()
    second = EmbeddedRedis(tmp_path)
    second.start()
    client = ArqRedis.from_url(second.url)
    try:
        assert await client.xlen(stream.stream_key(0)) == 500
    finally:
        await client.aclose()
        second.stop()
    time.sleep(0)
