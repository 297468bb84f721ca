"""Reports on PostgreSQL: a fleet report (summary + trips + stops) over 100 devices x 30 days at one position
per 30 s; trip detection against a Python loop per position over ORM rows on a 1,008,000-position subset
(every fleet device over its first 3.5 days, the median of three runs each); XLSX and CSV exports of a
1,000,000-row route report. Ends with one RESULT line.

    python bench/reports.py [--quick]

Data lives in a sibling of the test database (TRACKER_TEST_DATABASE_URL's name + `_bench_reports`), created,
migrated and loaded with COPY on first use, as devices would have sent it: every device's positions
interleaved in time. Jobs go through Redis database 14 of TRACKER_TEST_REDIS_URL's server to a real worker
(`tracker-jobs worker --queues reports`) started as a child process for each measurement, so its peak
memory (VmHWM) is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the baseline lives beside the tests

from tests.support.loop_detection import detect_by_loop
from tracker_jobs.core.config import Settings, load_settings
from tracker_jobs.core.db import create_engine, session_factory, transaction
from tracker_jobs.core.principal import Principal
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.core.trip_rule import trip_defaults
from tracker_jobs.devices.models import Device
from tracker_jobs.jobs.heartbeat import WORKERS_KEY
from tracker_jobs.migrations import upgrade_database
from tracker_jobs.positions.models import Position
from tracker_jobs.reports.builders import ReportRequest
from tracker_jobs.reports.detection import DetectionParams, detect
from tracker_jobs.reports.loading import load_tracks, plan_batches
from tracker_jobs.reports.models import Report
from tracker_jobs.reports.service import create_report, open_download
from tracker_jobs.users.models import User
from tracker_jobs.users.service import BOOTSTRAP_EMAIL, ensure_bootstrap_admin

START = datetime(2026, 1, 1, tzinfo=UTC)
DATASET = "reports-bench-1"  # written into each loaded device's attributes; a new value reloads
EARTH_RADIUS_M = 6_378_137.0
KNOT_MPS = 1852 / 3600
PG_EPOCH_US = 946_684_800 * 1_000_000
COPY_CHUNK_ROWS = 500_000
POLL_S = 0.05
SPEEDUP_ROUNDS = 3


@dataclass(frozen=True)
class Scale:
    devices: int
    days: int
    step_s: int
    route_rows: int
    subset_days: float  # the baseline's subset: every fleet device over this many days

    @property
    def fleet_rows(self) -> int:
        return self.devices * self.days * 86_400 // self.step_s


FULL = Scale(devices=100, days=30, step_s=30, route_rows=1_000_000, subset_days=3.5)
QUICK = Scale(devices=10, days=3, step_s=30, route_rows=40_000, subset_days=3)


def bench_urls() -> tuple[str, str]:
    test_database = os.environ.get("TRACKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    server, _, name = test_database.rpartition("/")
    test_redis = os.environ.get("TRACKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis_server = re.sub(r"/\d*$", "", test_redis.split("?", 1)[0])
    return f"{server}/{name.split('?', 1)[0]}_bench_reports", f"{redis_server}/14"


async def create_database(database_url: str) -> None:
    server, _, name = database_url.rpartition("/")
    if not re.fullmatch(r"\w+", name):
        raise SystemExit(f"unexpected database name {name!r}")
    connection = await asyncpg.connect(f"{server}/postgres")
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')  # a checked identifier: not parameterisable
    finally:
        await connection.close()


# --- Data: trips in the daytime, parked (with GPS noise) the rest of the time -------------------------


def drive_and_park(
    rng: np.random.Generator, count: int, step_s: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """North and east offsets (m), speed (knots) and odometer (m) of one vehicle, every `step_s` seconds."""
    per_day = 86_400 // step_s
    changes = np.zeros(count + 1, dtype=np.int64)
    for day in range(math.ceil(count / per_day)):
        trips = int(rng.integers(3, 9))
        starts = day * per_day + rng.integers(6 * 3600 // step_s, 20 * 3600 // step_s, trips)
        lengths = rng.integers(10 * 60 // step_s, 60 * 60 // step_s, trips)
        np.add.at(changes, np.minimum(starts, count), 1)
        np.add.at(changes, np.minimum(starts + lengths, count), -1)
    moving = np.cumsum(changes[:count]) > 0
    speed_mps = np.where(moving, np.clip(rng.normal(13.0, 5.0, count), 2.0, 35.0), 0.0)
    heading = np.cumsum(rng.normal(0.0, 0.15, count))
    travelled = speed_mps * step_s
    north = np.cumsum(travelled * np.sin(heading)) + rng.normal(0.0, 4.0, count)
    east = np.cumsum(travelled * np.cos(heading)) + rng.normal(0.0, 4.0, count)
    return north, east, speed_mps / KNOT_MPS, np.cumsum(travelled)


_ROW = np.dtype(
    [("fields", ">i2")]
    + [
        field
        for name, kind in (
            ("device_id", ">i4"),
            ("protocol", "S6"),
            ("fix_time", ">i8"),
            ("server_time", ">i8"),
            ("latitude", ">f8"),
            ("longitude", ">f8"),
            ("altitude", ">f8"),
            ("speed", ">f8"),
            ("course", ">f8"),
            ("accuracy", ">f8"),
            ("valid", "u1"),
            ("attributes", "S29"),
        )
        for field in ((f"{name}_size", ">i4"), (name, kind))
    ]
)
_COPY_COLUMNS = [name for name in _ROW.names if name != "fields" and not name.endswith("_size")]
_ATTRIBUTES_PREFIX = b'\x01{"totalDistance":'  # jsonb's binary form: a version byte, then the text


def _attributes(odometer_m: npt.NDArray[np.float64]) -> npt.NDArray[np.bytes_]:
    """`{"totalDistance": n}` with n in whole metres right-aligned in 10 characters (JSON allows the spaces)."""
    metres = np.minimum(odometer_m.astype(np.int64), 9_999_999_999)
    text = np.empty((len(metres), 29), dtype=np.uint8)
    text[:, : len(_ATTRIBUTES_PREFIX)] = np.frombuffer(_ATTRIBUTES_PREFIX, dtype=np.uint8)
    for digit in range(10):
        power = 10 ** (9 - digit)
        text[:, 18 + digit] = np.where((metres >= power) | (digit == 9), 48 + metres // power % 10, 32)
    text[:, 28] = ord("}")
    return text.view("S29").ravel()


def copy_rows(
    device_ids: npt.NDArray[np.int64],
    fix_time_us: npt.NDArray[np.int64],
    origin: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    trace: tuple[npt.NDArray[np.float64], ...],
) -> bytes:
    """Positions as PostgreSQL's binary COPY format."""
    north, east, speed, odometer = trace
    rows = np.zeros(len(device_ids), dtype=_ROW)
    rows["fields"] = len(_COPY_COLUMNS)
    for name in _COPY_COLUMNS:
        rows[f"{name}_size"] = _ROW[name].itemsize
    rows["device_id"] = device_ids
    rows["protocol"] = b"osmand"
    rows["fix_time"] = rows["server_time"] = fix_time_us - PG_EPOCH_US
    rows["latitude"] = origin[0] + np.degrees(north / EARTH_RADIUS_M)
    rows["longitude"] = origin[1] + np.degrees(east / (EARTH_RADIUS_M * np.cos(np.radians(origin[0]))))
    rows["speed"] = speed
    rows["valid"] = 1
    rows["attributes"] = _attributes(odometer)
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


async def ensure_devices(sessions: async_sessionmaker[AsyncSession], names: list[str]) -> tuple[list[int], bool]:
    """The devices' ids, and whether all of them hold this dataset already."""
    async with transaction(sessions) as session:
        found = {
            d.unique_id: d
            for d in (await session.execute(select(Device).where(col(Device.unique_id).in_(names)))).scalars()
        }
        for name in names:
            if name not in found:
                found[name] = Device(unique_id=name, name=name)
                session.add(found[name])
        await session.flush()
        loaded = all(found[name].attributes.get("bench") == DATASET for name in names)
        return [int(found[name].id or 0) for name in names], loaded


async def load_positions(database_url: str, device_ids: list[int], count: int, step_s: int, seed: int) -> None:
    """Replace the devices' positions: `count` per device, every device's fix at the same times (time-major)."""
    rng = np.random.default_rng(seed)
    traces = [drive_and_park(rng, count, step_s) for _ in device_ids]
    origins = (rng.uniform(47.0, 53.0, len(device_ids)), rng.uniform(7.0, 14.0, len(device_ids)))
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("DELETE FROM positions WHERE device_id = ANY($1::integer[])", device_ids)
        steps_per_copy = max(1, COPY_CHUNK_ROWS // len(device_ids))
        devices = np.array(device_ids, dtype=np.int64)
        for first in range(0, count, steps_per_copy):
            steps = np.arange(first, min(count, first + steps_per_copy))
            times = (int(START.timestamp()) + steps * step_s) * 1_000_000
            grid = np.broadcast_to(devices, (len(steps), len(devices))).ravel()
            columns = tuple(np.stack([trace[part][steps] for trace in traces], axis=1).ravel() for part in range(4))
            origin = (np.tile(origins[0], len(steps)), np.tile(origins[1], len(steps)))
            data = copy_rows(grid, np.repeat(times, len(devices)), origin, columns)
            await connection.copy_to_table("positions", source=io.BytesIO(data), columns=_COPY_COLUMNS, format="binary")
        await connection.execute(
            """UPDATE devices SET attributes = jsonb_build_object('bench', $2::text) WHERE id = ANY($1::integer[])""",
            device_ids,
            DATASET,
        )
    finally:
        await connection.close()


async def prepare_data(
    database_url: str, sessions: async_sessionmaker[AsyncSession], scale: Scale
) -> tuple[list[int], int]:
    prefix = "bench-quick" if scale is QUICK else "bench"
    fleet, fleet_loaded = await ensure_devices(sessions, [f"{prefix}-fleet-{i:03d}" for i in range(scale.devices)])
    [route], route_loaded = await ensure_devices(sessions, [f"{prefix}-route"])
    started = time.perf_counter()
    if not fleet_loaded:
        await load_positions(database_url, fleet, scale.fleet_rows // scale.devices, scale.step_s, seed=2026)
    if not route_loaded:
        await load_positions(database_url, [route], scale.route_rows, 1, seed=7)
    if not (fleet_loaded and route_loaded):
        connection = await asyncpg.connect(database_url)
        await connection.execute("VACUUM ANALYZE positions")
        await connection.close()
        print(
            f"loaded {scale.fleet_rows:,} fleet and {scale.route_rows:,} route positions "
            f"in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return fleet, route


# --- Measurements --------------------------------------------------------------------------------------


def launch_worker(database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_REDIS_URL": redis_url,
        "TRACKER_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "tracker_jobs", "worker", "--queues", "reports"], env=env)


async def start_worker(database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    """The real reports worker as a child process, returned once its heartbeat shows it serving."""
    child = launch_worker(database_url, redis_url)
    redis = await connect_redis(redis_url)
    try:
        deadline = time.monotonic() + 120
        while not any(key.endswith(f":{child.pid}".encode()) for key in await redis.hkeys(WORKERS_KEY)):  # type: ignore[misc]
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the reports worker did not start")
            await asyncio.sleep(POLL_S)
    finally:
        await redis.aclose()
    return child


def peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark since it started its program (VmHWM).

    Not wait4's ru_maxrss: on Linux that also counts the parent's memory the child held between fork and exec.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM for process {pid}")


async def stop_worker(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    await asyncio.to_thread(child.wait)


async def until(sessions: async_sessionmaker[AsyncSession], report_id: int, done: Callable[[Report], bool]) -> Report:
    while True:
        async with sessions() as session:
            report = await session.get(Report, report_id)
        assert report is not None
        if report.status == "failed":
            raise SystemExit(f"report {report_id} failed: {report.error}")
        if done(report):
            return report
        await asyncio.sleep(POLL_S)


async def in_worker(
    database_url: str, redis_url: str, work: Callable[[], Awaitable[tuple[float, Report]]]
) -> tuple[float, Report, float]:
    """(seconds, report, worker peak MB) of work done by a fresh worker process."""
    child = await start_worker(database_url, redis_url)
    try:
        seconds, report = await work()
        peak_mb = peak_rss_mb(child.pid)
    finally:
        await stop_worker(child)
    return seconds, report, peak_mb


@dataclass
class Bench:
    database_url: str
    redis_url: str
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    admin: Principal

    async def report(self, request: ReportRequest) -> tuple[float, Report]:
        redis = await connect_redis(self.redis_url)
        started = time.perf_counter()
        report_id, _ = await create_report(self.sessions, redis, self.settings, self.admin, request, ["json"])
        report = await until(self.sessions, report_id, lambda found: found.status == "complete")
        await redis.aclose()
        return time.perf_counter() - started, report

    async def export(self, report_id: int, fmt: str) -> tuple[float, Report]:
        redis = await connect_redis(self.redis_url)
        started = time.perf_counter()
        await open_download(self.sessions, redis, self.admin, report_id, fmt)
        report = await until(self.sessions, report_id, lambda found: fmt in found.formats)
        await redis.aclose()
        return time.perf_counter() - started, report


Trips = dict[int, list[tuple[int, int]]]  # device -> (departure id, arrival id) of each trip


async def vectorised_trips(
    sessions: async_sessionmaker[AsyncSession], device_ids: list[int], end: datetime, params: DetectionParams
) -> Trips:
    """Ours: the positions of a batch by binary COPY into numpy, detection vectorised per device."""
    found: Trips = {}
    async with sessions() as session:
        batches = await plan_batches(session, device_ids, START, end)
    for batch in batches:
        async with sessions() as session:
            tracks = await load_tracks(session, batch, START, end)
        for device_id in batch:
            track = tracks.track(device_id)
            trips = detect(track.fix_time_us, track.latitude, track.longitude, params)
            found[device_id] = list(
                zip(
                    track.position_id[trips.trip_starts].tolist(),
                    track.position_id[trips.trip_ends].tolist(),
                    strict=True,
                )
            )
    return found


async def looped_trips(
    sessions: async_sessionmaker[AsyncSession], device_ids: list[int], end: datetime, params: DetectionParams
) -> Trips:
    """The baseline: each device's positions as ORM rows, and a Python loop per position."""
    found: Trips = {}
    for device_id in device_ids:
        async with sessions() as session:
            query = (
                select(Position)
                .where(
                    col(Position.device_id) == device_id,
                    col(Position.fix_time) >= START,
                    col(Position.fix_time) < end,
                    col(Position.valid).is_(True),
                )
                .order_by(col(Position.fix_time))
            )
            rows = list((await session.execute(query)).scalars())
        trips, _ = detect_by_loop(rows, params)
        found[device_id] = [(int(rows[first].id or 0), int(rows[last].id or 0)) for first, last in trips]
    return found


async def detection_speedup(
    sessions: async_sessionmaker[AsyncSession], device_ids: list[int], end: datetime, params: DetectionParams
) -> float:
    """Median time of the baseline over median time of ours, each run SPEEDUP_ROUNDS times in turn so
    both meet the same moments of a shared machine; both read the stored rows and must agree."""
    ours_s: list[float] = []
    loop_s: list[float] = []
    for _ in range(SPEEDUP_ROUNDS):
        started = time.perf_counter()
        ours = await vectorised_trips(sessions, device_ids, end, params)
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        loop = await looped_trips(sessions, device_ids, end, params)
        loop_s.append(time.perf_counter() - started)
        if ours != loop:
            raise SystemExit("the vectorised and the per-position detection disagree")
    trips = sum(len(found) for found in ours.values())
    print(
        f"detection ({trips:,} trips), seconds per run: ours {', '.join(f'{s:.2f}' for s in ours_s)}; "
        f"loop over ORM rows {', '.join(f'{s:.1f}' for s in loop_s)}",
        flush=True,
    )
    return statistics.median(loop_s) / statistics.median(ours_s)


async def run(scale: Scale, database_url: str, redis_url: str) -> str:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    settings = load_settings({"TRACKER_DATABASE_URL": database_url, "TRACKER_REDIS_URL": redis_url})
    redis = await connect_redis(redis_url)
    await redis.flushdb()  # database 14 is the benchmark's own
    await redis.aclose()
    async with transaction(sessions) as session:
        await ensure_bootstrap_admin(session, "bench-reports-token")
    async with sessions() as session:
        admin_id = (await session.execute(select(User.id).where(col(User.email) == BOOTSTRAP_EMAIL))).scalar_one()
    fleet, route = await prepare_data(database_url, sessions, scale)
    bench = Bench(database_url, redis_url, settings, sessions, Principal(int(admin_id), "admin"))
    end = START + timedelta(days=scale.days)

    fleet_request = ReportRequest("fleet", tuple(fleet), START, end)
    fleet_s, fleet_report, fleet_mb = await in_worker(database_url, redis_url, lambda: bench.report(fleet_request))
    print(
        f"fleet report: {scale.fleet_rows:,} positions, {fleet_report.row_counts} in {fleet_s:.2f} s, "
        f"worker peak {fleet_mb:.0f} MB",
        flush=True,
    )

    subset_end = START + timedelta(days=scale.subset_days)
    print(
        f"detection subset: {round(scale.devices * scale.subset_days * 86_400 / scale.step_s):,} positions", flush=True
    )
    speedup = await detection_speedup(sessions, fleet, subset_end, trip_defaults(settings))

    route_request = ReportRequest("route", (route,), START, START + timedelta(days=30))
    route_s, route_report, route_mb = await in_worker(database_url, redis_url, lambda: bench.report(route_request))
    rows = route_report.row_counts["route"]
    assert route_report.id is not None
    print(f"route report: {rows:,} rows as JSON in {route_s:.1f} s, worker peak {route_mb:.0f} MB", flush=True)
    csv_s, _, csv_mb = await in_worker(database_url, redis_url, lambda: bench.export(route_report.id or 0, "csv"))
    print(f"CSV export: {csv_s:.1f} s, worker peak {csv_mb:.0f} MB", flush=True)
    xlsx_s, _, xlsx_mb = await in_worker(database_url, redis_url, lambda: bench.export(route_report.id or 0, "xlsx"))
    print(f"XLSX export: {xlsx_s:.1f} s, worker peak {xlsx_mb:.0f} MB", flush=True)
    await engine.dispose()
    return (
        f"RESULT fleet_report_s={fleet_s:.2f} fleet_peak_rss_mb={fleet_mb:.0f} speedup_vs_loop={speedup:.1f} "
        f"xlsx_rows_per_s={rows / xlsx_s:.0f} xlsx_peak_rss_mb={xlsx_mb:.0f} csv_rows_per_s={rows / csv_s:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data, under a minute; the same keys")
    scale = QUICK if parser.parse_args().quick else FULL
    database_url, redis_url = bench_urls()
    asyncio.run(create_database(database_url))
    upgrade_database(database_url)
    print(asyncio.run(run(scale, database_url, redis_url)), flush=True)


if __name__ == "__main__":
    main()
