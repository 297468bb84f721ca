"""The delivery half of bench/notifications.py: webhooks through the real processes, to a receiver in a
process of its own (bench/webhook_receiver.py), on PostgreSQL (a sibling database of
TRACKER_TEST_DATABASE_URL named <db>_bench_webhooks, Redis db 12 of TRACKER_TEST_REDIS_URL's server).

  1. event_to_webhook_p99_ms: `tracker-jobs admin`, `listener` and two workers (positions;
     notifications); 1,000 devices, each linked to a circle of its own, a geofenceEnter notification by
     webhook. Devices report over OsmAnd at 2,000 positions/s in all, each entering its circle every
     tenth position, in turn (200 events/s); latency from a position's request to its webhook's arrival, p99,
     over the events after the first second (a warm-up, as bench/ingest.py has).
  2. webhooks_per_s: a `tracker-jobs worker --queues notifications` process and a receiver that takes
     100 ms to answer each request; N events recorded at once (their deliveries written by the real
     outbox), enqueued, timed from the enqueue to the receiver holding all N.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ingest machinery lives beside this file

from ingest import (
    DEVICES,
    KeepAliveClient,
    bench_urls,
    post_all,
    prepare_database,
    process_env,
    send_paced,
    start,
    wait_stored,
)

from tracker_jobs.core.db import create_engine, session_factory, transaction
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.embedded import free_port
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.events.store import record_events
from tracker_jobs.jobs.heartbeat import WORKERS_KEY

YEAR_S = 365 * 86_400
WARM_UP_MS = 1000  # the first second's events are not counted: the workers' caches and connections fill then
# Every process of these runs notifies events up to a year old and may reach the receiver on loopback.
NOTIFY_ENV = {"TRACKER_WEBHOOK_ALLOW_PRIVATE": "true", "TRACKER_NOTIFY_MAX_AGE": str(YEAR_S)}


async def fresh(database: str, maintenance: str, redis: str) -> None:
    await prepare_database(database, maintenance)
    client = await connect_redis(redis)
    await client.flushdb()
    await client.aclose()


def start_receiver(port: int, delay_s: float, log: Path) -> subprocess.Popen[bytes]:
    receiver = Path(__file__).resolve().parent / "webhook_receiver.py"
    return start([str(receiver), "--port", str(port), "--delay", str(delay_s)], {}, log)


async def receiver_stats(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/stats") as response:
        found: dict[str, Any] = orjson.loads(await response.read())
        return found


async def wait_up(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with http.get(url) as response:
                if response.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def wait_workers(http: aiohttp.ClientSession, admin: str, count: int) -> None:
    for _ in range(300):
        try:
            async with http.get(f"{admin}/health") as response:
                if (await response.json())["workers"] >= count:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the workers did not come up")


async def add_notification(pool: asyncpg.Pool, user_id: int, url: str) -> None:
    async with pool.acquire() as connection, connection.transaction():
        notification = await connection.fetchval(
            "INSERT INTO notifications (type, description, always, notificators, attributes)"
            " VALUES ('geofenceEnter', '', true, 'webhook', $1::jsonb) RETURNING id",
            orjson.dumps({"webhookUrl": url, "webhookSecret": "bench-secret"}).decode(),
        )
        await connection.execute(
            "INSERT INTO user_notifications (user_id, notification_id) VALUES ($1, $2)", user_id, notification
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def centre(device: int) -> tuple[float, float]:
    return 50.0 + (device // 100) * 0.02, 8.0 + (device % 100) * 0.02


async def event_to_webhook_p99(quick: bool, rate: int = 2000) -> float:
    """p99 ms from a device's request to its geofenceEnter webhook's arrival, at `rate` positions/s."""
    database, maintenance, redis = bench_urls("webhooks", 12)
    await fresh(database, maintenance, redis)
    seconds = 6 if quick else 20
    logs = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    admin_port, listener_port, receiver_port = free_port(), free_port(), free_port()
    env = process_env(
        database, redis, TRACKER_ADMIN_PORT=str(admin_port), TRACKER_OSMAND_PORT=str(listener_port), **NOTIFY_ENV
    )
    admin = f"http://127.0.0.1:{admin_port}"
    processes = [
        start_receiver(receiver_port, 0.0, logs / "receiver.log"),
        start(["-m", "tracker_jobs", "admin"], env, logs / "admin.log"),
        start(["-m", "tracker_jobs", "listener"], env, logs / "listener.log"),
        start(["-m", "tracker_jobs", "worker", "--queues", "positions"], env, logs / "positions.log"),
        start(["-m", "tracker_jobs", "worker", "--queues", "notifications"], env, logs / "notifications.log"),
    ]
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await wait_workers(http, admin, 2)
            await wait_up(http, f"http://127.0.0.1:{receiver_port}/stats")
            began = int(time.time()) - 30
            outside = [
                {
                    "uniqueId": f"bench-{d}",
                    "fixTime": began,
                    "latitude": centre(d)[0] + 0.0011,
                    "longitude": centre(d)[1],
                }
                for d in range(DEVICES)
            ]
            await post_all(http, f"{admin}/api/positions", [orjson.dumps(outside)], 1)  # registers the fleet
            await wait_stored(pool, DEVICES, 60)
            ids = {row["unique_id"]: row["id"] for row in await pool.fetch("SELECT id, unique_id FROM devices")}
            admin_id = await pool.fetchval("SELECT id FROM users WHERE email = 'admin@localhost'")
            async with pool.acquire() as connection, connection.transaction():
                for d in range(DEVICES):
                    lat, lon = centre(d)
                    geofence = await connection.fetchval(
                        "INSERT INTO geofences (name, description, area, attributes, revision)"
                        " VALUES ($1, '', $2, '{}'::jsonb, 1) RETURNING id",
                        f"depot-{d}",
                        f"CIRCLE ({lat} {lon}, 100)",
                    )
                    await connection.execute(
                        "INSERT INTO device_geofences (device_id, geofence_id) VALUES ($1, $2)",
                        ids[f"bench-{d}"],
                        geofence,
                    )
            await add_notification(pool, admin_id, f"http://127.0.0.1:{receiver_port}/hook")
            latencies = await _stream(http, listener_port, receiver_port, ids, rate, seconds)
    finally:
        await pool.close()
        stop(processes)
    print(f"  logs in {logs}", flush=True)
    return float(np.percentile(latencies, 99))


async def _stream(
    http: aiohttp.ClientSession, listener_port: int, receiver_port: int, ids: dict[str, int], rate: int, seconds: int
) -> list[float]:
    """Report at `rate` positions/s over OsmAnd; each device inside its circle on every tenth report,
    the devices in turn, so the events come evenly (200 a second), not all in one burst."""
    per_device_step_ms = int(DEVICES / rate * 1000)
    start_ms = int(time.time() * 1000)
    sent_at: dict[tuple[int, int], float] = {}
    schedule = [(d, k) for k in range(rate * seconds // DEVICES) for d in range(DEVICES)]

    async def send(connection: KeepAliveClient, item: tuple[int, int]) -> None:
        device, k = item
        lat, lon = centre(device)
        # ~122 m north of the centre (outside its 100 m circle), or ~89 m (inside): the step in and out,
        # half a second, stays under the jump filter's TRACKER_FILTER_MAX_SPEED
        lat += 0.0008 if (k + device) % 10 == 9 else 0.0011  # devices enter in turn: 200 events/s
        fix_ms = start_ms + k * per_device_step_ms
        sent_at[(ids[f"bench-{device}"], fix_ms)] = time.time()
        status = await connection.get(f"/?id=bench-{device}&lat={lat:.6f}&lon={lon:.6f}&timestamp={fix_ms}&speed=10")
        if status != 200:
            raise RuntimeError(f"the listener answered {status}")

    await send_paced(listener_port, schedule, rate, send)
    expected = sum(1 for device, k in schedule if (k + device) % 10 == 9)
    deadline = time.monotonic() + 30
    stats = await receiver_stats(http, receiver_port)
    while stats["count"] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        stats = await receiver_stats(http, receiver_port)
    latencies: list[float] = []
    for arrived, device_id, fix_time, _ in stats["arrivals"]:
        fix_ms = round(datetime.fromisoformat(fix_time).astimezone(UTC).timestamp() * 1000)
        started = sent_at.get((device_id, fix_ms))
        if started is not None and fix_ms >= start_ms + WARM_UP_MS:
            latencies.append((arrived - started) * 1000)
    if stats["count"] < expected or not latencies:
        raise RuntimeError(f"only {stats['count']} of {expected} webhooks arrived ({len(latencies)} matched)")
    print(
        f"  {len(schedule):,} positions at {rate:,}/s: {stats['count']:,} of {expected:,} geofenceEnter webhooks"
        f" received; p50 {np.percentile(latencies, 50):.0f} ms, p99 {np.percentile(latencies, 99):.0f} ms",
        flush=True,
    )
    return latencies


async def webhooks_per_s(quick: bool, delay_s: float = 0.1) -> float:
    """Deliveries per second to a receiver taking `delay_s` to answer each."""
    database, maintenance, redis = bench_urls("webhooks", 12)
    await fresh(database, maintenance, redis)
    count = 5_000 if quick else 20_000
    logs = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    receiver_port = free_port()
    env = process_env(database, redis, **NOTIFY_ENV)
    processes = [start_receiver(receiver_port, delay_s, logs / "receiver.log")]
    engine = create_engine(database)
    sessions = session_factory(engine)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    arq = await connect_redis(redis)
    try:
        admin_id = await pool.fetchval(
            "INSERT INTO users (name, email, role, disabled, attributes, created_at)"
            " VALUES ('bench', 'bench@example.com', 'admin', false, '{}'::jsonb, now()) RETURNING id"
        )
        await pool.copy_records_to_table(
            "devices",
            records=[
                (f"bench-{d}", f"bench-{d}", "offline", False, 0.0, False, "{}", datetime.now(UTC))
                for d in range(DEVICES)
            ],
            columns=["unique_id", "name", "status", "disabled", "total_distance", "motion", "attributes", "created_at"],
        )
        device_ids = [row["id"] for row in await pool.fetch("SELECT id FROM devices ORDER BY id")]
        await add_notification(pool, admin_id, f"http://127.0.0.1:{receiver_port}/hook")
        now = datetime.now(UTC)
        rows = [
            {
                "type": "geofenceEnter",
                "device_id": device_ids[n % DEVICES],
                "event_time": datetime.fromtimestamp(now.timestamp() - n // DEVICES - 1, UTC),
                "attributes": {},
            }
            for n in range(count)
        ]
        async with transaction(sessions) as session:
            deliveries = (await record_events(session, rows, now, YEAR_S)).deliveries
        assert len(deliveries) == count, len(deliveries)
        processes.append(
            start(["-m", "tracker_jobs", "worker", "--queues", "notifications"], env, logs / "notifications.log")
        )
        async with aiohttp.ClientSession() as http:
            await wait_up(http, f"http://127.0.0.1:{receiver_port}/stats")
            for _ in range(300):  # until the worker's first heartbeat
                if await arq.hlen(WORKERS_KEY):  # type: ignore[misc]
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # the worker's pool and first connections
            began = time.perf_counter()
            await enqueue_deliveries(arq, deliveries)
            deadline = time.monotonic() + 300
            while (stats := await receiver_stats(http, receiver_port))["count"] < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {stats['count']} of {count} webhooks arrived")
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
        for _ in range(300):  # the jobs write their outcomes once their last request is answered
            if (sent := await pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'sent'")) == count:
                break
            await asyncio.sleep(0.1)
        rate = count / elapsed
        print(
            f"  {count:,} webhooks, the receiver taking {delay_s * 1000:.0f} ms each: all received in {elapsed:.1f} s,"
            f" {rate:,.0f}/s ({sent:,} marked sent)",
            flush=True,
        )
    finally:
        await arq.aclose()
        await pool.close()
        await engine.dispose()
        stop(processes)
    return rate
