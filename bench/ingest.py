"""Ingest benchmark (issue 3): the position path end to end against the seed's design.

On PostgreSQL and Redis (a sibling database of TRACKER_TEST_DATABASE_URL named <db>_bench_ingest,
Redis db 10 of TRACKER_TEST_REDIS_URL's server), with the real `tracker-jobs admin`, `tracker-jobs listener` and
`tracker-jobs worker` processes and the load generator on the same machine, in one run:
  1. batch API: N positions over 1,000 devices, accepted -> stored and device state updated;
     beside it, a raw COPY of the same rows into a copy of the table (the ceiling);
  2. single-position OsmAnd requests from concurrent HTTP clients, end to end;
  3. the seed's design, one arq job per position (insert one row, update the device), same data;
  2b. the same in alternating rounds, without and with a command queued for 10% of the devices (the
      first reply of each carries it, and the worker records it as sent), compared by medians;
  4. latency from a device's request to the websocket message at 2,000 positions/s (p99);
  5. the workers' peak RSS.
Ends with: RESULT batch_positions_per_s=... single_positions_per_s=... copy_rows_per_s=...
speedup_vs_job_per_position=... ws_p99_ms=... worker_peak_rss_mb=... single_with_commands_ratio=...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse, urlunparse

import aiohttp
import asyncpg
import numpy as np
import orjson
import uvloop
from arq import Worker
from arq.connections import RedisSettings

from tracker_jobs.core.db import create_engine, session_factory, transaction
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.core.serialization import deserialize_job, serialize_job
from tracker_jobs.embedded import free_port
from tracker_jobs.migrations import upgrade_database
from tracker_jobs.positions.record import COLUMNS

TOKEN = "bench-admin-token"
Item = TypeVar("Item")
DEVICES = 1000
T0 = 1_767_225_600  # fix times start at 2026-01-01T00:00:00Z, one second apart per device
BASELINE_QUEUE = "bench:baseline"


def bench_urls(name: str = "ingest", redis_db: int = 10) -> tuple[str, str, str]:
    """(database URL, its maintenance URL, Redis URL) for a benchmark, beside the test ones: the
    database <test database>_bench_<name>, and Redis database `redis_db` of the test server."""
    test_db = os.environ.get("TRACKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    test_redis = os.environ.get("TRACKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    parsed = urlparse(test_db)
    database = urlunparse(parsed._replace(path=f"{parsed.path}_bench_{name}"))
    redis = urlunparse(urlparse(test_redis)._replace(path=f"/{redis_db}"))
    return database, test_db, redis


async def prepare_database(database: str, maintenance: str) -> None:
    name = urlparse(database).path.lstrip("/")
    connection = await asyncpg.connect(maintenance)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        # Each run starts with the server's dirty pages written out, not amid an earlier run's checkpoint.
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    await asyncio.to_thread(upgrade_database, database)


async def send_paced(
    port: int, schedule: Iterable[Item], rate: float, send: Callable[[KeepAliveClient, Item], Awaitable[None]]
) -> None:
    """`send` each item of `schedule` over one of 64 keep-alive connections to 127.0.0.1:`port`, item i
    leaving at start + i / rate (a steady rate, not a burst), and wait until all are answered."""
    queue: asyncio.Queue[Item | None] = asyncio.Queue()

    async def client() -> None:
        connection = KeepAliveClient("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                await send(connection, item)
        finally:
            connection.close()

    clients = [asyncio.create_task(client()) for _ in range(64)]
    begin = time.perf_counter()
    for index, item in enumerate(schedule):
        delay = begin + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(item)
    for _ in clients:
        queue.put_nowait(None)
    await asyncio.gather(*clients)


def process_env(database: str, redis: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_") or k.startswith("TRACKER_TEST")}
    env.update(
        TRACKER_DATABASE_URL=database,
        TRACKER_REDIS_URL=redis,
        TRACKER_ADMIN_TOKEN=TOKEN,
        TRACKER_AUTO_REGISTER="true",
        TRACKER_HOST="127.0.0.1",
        TRACKER_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


async def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until the process accepts connections on 127.0.0.1:`port` (it starts slowly on a busy machine)."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with status {process.returncode} before it listened")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"nothing listened on port {port} within {timeout_s:.0f} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


def memory_mb(process: subprocess.Popen[bytes], field: str = "VmHWM") -> float:
    """VmHWM: the process's peak resident memory so far; VmRSS: its resident memory now."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(workers: list[subprocess.Popen[bytes]], samples: list[float]) -> None:
    """The workers' resident memory every half second, to show it stays flat as positions flow."""
    while True:
        samples.append(sum(memory_mb(worker, "VmRSS") for worker in workers))
        await asyncio.sleep(0.5)


async def stored_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM positions")
    return count


async def wait_stored(pool: asyncpg.Pool, expected: int, timeout_s: float) -> float:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if await stored_count(pool) >= expected:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {await stored_count(pool)} of {expected} positions stored in {timeout_s:.0f} s")


async def wait_devices_at(pool: asyncpg.Pool, fix_epoch: int, timeout_s: float) -> float:
    """Until every device's newest position is the one with this fix time (state updated)."""
    when = datetime.fromtimestamp(fix_epoch, UTC)
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        done = await pool.fetchval(
            "SELECT count(*) FROM devices d JOIN positions p ON p.id = d.position_id WHERE p.fix_time = $1", when
        )
        if done >= DEVICES:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise RuntimeError("device states did not catch up")


def batch_bodies(first_second: int, seconds: int, per_body: int) -> list[bytes]:
    """Bodies for the batch API: every device's positions for `seconds` seconds, interleaved."""
    items = [
        {
            "uniqueId": f"bench-{device}",
            "fixTime": T0 + second,
            "latitude": 50.0 + second * 0.0001,
            "longitude": 8.0 + device * 0.001,
            "speed": 20.0,
            "course": 0.0,
        }
        for second in range(first_second, first_second + seconds)
        for device in range(DEVICES)
    ]
    return [orjson.dumps(items[i : i + per_body]) for i in range(0, len(items), per_body)]


async def post_all(http: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    queue = list(reversed(bodies))
    accepted = 0

    async def sender() -> None:
        nonlocal accepted
        while queue:
            body = queue.pop()
            async with http.post(url, data=body, headers=headers) as response:
                if response.status != 202:
                    raise RuntimeError(f"batch refused: {response.status} {await response.text()}")
                accepted += (await response.json())["accepted"]

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return accepted


async def copy_ceiling(database: str, seconds: int) -> float:
    """Raw COPY of the same rows into a copy of the positions table: the write ceiling."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "DROP TABLE IF EXISTS copy_ceiling; CREATE TABLE copy_ceiling (LIKE positions INCLUDING ALL)"
        )
        ids = await connection.fetch("SELECT id FROM devices ORDER BY id")
        now = datetime.now(UTC)
        columns = COLUMNS  # the engine's own COPY column list
        rows = [
            (
                row["id"],
                "api",
                datetime.fromtimestamp(T0 + second, UTC),
                now,
                50.0 + second * 0.0001,
                8.0,
                0.0,
                20.0,
                0.0,
                0.0,
                True,
                '{"distance": 11.1, "totalDistance": 1000.0, "motion": true}',
            )
            for second in range(seconds)
            for row in ids
        ]
        started = time.perf_counter()
        await connection.copy_records_to_table("copy_ceiling", records=rows, columns=columns)
        elapsed = time.perf_counter() - started
        await connection.execute("DROP TABLE copy_ceiling")
    finally:
        await connection.close()
    return len(rows) / elapsed


class KeepAliveClient:
    """A lean HTTP/1.1 client over one kept-alive connection, as a tracker or gateway holds one:
    the load generator must not cost more CPU than the server it measures (aiohttp's client does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.with_body = 0  # answers that carried a body (a 200 with a device's command)

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
            self.with_body += 1
        return int(head[9:12])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def osmand_path(device: int, second: int) -> str:
    return (
        f"/?id=bench-{device}&lat={50.0 + second * 0.0001:.5f}&lon={8.0 + device * 0.001:.4f}"
        f"&timestamp={T0 + second}&speed=20"
    )


async def single_requests(listener_port: int, first_second: int, seconds: int, clients: int) -> tuple[int, int]:
    """OsmAnd GETs, one position each, from many concurrent clients: how many were sent, and how many
    answers carried a command."""
    paths = [
        osmand_path(device, second)
        for second in range(first_second, first_second + seconds)
        for device in range(DEVICES)
    ]
    paths.reverse()
    sent = carried = 0

    async def client() -> None:
        nonlocal sent, carried
        connection = KeepAliveClient("127.0.0.1", listener_port)
        try:
            while paths:
                status = await connection.get(paths.pop())
                if status != 200:
                    raise RuntimeError(f"position refused: {status}")
                sent += 1
        finally:
            carried += connection.with_body
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return sent, carried


async def single_round(pool: asyncpg.Pool, listener_port: int, first_second: int, seconds: int) -> tuple[float, int]:
    """Single requests end to end (sent until stored): positions/s, and how many answers carried a command."""
    before = await stored_count(pool)
    started = time.perf_counter()
    sent, carried = await single_requests(listener_port, first_second, seconds, 128)
    finished = await wait_stored(pool, before + sent, 300)
    return sent / (finished - started), carried


async def queue_commands(http: aiohttp.ClientSession, admin: str, device_ids: list[int], each: int) -> None:
    """`each` custom commands for every one of the devices, through the API (a fan-out per round)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"deviceIds": device_ids, "type": "custom", "attributes": {"data": "interval=30"}}
    for _ in range(each):
        async with http.post(f"{admin}/api/commands/send", json=body, headers=headers) as response:
            if response.status != 202:
                raise RuntimeError(f"commands refused: {response.status} {await response.text()}")


async def commands_rounds(
    http: aiohttp.ClientSession,
    admin: str,
    pool: asyncpg.Pool,
    listener_port: int,
    first_second: int,
    device_ids: dict[str, int],
    rounds: int,
    seconds: int,
) -> tuple[float, float, int]:
    """Alternating rounds of single requests: none of the reporting devices with a command queued, then
    10% of them with one (each device's first reply in the round carries it). Before either kind of
    round the API queues the same 100 commands, for silent devices before a round without (same API
    and database work, nothing for the listener) and for reporting devices before a round with, so the
    rounds differ only in what commands cost the listener and the worker. (median rate without, median
    with, commands carried)."""
    commanded = [device_ids[f"bench-{device}"] for device in range(DEVICES // 10)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    silent = []
    for device in range(len(commanded)):
        body = {"uniqueId": f"bench-silent-{device}", "name": f"silent {device}"}
        async with http.post(f"{admin}/api/devices", json=body, headers=headers) as response:
            silent.append((await response.json())["id"])
    without: list[float] = []
    with_commands: list[float] = []
    carried_total = 0
    for _ in range(rounds):
        for queued in (False, True):
            await queue_commands(http, admin, commanded if queued else silent, 1)
            await asyncio.sleep(1.2)  # the listener's copy of who has commands is read every second
            rate, carried = await single_round(pool, listener_port, first_second, seconds)
            first_second += seconds
            if queued and carried != len(commanded):
                raise RuntimeError(f"{carried} answers carried a command, expected {len(commanded)}")
            if not queued and carried:
                raise RuntimeError(f"{carried} answers carried a command in a round with none queued")
            (with_commands if queued else without).append(rate)
            carried_total += carried
            print(f"  round {'with' if queued else 'without'} commands: {rate:,.0f} positions/s", flush=True)
    # Every command a reply carried is recorded as sent (by record_command_updates, on the same worker).
    deadline = time.perf_counter() + 60
    while (sent := await pool.fetchval("SELECT count(*) FROM commands WHERE state = 'sent'")) < carried_total:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {sent} of {carried_total} commands recorded as sent")
        await asyncio.sleep(0.1)
    return float(np.median(without)), float(np.median(with_commands)), carried_total


async def websocket_latency(
    http: aiohttp.ClientSession,
    admin: str,
    listener_port: int,
    first_second: int,
    seconds: int,
    rate: int,
    device_ids: dict[str, int],
) -> float:
    """p99 ms from a device's request to its position on an admin's websocket, at `rate` positions/s.
    A websocket message carries each device's newest position of a stored batch; at this rate every
    device reports every half second, so (nearly) every position is its device's newest."""
    sent_at: dict[tuple[int, str], float] = {}
    latencies: list[float] = []
    schedule = [
        (device, second) for second in range(first_second, first_second + seconds) for device in range(DEVICES)
    ][: rate * seconds]
    async with http.ws_connect(f"{admin}/api/socket", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.receive()
        await ws.receive()  # the devices and newest positions sent on connect

        async def listen() -> None:
            async for message in ws:
                arrived = time.perf_counter()
                for position in orjson.loads(message.data).get("positions", []):
                    started = sent_at.get((position["deviceId"], position["fixTime"]))
                    if started is not None:
                        latencies.append((arrived - started) * 1000)

        listening = asyncio.create_task(listen())

        async def send(connection: KeepAliveClient, item: tuple[int, int]) -> None:
            device, second = item
            key = (device_ids[f"bench-{device}"], datetime.fromtimestamp(T0 + second, UTC).isoformat())
            sent_at[key] = time.perf_counter()
            await connection.get(osmand_path(device, second))

        await send_paced(listener_port, schedule, rate, send)
        await asyncio.sleep(2.0)
        listening.cancel()
    if not latencies:
        raise RuntimeError("no position reached the websocket")
    print(f"  {len(latencies):,} of {len(schedule):,} positions seen on the websocket", flush=True)
    return float(np.percentile(latencies, 99))


# --- the seed's design: one arq job per position -------------------------------------------------


async def store_one_position(ctx: dict[str, Any], position: dict[str, Any]) -> None:
    """What a job-per-position engine does: one INSERT and one device UPDATE per job."""
    async with transaction(ctx["sessions"]) as session:
        connection = await (await session.connection()).get_raw_connection()
        driver: Any = connection.driver_connection
        fix = datetime.fromtimestamp(position["fixTime"], UTC)
        position_id = await driver.fetchval(
            "INSERT INTO positions (device_id, protocol, fix_time, server_time, latitude, longitude, altitude, speed,"
            " course, accuracy, valid, attributes) VALUES ($1, 'osmand', $2, now(), $3, $4, 0, $5, 0, 0, true, '{}')"
            " ON CONFLICT DO NOTHING RETURNING id",
            position["deviceId"],
            fix,
            position["latitude"],
            position["longitude"],
            position["speed"],
        )
        await driver.execute(
            "UPDATE devices SET position_id = $1, last_update = now(), status = 'online' WHERE id = $2",
            position_id,
            position["deviceId"],
        )


async def baseline_startup(ctx: dict[str, Any]) -> None:
    ctx["engine"] = create_engine(os.environ["TRACKER_DATABASE_URL"])
    ctx["sessions"] = session_factory(ctx["engine"])


async def baseline_shutdown(ctx: dict[str, Any]) -> None:
    await ctx["engine"].dispose()


def run_baseline_worker() -> None:
    worker = Worker(
        functions=[store_one_position],  # type: ignore[list-item]
        queue_name=BASELINE_QUEUE,
        redis_settings=RedisSettings.from_dsn(os.environ["TRACKER_REDIS_URL"]),
        on_startup=baseline_startup,
        on_shutdown=baseline_shutdown,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        max_jobs=50,
        keep_result=0,
        log_results=False,
    )
    worker.run()


async def baseline(
    database: str, redis: str, pool: asyncpg.Pool, first_second: int, count: int, device_ids: dict[str, int], logs: Path
) -> float:
    from arq import create_pool

    arq_pool = await create_pool(
        RedisSettings.from_dsn(redis),
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=BASELINE_QUEUE,
    )
    before = await stored_count(pool)
    positions = [
        {
            "deviceId": device_ids[f"bench-{i % DEVICES}"],
            "fixTime": T0 + first_second + i // DEVICES,
            "latitude": 50.0,
            "longitude": 8.0,
            "speed": 20.0,
        }
        for i in range(count)
    ]
    worker = start([__file__, "--baseline-worker"], process_env(database, redis), logs / "baseline.log")
    try:
        started = time.perf_counter()
        for position in positions:
            await arq_pool.enqueue_job("store_one_position", position)
        finished = await wait_stored(pool, before + count, 600)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await arq_pool.aclose()
    return count / (finished - started)


async def main(quick: bool) -> None:
    database, maintenance, redis = bench_urls()
    batch_seconds = 20 if quick else 1000  # x 1,000 devices
    single_seconds = 5 if quick else 60
    baseline_count = 2_000 if quick else 10_000
    ws_seconds = 3 if quick else 10
    await prepare_database(database, maintenance)
    flush = await connect_redis(redis)
    await flush.flushdb()
    await flush.aclose()

    logs = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    admin_port, listener_port = free_port(), free_port()
    env = process_env(database, redis, TRACKER_ADMIN_PORT=str(admin_port), TRACKER_OSMAND_PORT=str(listener_port))
    admin_url = f"http://127.0.0.1:{admin_port}"
    processes = [
        start(["-m", "tracker_jobs", "admin"], env, logs / "admin.log"),
        start(["-m", "tracker_jobs", "listener"], env, logs / "listener.log"),
    ]
    workers = [
        start(["-m", "tracker_jobs", "worker", "--queues", "positions,commands"], env, logs / f"worker{i}.log")
        for i in range(int(os.environ.get("BENCH_WORKERS", "1")))
    ]
    processes.extend(workers)
    rss_samples: list[float] = []
    sampling = asyncio.create_task(sample_rss(workers, rss_samples))
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(200):
                try:
                    async with (
                        http.get(f"{admin_url}/health") as response,
                        http.get(f"http://127.0.0.1:{listener_port}/") as listening,  # a 400: it is up
                    ):
                        if (await response.json())["workers"] >= 1 and listening.status == 400:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            # Register the fleet (one batch names every device), and let it be stored.
            await post_all(http, f"{admin_url}/api/positions", batch_bodies(0, 1, DEVICES), 1)
            await wait_stored(pool, DEVICES, 60)
            device_ids = {row["unique_id"]: row["id"] for row in await pool.fetch("SELECT id, unique_id FROM devices")}

            bodies = batch_bodies(1, batch_seconds, 5000)
            total = batch_seconds * DEVICES
            started = time.perf_counter()
            accepted = await post_all(http, f"{admin_url}/api/positions", bodies, 4)
            accepted_at = time.perf_counter()
            await wait_stored(pool, DEVICES + total, 900)
            finished = await wait_devices_at(pool, T0 + batch_seconds, 120)
            assert accepted == total, (accepted, total)
            batch_rate = total / (finished - started)
            print(
                f"batch API: {total:,} positions, accepted in {accepted_at - started:.1f} s, stored and devices "
                f"updated in {finished - started:.1f} s: {batch_rate:,.0f} positions/s",
                flush=True,
            )
            copy_rate = await copy_ceiling(database, batch_seconds)
            print(
                f"raw COPY of the same rows: {copy_rate:,.0f} rows/s (batch/COPY = {batch_rate / copy_rate:.2f})",
                flush=True,
            )

            first = 1 + batch_seconds
            before = await stored_count(pool)
            started = time.perf_counter()
            sent, _ = await single_requests(listener_port, first, single_seconds, 128)
            finished = await wait_stored(pool, before + sent, 300)
            single_rate = sent / (finished - started)
            print(
                f"OsmAnd single requests: {sent:,} from 128 concurrent clients, stored in "
                f"{finished - started:.1f} s: {single_rate:,.0f} positions/s",
                flush=True,
            )

            first += single_seconds
            # The same rounds as the full run, fewer of them: a command per device per round, so a shorter
            # round would put it on a larger share of those devices' requests (another quantity).
            rounds, round_seconds = (5, 10) if quick else (9, 10)
            print(f"OsmAnd single requests, {rounds} rounds each without and with commands queued for 10% of devices:")
            without, with_commands, carried = await commands_rounds(
                http, admin_url, pool, listener_port, first, device_ids, rounds, round_seconds
            )
            first += 2 * rounds * round_seconds
            print(
                f"  medians: {without:,.0f} positions/s without, {with_commands:,.0f} with"
                f" ({carried:,} commands carried in replies)",
                flush=True,
            )

            ws_p99 = await websocket_latency(http, admin_url, listener_port, first, ws_seconds, 2000, device_ids)
            print(f"websocket latency at 2,000 positions/s: p99 {ws_p99:.0f} ms", flush=True)
            first += ws_seconds + 1
            rss = max(memory_mb(worker) for worker in workers)
            sampling.cancel()
            quarter = max(1, len(rss_samples) // 4)
            print(
                f"worker RSS over the run: first quarter max {max(rss_samples[:quarter]):.0f} MB, "
                f"last quarter max {max(rss_samples[-quarter:]):.0f} MB, peak {rss:.0f} MB",
                flush=True,
            )

        baseline_rate = await baseline(database, redis, pool, first, baseline_count, device_ids, logs)
        print(
            f"seed design, one arq job per position: {baseline_count:,} positions at {baseline_rate:,.0f}/s", flush=True
        )
    finally:
        await pool.close()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
    print(f"logs in {logs}", flush=True)
    print(
        f"RESULT batch_positions_per_s={batch_rate:.0f} single_positions_per_s={single_rate:.0f} "
        f"copy_rows_per_s={copy_rate:.0f} ratio_batch_to_copy={batch_rate / copy_rate:.2f} "
        f"speedup_vs_job_per_position={batch_rate / baseline_rate:.1f} ws_p99_ms={ws_p99:.0f} "
        f"worker_peak_rss_mb={rss:.0f} single_with_commands_ratio={with_commands / without:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute and a half), same keys")
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.baseline_worker:
        run_baseline_worker()
    else:
        uvloop.run(main(arguments.quick))
