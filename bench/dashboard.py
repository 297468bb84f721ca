"""Dashboard benchmark (issue 15): the page as an operator sees it, at fleet scale, in a real browser.

On PostgreSQL (a sibling database of TRACKER_TEST_DATABASE_URL named <db>_bench_dashboard) and Redis (db 9 of
TRACKER_TEST_REDIS_URL's server), with the real `tracker-jobs admin`, `tracker-jobs listener` and
`tracker-jobs worker` processes, 1,000,000 job records (bench/tasks.py's seed: a day of records and their
rollups) and 1,000 devices each reporting over OsmAnd once a second from this process the whole time,
Debian's Chromium (Playwright, as the browser tests drive it) measures:
  1. overview_ready_ms: the overview loaded afresh in a signed-in tab, from the first paint to its data on
     screen (the page's `view-ready:overview` mark), the median of several loads;
  2. tasks_page_ms: the tasks view's first page over the million records, from the view's start to its
     table on screen (`view-start:tasks` to `view-ready:tasks`), the median of several;
  3. marker_move_p95_ms: from an OsmAnd request leaving this process to its device's marker moved on the
     map (the animation frame after the page moved it), p95 over every request of the measured seconds
     whose position the page showed (the socket sends each device's newest of a stored batch: `shown`
     says what share that was), split into the request to its socket message reaching the page (the
     pipeline: stored in a batch, then announced) and that message to the marker moved (the page's part).
Ends with: RESULT overview_ready_ms=... marker_move_p95_ms=... tasks_page_ms=...
`--quick` (under a minute) loads the views fewer times and watches the map for fewer seconds, over the same
million records and the same 1,000 devices a second.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import numpy as np
import uvloop
from ingest import KeepAliveClient, bench_urls, prepare_database, process_env, send_paced, start, wait_listening
from playwright.async_api import Page, async_playwright
from tasks import seed_records

from tracker_jobs.core.db import create_engine
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.embedded import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP

TOKEN = "bench-admin-token"  # process_env's admin token
ROLES = ("worker", "admin", "listener")
RECORDS = 1_000_000
DEVICES = 1000
WARM_UP_S = 3  # seconds of reporting before the map is watched: every device registered and on the map
# Records each shown position with the time of the animation frame after the page moved its marker.
# Stamps each socket message's positions as it reaches the page, before the page's own handler runs
# (listeners added at construction run before the `onmessage` the page sets later), once watching.
STAMP_ARRIVALS = """(() => {
    const Native = window.WebSocket;
    window.benchArrivals = [];
    window.WebSocket = function (url, protocols) {
        const socket = new Native(url, protocols);
        socket.addEventListener("message", (event) => {
            if (!window.benchMoves) return;
            const now = Date.now();
            for (const p of JSON.parse(event.data).positions || []) {
                window.benchArrivals.push([p.deviceId, Date.parse(p.fixTime) / 1000, now]);
            }
        });
        return socket;
    };
})();"""
WATCH_MOVES = """() => {
    window.benchMoves = [];
    document.addEventListener("tracker:positions", (event) => {
        const batch = event.detail;
        requestAnimationFrame(() => {
            const now = Date.now();
            for (const p of batch) window.benchMoves.push([p.deviceId, Date.parse(p.fixTime) / 1000, now]);
        });
    });
}"""


def osmand_path(device: int, second: int) -> str:
    # Each device on its own meridian, moving north 11 m a second: a plausible speed, a visible move.
    latitude = 50.0 + (second % 3600) * 0.0001  # `second` is a Unix time: an hour's steps north, then again
    return f"/?id=dash-{device}&lat={latitude:.5f}&lon={8.0 + device * 0.001:.4f}&timestamp={second}"


class Fleet:
    """1,000 devices reporting once a second, each request's send time kept by (uniqueId, fix second)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: dict[tuple[int, int], float] = {}
        self.failures: Counter[int] = Counter()  # status -> requests not answered 200
        self.stopped = False

    async def report(self, first_second: int) -> None:
        """Until `stop()`: every device once a second (then every connection ends cleanly)."""

        def schedule() -> Iterator[tuple[int, int]]:
            for second in itertools.count(first_second):
                for device in range(DEVICES):
                    if self.stopped:
                        return
                    yield device, second

        async def send(client: KeepAliveClient, item: tuple[int, int]) -> None:
            device, second = item
            self.sent[item] = time.time()
            if (status := await client.get(osmand_path(device, second))) != 200:
                self.failures[status] += 1

        await send_paced(self.port, schedule(), DEVICES, send)


async def mark_ms(page: Page, name: str) -> float:
    """The start time of the newest performance mark of this name (ms since the page's time origin)."""
    await page.wait_for_function("name => performance.getEntriesByName(name).length > 0", arg=name, timeout=30_000)
    found: float = await page.evaluate("name => performance.getEntriesByName(name).at(-1).startTime", name)
    return found


async def overview_ready(page: Page, admin: str) -> float:
    """One fresh load of the overview: first paint to its data on screen."""
    await page.goto("about:blank")  # a new document each time, not a jump within the page
    await page.goto(f"{admin}/#/overview")
    ready = await mark_ms(page, "view-ready:overview")
    painted: float = await page.evaluate(
        "() => performance.getEntriesByType('paint').find((entry) => entry.name === 'first-paint').startTime"
    )
    return ready - painted


async def tasks_page(page: Page) -> float:
    """The tasks view opened from another view: its start to its first page on screen."""
    await page.evaluate("() => { performance.clearMarks(); location.hash = '#/workers'; }")
    await mark_ms(page, "view-ready:workers")
    await page.evaluate("() => { location.hash = '#/tasks'; }")
    ready = await mark_ms(page, "view-ready:tasks")
    return ready - await mark_ms(page, "view-start:tasks")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_program(roles: dict[int, str]) -> Counter[str]:
    """CPU seconds used so far by each kind of process on the machine: the engine's (by pid, `roles`),
    Chromium, PostgreSQL, Redis, and this process (the load generator)."""
    used: Counter[str] = Counter()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        pid = int(proc.name)
        name = roles.get(pid) or next((kind for kind in ("chromium", "postgres", "redis") if kind in command), None)
        if pid == os.getpid():
            name = "load generator"
        if name is not None:
            fields = stat[stat.rindex(")") + 2 :].split()
            used[name] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return used


@dataclass
class Moves:
    """Per position shown on the map (ms): request to marker moved, request to its socket message reaching
    the page, and that message to the marker moved; and how many requests were sent while watching."""

    total: list[float]
    to_page: list[float]
    on_page: list[float]
    sent: int
    cpu_per_s: dict[str, float]  # cores each kind of process kept busy while watching


def first_times(rows: list[list[float]], by_id: dict[int, int]) -> dict[tuple[int, int], float]:
    """(device number, fix second) -> the first time the page saw it (a position sent again counts once)."""
    first: dict[tuple[int, int], float] = {}
    for device_id, fix_second, at_ms in rows:
        first.setdefault((by_id.get(int(device_id), -1), int(fix_second)), at_ms)
    return first


async def marker_moves(
    page: Page, fleet: Fleet, device_ids: dict[int, int], seconds: float, roles: dict[int, str]
) -> Moves:
    """Watch the map for `seconds`: when each position's message arrived and when its marker moved."""
    await page.evaluate("() => { location.hash = '#/map'; }")
    await mark_ms(page, "view-ready:map")
    await page.evaluate(WATCH_MOVES)
    since, cpu_before = time.time(), cpu_by_program(roles)
    await asyncio.sleep(seconds)
    until, cpu_after = time.time(), cpu_by_program(roles)
    moves: list[list[float]] = await page.evaluate("() => window.benchMoves")
    arrivals: list[list[float]] = await page.evaluate("() => window.benchArrivals")
    if not moves:
        shown = await page.evaluate("() => document.querySelectorAll('.leaflet-marker-icon').length")
        raise RuntimeError(
            f"no position reached the map in {seconds:.0f} s: {len(fleet.sent)} requests sent, "
            f"not answered 200 (status: requests): {dict(fleet.failures)}, {shown} markers shown, "
            f"live: {await page.inner_text('#live')!r}"
        )
    by_id = {device_id: device for device, device_id in device_ids.items()}
    arrived = first_times(arrivals, by_id)
    cpu = {name: (cpu_after[name] - cpu_before[name]) / (until - since) for name in cpu_after}
    found = Moves([], [], [], sum(1 for sent in fleet.sent.values() if since <= sent <= until - 1), cpu)
    for key, moved_ms in first_times(moves, by_id).items():
        sent = fleet.sent.get(key)
        if sent is not None and since <= sent <= until - 1:  # a request's position needs its second to show
            found.total.append(moved_ms - sent * 1000)
            if key in arrived:
                found.to_page.append(arrived[key] - sent * 1000)
                found.on_page.append(moved_ms - arrived[key])
    return found


async def main(quick: bool) -> None:
    database, maintenance, redis_url = bench_urls("dashboard", 9)
    loads, watch_s = (3, 8.0) if quick else (10, 30.0)
    logs = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    await prepare_database(database, maintenance)
    engine = create_engine(database)
    try:
        seeded_s = await seed_records(engine, RECORDS)
    finally:
        await engine.dispose()
    redis = await connect_redis(redis_url)
    await redis.flushdb()
    await redis.aclose()
    admin_port, listener_port = free_port(), free_port()
    env = process_env(
        database,
        redis_url,
        TRACKER_ADMIN_PORT=str(admin_port),
        TRACKER_OSMAND_PORT=str(listener_port),
        TRACKER_MAP_TILES="none",
        TRACKER_API_RATE_LIMIT="0",
    )
    processes = [start(["-m", "tracker_jobs", role], env, logs / f"{role}.log") for role in ROLES]
    admin = f"http://127.0.0.1:{admin_port}"
    fleet = Fleet(listener_port)
    reporting: asyncio.Task[None] | None = None
    try:
        await wait_listening(admin_port, processes[1])
        await wait_listening(listener_port, processes[2])
        reporting = asyncio.create_task(fleet.report(int(time.time())))
        await asyncio.sleep(WARM_UP_S)
        connection = await asyncpg.connect(database)
        try:
            deadline = time.perf_counter() + 60
            while len(rows := await connection.fetch("SELECT id, unique_id FROM devices")) < DEVICES:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {len(rows)} of {DEVICES} devices registered within a minute")
                await asyncio.sleep(0.5)
        finally:
            await connection.close()
        device_ids = {int(row["unique_id"].removeprefix("dash-")): row["id"] for row in rows}
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = await browser.new_context(viewport=DESKTOP)
            await context.add_init_script(f"sessionStorage.setItem('tracker.token', '{TOKEN}')")
            await context.add_init_script(STAMP_ARRIVALS)
            page = await context.new_page()
            overview = [await overview_ready(page, admin) for _ in range(loads)]
            tasks = [await tasks_page(page) for _ in range(loads)]
            roles = {process.pid: role for process, role in zip(processes, ROLES, strict=True)}
            moves = await marker_moves(page, fleet, device_ids, watch_s, roles)
            await browser.close()
    finally:
        if reporting is not None:
            fleet.stopped = True
            await asyncio.wait_for(reporting, 30)
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    if not moves.total:
        raise RuntimeError(f"no marker moved on the page (logs in {logs})")
    p95 = float(np.percentile(moves.total, 95))

    def spread(values: list[float]) -> str:
        return (
            f"p50 {np.percentile(values, 50):.0f} ms, p95 {np.percentile(values, 95):.0f} ms, max {max(values):.0f} ms"
        )

    print(f"seeded {RECORDS:,} job records in {seeded_s:.1f} s; {len(device_ids)} devices reporting once a second")
    print(f"overview ready (ms, each load): {', '.join(f'{value:.0f}' for value in overview)}")
    print(f"tasks first page (ms, each): {', '.join(f'{value:.0f}' for value in tasks)}")
    print(
        f"marker moves: {len(moves.total)} of {moves.sent} requests sent while watching "
        f"({len(moves.total) / max(moves.sent, 1):.0%} shown): {spread(moves.total)}; "
        f"not answered 200 (status: requests): {dict(fleet.failures) or 'none'}"
    )
    print(f"  request -> its socket message in the page: {spread(moves.to_page)}")
    print(f"  message -> marker moved (the page's part): {spread(moves.on_page)}")
    busy = ", ".join(f"{name} {share:.2f}" for name, share in sorted(moves.cpu_per_s.items(), key=lambda kv: -kv[1]))
    print(f"  cores kept busy while watching (of {os.cpu_count()}): {busy}")
    print(
        f"RESULT overview_ready_ms={statistics.median(overview):.0f} marker_move_p95_ms={p95:.0f} "
        f"tasks_page_ms={statistics.median(tasks):.0f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer loads and seconds, the same data (under a minute)")
    uvloop.run(main(parser.parse_args().quick))
