"""Notifications benchmark (issue 12): geofence detection in the position path, and webhook delivery.

    python bench/notifications.py [--quick]

Data (seeded): 1,000 geofences around one city as Traccar WKT read with `parse_area`: star-shaped polygons
of 20-200 vertices, circles of 50-3,000 m, corridors (LINESTRING of 5-20 points, polylineDistance
10-200 m); every fourth sets a `speedLimit`. 1,000 devices, each linked to 40-60 random geofences.
  1. detection in process, no database: `GeofenceIndex.members` in the workers' 5,000-position batches
     (index built once beforehand, as a worker's ShapeCache keeps it; the links made into `Links` once
     beforehand too, as load_geofencing does once a batch, the time printed) against the straightforward
     way, a loop per position over its device's geofences calling shapely `contains` on prepared
     polygons, haversine <= radius (circles) and the line's distance in the local metric frame <= width
     (corridors). The loop runs on a subset and is compared per position (best of 3 each); both must
     give the same (position, geofence) pairs there.
  2. batch ingest on PostgreSQL (a sibling database of TRACKER_TEST_DATABASE_URL named
     <db>_bench_notifications, Redis db 11 of TRACKER_TEST_REDIS_URL's server) with the real
     `tracker-jobs admin` and `tracker-jobs worker` processes (bench/ingest.py's machinery): the same
     positions (every device driving out and back through the city) four times: with no device linked
     to a geofence (detection off), twice with the geofences and links inserted into the database
     (detection on: geofenceIds, enter/exit and geofence overspeed events), and off again with the links
     deleted (off, on, on, off: a drift over the runs weighs on both sides alike). Positions/s from the
     first request to all stored and every device's state updated, each run after one warm-up second;
     each side's rate is its positions over its two runs' time. Beside it, the worker processes' CPU
     time per position, off over on: the cost of detection to the workers alone, which the machine's
     other load moves far less than the wall clock (on two shared cores, four identical runs with no
     links at all took from 7.1 s to 10.5 s, while their CPU stayed within 28-32 us per position).
  3. webhooks (bench/webhook_delivery.py): position -> event -> webhook p99 at 2,000 positions/s through
     the real listener and workers, and webhook deliveries per second to a receiver taking 100 ms. Run
     first, before 1 and 2, on a quiet database server (see main).
Ends with: RESULT ingest_detect_ratio=... detect_speedup_vs_loop=... event_to_webhook_p99_ms=...
webhooks_per_s=... ingest_positions_per_s_detect_off=... ingest_positions_per_s_detect_on=...
ingest_worker_cpu_ratio=...
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import orjson
import shapely
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ingest machinery lives beside this file

from ingest import DEVICES, T0, bench_urls, post_all, prepare_database, process_env, start, wait_devices_at, wait_stored
from redis.asyncio import Redis
from webhook_delivery import event_to_webhook_p99, webhooks_per_s

from tracker_jobs.core.geo import EARTH_RADIUS_M
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.embedded import free_port
from tracker_jobs.events.geofences import METRES_PER_DEGREE, GeofenceIndex, Links, Shape, parse_area
from tracker_jobs.monitor.counters import POSITIONS_DROPPED, POSITIONS_STORED, read_counts

GEOFENCES = 1000
BATCH = 5000  # TRACKER_POSITION_BATCH_SIZE's default: what a worker hands `members` at once
CENTER = (50.11, 8.68)  # Frankfurt am Main
HALF_SIDE_M = 12_000.0  # geofences and positions lie in a 24 km square around the center
KNOTS_PER_MS = 1.943844


def offset(lat: Any, lon: Any, east_m: Any, north_m: Any) -> tuple[Any, Any]:
    """Points east and north of (lat, lon) by so many metres (scalars or arrays)."""
    return lat + north_m / METRES_PER_DEGREE, lon + east_m / (METRES_PER_DEGREE * math.cos(math.radians(CENTER[0])))


def random_points(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    east, north = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M, (2, count))
    return offset(CENTER[0], CENTER[1], east, north)


def wkt_points(points: Sequence[tuple[float, float]]) -> str:
    return ", ".join(f"{lat:.7f} {lon:.7f}" for lat, lon in points)


def make_geofences(rng: np.random.Generator) -> list[tuple[str, dict[str, Any]]]:
    """(Traccar WKT, attributes) of every geofence: half polygons, 30% circles, 20% corridors."""
    areas = []
    for index in range(GEOFENCES):
        lat, lon = (float(v[0]) for v in random_points(rng, 1))
        kind = rng.choice(["polygon", "circle", "corridor"], p=[0.5, 0.3, 0.2])
        attributes: dict[str, Any] = {}
        if kind == "polygon":  # star-shaped around its center, corners in angle order: a valid ring
            n = int(rng.integers(20, 201))
            angles = (np.arange(n) + rng.uniform(0.1, 0.9, n)) * 2 * math.pi / n
            radii = rng.uniform(200, 2000) * rng.uniform(0.5, 1.0, n)
            ring = [offset(lat, lon, r * math.sin(a), r * math.cos(a)) for a, r in zip(angles, radii, strict=True)]
            area = f"POLYGON (({wkt_points([*ring, ring[0]])}))"
        elif kind == "circle":
            area = f"CIRCLE ({lat:.7f} {lon:.7f}, {rng.uniform(50, 3000):.1f})"
        else:
            heading, line = rng.uniform(0, 2 * math.pi), [(lat, lon)]
            for _ in range(int(rng.integers(5, 21)) - 1):
                heading += rng.uniform(-math.pi / 4, math.pi / 4)
                step = rng.uniform(100, 800)
                line.append(offset(*line[-1], step * math.sin(heading), step * math.cos(heading)))
            area = f"LINESTRING ({wkt_points(line)})"
            attributes["polylineDistance"] = round(float(rng.uniform(10, 200)), 1)
        if index % 4 == 0:
            attributes["speedLimit"] = round(float(rng.uniform(15, 40)), 1)  # knots
        areas.append((area, attributes))
    return areas


def make_links(rng: np.random.Generator) -> list[list[int]]:
    """For each device (0-based), the sorted numbers (1-based) of the geofences linked to it."""
    return [
        sorted(int(g) + 1 for g in rng.choice(GEOFENCES, size=int(rng.integers(40, 61)), replace=False))
        for _ in range(DEVICES)
    ]


# --- 1. detection: the index against a loop per position ------------------------------------------


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


def loop_members(
    shapes: Mapping[int, Shape], linked: Sequence[Sequence[int]], lat: np.ndarray, lon: np.ndarray, device: np.ndarray
) -> list[tuple[int, int]]:
    """The straightforward way: every position against every geofence linked to its device."""
    pairs = []
    for i in range(len(lat)):
        y, x = float(lat[i]), float(lon[i])
        point = shapely.Point(x, y)
        for gid in linked[int(device[i])]:
            shape = shapes[gid]
            if shape.kind == "polygon":
                inside = shape.geometry.contains(point)  # type: ignore[union-attr]
            elif shape.kind == "circle":
                inside = haversine(shape.origin[0], shape.origin[1], y, x) <= shape.radius_m
            else:
                lat0, lon0 = shape.origin
                east = (x - lon0) * METRES_PER_DEGREE * math.cos(math.radians(lat0))
                north = (y - lat0) * METRES_PER_DEGREE
                inside = shape.geometry.distance(shapely.Point(east, north)) <= shape.radius_m  # type: ignore[union-attr]
            if inside:
                pairs.append((i, gid))
    return pairs


def detection_speedup(quick: bool, areas: list[tuple[str, dict[str, Any]]], linked: list[list[int]]) -> float:
    count, subset = (50_000, 10_000) if quick else (200_000, 20_000)
    started = time.perf_counter()
    shapes = {number: parse_area(area, attributes) for number, (area, attributes) in enumerate(areas, 1)}
    parsed = time.perf_counter()
    index = GeofenceIndex(shapes)
    built = time.perf_counter()
    kinds = {kind: sum(s.kind == kind for s in shapes.values()) for kind in ("polygon", "circle", "corridor")}
    devices = np.repeat(np.arange(len(linked)), [len(gids) for gids in linked])
    geofences = np.concatenate([np.array(gids, dtype=np.int64) for gids in linked])
    linking = time.perf_counter()
    # As load_geofencing hands a batch's links (arrays from the database) to `members`: made once for
    # the batch, with their table over the index (made at the first lookup). Here once for the fleet.
    links = Links(devices, geofences)
    index.members(np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64), links)
    linked_in = time.perf_counter() - linking
    # The loop's geometries prepared too (once, untimed), as a careful loop would have them (the
    # index prepares these same objects: without this line the loop would depend on that).
    shapely.prepare([shape.geometry for shape in shapes.values() if shape.geometry is not None])
    print(
        f"geofences: {kinds}, {sum(len(shapely.get_coordinates(s.geometry)) for s in shapes.values() if s.kind == 'polygon'):,}"
        f" polygon vertices; {len(links):,} device links; parsed in {parsed - started:.2f} s, "
        f"index built in {(built - parsed) * 1000:.0f} ms, links and their table made in {linked_in * 1000:.1f} ms",
        flush=True,
    )
    rng = np.random.default_rng(7)
    lat, lon = random_points(rng, count)
    device = rng.integers(0, DEVICES, count).astype(np.int64)
    index_runs, loop_runs, found = [], [], 0
    for _ in range(3):  # best of 3 for both, alternating: the machine's other load hits both alike
        started, found = time.perf_counter(), 0
        for first in range(0, count, BATCH):
            chunk = slice(first, first + BATCH)
            found += len(index.members(lat[chunk], lon[chunk], device[chunk], links)[0])
        index_runs.append(time.perf_counter() - started)
        started = time.perf_counter()
        expected = loop_members(shapes, linked, lat[:subset], lon[:subset], device[:subset])
        loop_runs.append(time.perf_counter() - started)
    points, ids = index.members(lat[:subset], lon[:subset], device[:subset], links)
    got = list(zip(points.tolist(), ids.tolist(), strict=True))
    assert got == expected, f"index and loop disagree on {len(set(got) ^ set(expected))} of {len(expected)} pairs"
    per_index, per_loop = min(index_runs) / count * 1e6, min(loop_runs) / subset * 1e6
    print(
        f"detection: index {count:,} positions in {BATCH:,}-position batches in {min(index_runs):.3f} s "
        f"({found:,} memberships): {per_index:.2f} us/position; loop on the first {subset:,} positions (the same "
        f"{len(expected):,} pairs as the index) in {min(loop_runs):.2f} s: {per_loop:.1f} us/position (best of 3 "
        f"each); per position the index is {per_loop / per_index:.1f}x faster",
        flush=True,
    )
    return per_loop / per_index


# --- 2. batch ingest with detection off, then on ---------------------------------------------------


class Tracks:
    """Each device drives straight out from its start and back at its own speed, `period` seconds
    there and back: second k of a run is at the same place in every run, and a run ends where it began."""

    def __init__(self, rng: np.random.Generator, period: int) -> None:
        self.period = period
        start_lat, start_lon = random_points(rng, DEVICES)
        heading = rng.uniform(0, 2 * math.pi, DEVICES)
        self.speed_ms = rng.uniform(8, 20, DEVICES)
        k = np.arange(period + 1)
        out = np.minimum(k, period - k)[None, :] * self.speed_ms[:, None]  # metres from the start
        self.lat, self.lon = offset(
            start_lat[:, None], start_lon[:, None], out * np.sin(heading)[:, None], out * np.cos(heading)[:, None]
        )
        self.course = np.where(
            k[None, :] < period / 2, np.degrees(heading)[:, None], (np.degrees(heading)[:, None] + 180) % 360
        )

    def bodies(self, base: int, first: int, last: int) -> list[bytes]:
        """Batch API bodies for seconds first..last of the track, fix times T0 + base + k, interleaved."""
        items = [
            {
                "uniqueId": f"bench-{d}",
                "fixTime": T0 + base + k,
                "latitude": round(float(self.lat[d, k]), 7),
                "longitude": round(float(self.lon[d, k]), 7),
                "speed": round(float(self.speed_ms[d]) * KNOTS_PER_MS, 2),
                "course": round(float(self.course[d, k]), 1),
            }
            for k in range(first, last + 1)
            for d in range(DEVICES)
        ]
        return [orjson.dumps(items[i : i + BATCH]) for i in range(0, len(items), BATCH)]


async def link_geofences(
    pool: asyncpg.Pool, areas: list[tuple[str, dict[str, Any]]], linked: list[list[int]], device_ids: dict[str, int]
) -> None:
    """The geofences and device links, written straight into the database."""
    async with pool.acquire() as connection, connection.transaction():
        ids = [
            await connection.fetchval(
                "INSERT INTO geofences (name, description, area, attributes, revision)"
                " VALUES ($1, '', $2, $3::jsonb, 1) RETURNING id",
                f"bench-{number}",
                area,
                orjson.dumps(attributes).decode(),
            )
            for number, (area, attributes) in enumerate(areas, 1)
        ]
        rows = [(device_ids[f"bench-{d}"], ids[g - 1]) for d, gids in enumerate(linked) for g in gids]
        await connection.copy_records_to_table("device_geofences", records=rows, columns=["device_id", "geofence_id"])


async def processed(counters: Redis) -> int:
    """Positions the workers have stored or dropped so far (their counters in Redis)."""
    counts = await read_counts(counters)
    return counts.get(POSITIONS_STORED, 0) + counts.get(POSITIONS_DROPPED, 0)


async def wait_processed(counters: Redis, expected: int, timeout_s: float) -> None:
    """Until the workers have stored or dropped `expected` positions: one HGETALL a poll. (A count(*)
    of positions a poll takes longer the more rows each run leaves, on the CPU the worker needs: on two
    cores, 40 ms of every 50 ms by the fourth quick run, a drag on whichever side runs later.)"""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if await processed(counters) >= expected:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {await processed(counters)} of {expected} positions processed in {timeout_s:.0f} s")


def cpu_seconds(processes: Sequence[subprocess.Popen[bytes]]) -> float:
    """User and system CPU time the processes have used so far (Linux /proc)."""
    used = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return used / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rate: float  # positions/s, wall clock
    cpu_s: float  # the workers' CPU time


async def timed_run(
    http: aiohttp.ClientSession,
    url: str,
    pool: asyncpg.Pool,
    counters: Redis,
    workers: Sequence[subprocess.Popen[bytes]],
    tracks: Tracks,
    run: int,
    label: str,
) -> Run:
    """One run: a warm-up second (workers parse geofences, build the index), then the rest of the track."""
    base = run * tracks.period
    before = await pool.fetchval("SELECT count(*) FROM positions")
    done = await processed(counters)
    await post_all(http, url, tracks.bodies(base, 1, 1), 1)
    await wait_processed(counters, done + DEVICES, 60)
    bodies = tracks.bodies(base, 2, tracks.period)
    total = (tracks.period - 1) * DEVICES
    started, cpu_before = time.perf_counter(), cpu_seconds(workers)
    accepted = await post_all(http, url, bodies, 4)
    await wait_processed(counters, done + DEVICES + total, 900)
    finished = await wait_devices_at(pool, T0 + base + tracks.period, 120)
    cpu = cpu_seconds(workers) - cpu_before
    assert accepted == total, (accepted, total)
    stored = await pool.fetchval("SELECT count(*) FROM positions") - before  # once, after the clock stopped
    assert stored == DEVICES + total, f"{stored} of {DEVICES + total} positions stored"
    since = T0 + base + 1.5
    inside = await pool.fetchval(
        "SELECT count(*) FROM positions WHERE fix_time > to_timestamp($1) AND attributes ? 'geofenceIds'", since
    )
    events = await pool.fetch(
        "SELECT type, count(*) AS n FROM events WHERE event_time > to_timestamp($1) GROUP BY type ORDER BY type", since
    )
    rate = total / (finished - started)
    print(
        f"ingest, detection {label}: {total:,} positions stored and devices updated in {finished - started:.1f} s: "
        f"{rate:,.0f} positions/s, worker CPU {cpu / total * 1e6:.0f} us/position; {inside:,} positions in a "
        f"geofence; events {', '.join(f'{row[0]} {row[1]:,}' for row in events) or 'none'}",
        flush=True,
    )
    return Run(rate, cpu)


async def ingest_ratio(
    quick: bool, areas: list[tuple[str, dict[str, Any]]], linked: list[list[int]]
) -> tuple[float, float, float]:
    """(positions/s off, on, the workers' CPU per position off / on)."""
    database, maintenance, redis = bench_urls("notifications", 11)
    seconds = 150 if quick else 500  # x 1,000 devices, each of the four runs
    await prepare_database(database, maintenance)
    counters = await connect_redis(redis)
    await counters.flushdb()
    logs = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    admin_port = free_port()
    env = process_env(database, redis, TRACKER_ADMIN_PORT=str(admin_port), TRACKER_OSMAND_PORT=str(free_port()))
    admin_url = f"http://127.0.0.1:{admin_port}"
    processes = [start(["-m", "tracker_jobs", "admin"], env, logs / "admin.log")]
    processes += [
        start(["-m", "tracker_jobs", "worker", "--queues", "positions"], env, logs / f"worker{i}.log")
        for i in range(int(os.environ.get("BENCH_WORKERS", "1")))
    ]
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(200):
                try:
                    async with http.get(f"{admin_url}/health") as response:
                        if (await response.json())["workers"] >= 1:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            url = f"{admin_url}/api/positions"
            tracks = Tracks(np.random.default_rng(11), seconds + 1)
            await post_all(http, url, tracks.bodies(0, 0, 0), 1)  # registers the fleet
            await wait_stored(pool, DEVICES, 60)
            device_ids = {row["unique_id"]: row["id"] for row in await pool.fetch("SELECT id, unique_id FROM devices")}
            # Off, on, on, off: a drift over the runs (the tables growing, the machine's other load)
            # weighs on both alike. Each side's rate is its positions over its time.
            workers = processes[1:]
            runs = [await timed_run(http, url, pool, counters, workers, tracks, 0, "off")]
            await link_geofences(pool, areas, linked, device_ids)
            runs += [await timed_run(http, url, pool, counters, workers, tracks, run, "on") for run in (1, 2)]
            await pool.execute("DELETE FROM device_geofences")
            runs.append(await timed_run(http, url, pool, counters, workers, tracks, 3, "off"))
            off, on = (2 / (1 / runs[a].rate + 1 / runs[b].rate) for a, b in ((0, 3), (1, 2)))
            # The workers' CPU per position, off against on: what detection costs them, whatever else
            # the machine runs meanwhile (the wall-clock ratio moves with that).
            cpu_ratio = (runs[0].cpu_s + runs[3].cpu_s) / (runs[1].cpu_s + runs[2].cpu_s)
    finally:
        await pool.close()
        await counters.aclose()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
    print(f"logs in {logs}", flush=True)
    return off, on, cpu_ratio


async def main(quick: bool) -> None:
    began = time.perf_counter()
    rng = np.random.default_rng(2026)
    areas, linked = make_geofences(rng), make_links(rng)
    # The latency first: after the ingest runs, PostgreSQL is still busy with the millions of rows they
    # wrote (autovacuum, checkpoints), which would be measured along with the engine.
    print("webhooks, position -> event -> webhook at 2,000 positions/s:", flush=True)
    p99 = await event_to_webhook_p99(quick)
    print("webhooks, a receiver taking 100 ms to answer:", flush=True)
    per_s = await webhooks_per_s(quick)
    speedup = detection_speedup(quick, areas, linked)
    off, on, cpu_ratio = await ingest_ratio(quick, areas, linked)
    print(
        f"ingest with detection on / off: {on / off:.3f} (the workers' CPU per position, off / on: {cpu_ratio:.3f})",
        flush=True,
    )
    print(f"whole run {time.perf_counter() - began:.0f} s", flush=True)
    print(
        f"RESULT ingest_detect_ratio={on / off:.3f} detect_speedup_vs_loop={speedup:.1f} "
        f"event_to_webhook_p99_ms={p99:.0f} webhooks_per_s={per_s:.0f} "
        f"ingest_positions_per_s_detect_off={off:.0f} ingest_positions_per_s_detect_on={on:.0f} "
        f"ingest_worker_cpu_ratio={cpu_ratio:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute, same keys")
    uvloop.run(main(parser.parse_args().quick))
