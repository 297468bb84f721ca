"""HTTP server benchmark (issue 10): the device listener's server against aiohttp and uvicorn, side by side.

Measures only the HTTP machinery: each server runs the same trivial handler (parse an OsmAnd query
string, `?id=...&lat=...&lon=...&timestamp=...`, and answer 200 with an empty body; no Redis, no
database) in a process of its own on 127.0.0.1, on uvloop, started the same way with the same
environment:
  http1    tracker_jobs.listener.http1.serve_http, the listener's server;
  aiohttp  a plain aiohttp.web.Application with one GET/POST route, access log off;
  uvicorn  uvicorn with http="httptools", loop="uvloop", a minimal raw ASGI app, access log off.
The load generator in this process (bench/ingest.py's KeepAliveClient) holds N kept-alive connections,
each sending one GET at a time as fast as it is answered, for a fixed number of requests. Each server
is warmed up first (connections opened, 2,000 requests); then the server process's CPU time
(user + sys from /proc/<pid>/stat) over the measured requests, divided by their number, gives µs of
server CPU per request, and the wall time gives requests/s. The load generator shares the machine's
cores with the server, so requests/s says more about the machine than CPU per request does.

The servers run one at a time in interleaved rounds (http1, aiohttp, uvicorn, http1, ...) and each
server's median is reported, so that a noisy neighbour on a shared machine skews no server alone.
Linux only (/proc). Needs uvicorn, a benchmark-time dependency (the `dev` extra).
Ends with: RESULT http1_cpu_us_per_request=... aiohttp_cpu_us_per_request=... uvicorn_cpu_us_per_request=...
http1_requests_per_s=... ratio_aiohttp_to_http1=...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the load generator lives beside this file

from ingest import KeepAliveClient, osmand_path

from tracker_jobs.embedded import free_port

HOST = "127.0.0.1"
SERVERS = ("http1", "aiohttp", "uvicorn")
WARMUP_REQUESTS = 2_000  # opens every connection and warms the servers' caches before CPU is counted
MAX_BODY_BYTES = 64 * 1024  # as the listener's device port
READY_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 600.0  # one server's measured requests: far above a run on a busy 2-core machine
STOP_TIMEOUT_S = 10.0  # then the server is killed
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the servers, each run as `http_servers.py --serve NAME --port PORT` in a process of its own --------


def accept(query: str) -> int:
    """The handler every server runs: an OsmAnd query's fields parsed and checked, 200, or 400 if one is
    missing or malformed. Work that costs the same in every server, so differences are the servers'."""
    fields = dict(parse_qsl(query))
    try:
        float(fields["lat"])
        float(fields["lon"])
        int(fields["timestamp"])
        return 200 if fields["id"] else 400
    except (KeyError, ValueError):
        return 400


async def until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_http1(port: int) -> None:
    from tracker_jobs.listener.http1 import Reply, Request, serve_http

    async def handle(request: Request) -> Reply:
        return Reply(accept(request.query))

    server = await serve_http(handle, HOST, port, max_body_bytes=MAX_BODY_BYTES)
    await until_terminated()
    await server.close()


async def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=accept(request.query_string))

    app = web.Application()
    app.router.add_route("GET", "/", handle)
    app.router.add_route("POST", "/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    await until_terminated()
    await runner.cleanup()


def serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else reaches a plain HTTP server
            return
        status = accept(scope["query_string"].decode("latin-1"))
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",  # no startup lines: stderr is kept for failures
    )
    # Server.run builds the uvloop loop from the config and stops gracefully on SIGTERM by itself.
    uvicorn.Server(config).run()


def exit_with_parent() -> None:
    """Stop this server when the benchmark closes its standard input, or dies without stopping it: an
    interrupted benchmark must not leave servers behind. A thread blocked in read costs no CPU."""

    def watch() -> None:
        sys.stdin.buffer.read()  # returns at end of file only
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def serve(name: str, port: int) -> None:
    exit_with_parent()
    if name == "http1":
        uvloop.run(serve_http1(port))
    elif name == "aiohttp":
        uvloop.run(serve_aiohttp(port))
    else:
        serve_uvicorn(port)


# --- the load generator and the measurement --------------------------------------------------------


@dataclass(frozen=True)
class Run:
    server: str
    requests: int
    seconds: float
    server_cpu_s: float
    client_cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def cpu_seconds(pid: int) -> float:
    """user + sys CPU time of a process, all its threads, so far (a read of procfs, it never blocks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of proc(5)


async def exchange(clients: list[KeepAliveClient], paths: Iterable[str]) -> None:
    """Every client sends its next request as soon as its last is answered, until the paths run out."""
    pending = iter(paths)  # shared: each request goes to whichever connection is free first

    async def client(connection: KeepAliveClient) -> None:
        for path in pending:
            status = await connection.get(path)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")

    await asyncio.gather(*(client(connection) for connection in clients))


async def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before it answered")
        probe = KeepAliveClient(HOST, port)
        try:
            if await asyncio.wait_for(probe.get(osmand_path(0, 0)), 2.0) == 200:
                return
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # not listening yet
        finally:
            probe.close()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the server did not answer within {READY_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)


async def load(name: str, port: int, process: subprocess.Popen[bytes], paths: list[str], connections: int) -> Run:
    await wait_ready(port, process)
    clients = [KeepAliveClient(HOST, port) for _ in range(connections)]
    try:
        # Connections are opened here, not counted: trackers keep theirs for hours.
        await exchange(clients, (paths[i % len(paths)] for i in range(WARMUP_REQUESTS)))
        server_before, client_before = cpu_seconds(process.pid), time.process_time()
        started = time.perf_counter()
        await asyncio.wait_for(exchange(clients, paths), RUN_TIMEOUT_S)
        seconds = time.perf_counter() - started
        server_cpu = cpu_seconds(process.pid) - server_before
        client_cpu = time.process_time() - client_before
    finally:
        for client in clients:
            client.close()
    return Run(name, len(paths), seconds, server_cpu, client_cpu)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (and end of its input), then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if process.stdin is not None:
        process.stdin.close()
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


def measure(name: str, paths: list[str], connections: int, logs: Path) -> Run:
    port = free_port()
    log = logs / f"{name}.log"
    with open(log, "ab") as errors:
        # The same interpreter, environment and stdio for every server: only the server differs.
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        # A fresh loop per run, so one run's leftovers cannot slow the load generator in the next.
        return uvloop.run(load(name, port, process, paths, connections))
    except Exception:
        print(f"{name} failed; its stderr:\n{log.read_text()[-4000:]}", file=sys.stderr, flush=True)
        raise
    finally:
        stop(process)


def main(requests: int, connections: int, rounds: int) -> None:
    # OsmAnd queries as trackers send them, over 1,000 devices; the same list for every server.
    paths = [osmand_path(i % 1000, i // 1000) for i in range(requests)]
    runs: dict[str, list[Run]] = {name: [] for name in SERVERS}
    print(
        f"{requests:,} requests per run over {connections} kept-alive connections, {rounds} rounds of "
        f"{', '.join(SERVERS)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-http-servers-") as logs:
        for round_number in range(1, rounds + 1):
            for name in SERVERS:
                run = measure(name, paths, connections, Path(logs))
                runs[name].append(run)
                print(
                    f"  round {round_number} {name:8} {run.cpu_us_per_request:6.1f} µs server CPU/request, "
                    f"{run.requests_per_s:7,.0f} requests/s "
                    f"(load generator {run.client_cpu_s / run.requests * 1e6:.1f} µs CPU/request)",
                    flush=True,
                )
    cpu = {name: statistics.median(run.cpu_us_per_request for run in runs[name]) for name in SERVERS}
    rate = {name: statistics.median(run.requests_per_s for run in runs[name]) for name in SERVERS}
    for name in SERVERS:
        print(f"median {name:8} {cpu[name]:6.1f} µs server CPU/request, {rate[name]:7,.0f} requests/s", flush=True)
    print(
        f"RESULT http1_cpu_us_per_request={cpu['http1']:.1f} aiohttp_cpu_us_per_request={cpu['aiohttp']:.1f} "
        f"uvicorn_cpu_us_per_request={cpu['uvicorn']:.1f} http1_requests_per_s={rate['http1']:.0f} "
        f"ratio_aiohttp_to_http1={cpu['aiohttp'] / cpu['http1']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="15,000 requests per run instead of 100,000")
    parser.add_argument("--requests", type=int, help="requests per run (overrides --quick)")
    parser.add_argument("--connections", type=int, default=64, help="kept-alive connections (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the three servers (default 2)")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.serve, arguments.port)
    else:
        requests = arguments.requests or (15_000 if arguments.quick else 100_000)
        main(requests, arguments.connections, arguments.rounds)
