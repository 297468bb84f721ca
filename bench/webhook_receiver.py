"""A webhook receiver for the benchmarks, in a process of its own (so the load generator's event
loop does not slow it): answers every POST /hook with 200 after `--delay` seconds, and keeps for each
request its arrival (wall-clock epoch seconds), the position's device and fix time, and the delivery
id. GET /stats -> {"count", "arrivals": [[arrival, deviceId, fixTime, deliveryId], ...]}.

    python bench/webhook_receiver.py --port 9000 --delay 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
import uvloop
from aiohttp import web

arrivals: list[tuple[float, Any, Any, str]] = []


def handler(delay_s: float) -> Any:
    async def hook(request: web.Request) -> web.Response:
        arrived = time.time()
        body = orjson.loads(await request.read())
        position = body.get("position") or {}
        arrivals.append((arrived, position.get("deviceId"), position.get("fixTime"), body.get("deliveryId", "")))
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(text="ok")

    return hook


async def stats(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps({"count": len(arrivals), "arrivals": arrivals}), content_type="application/json"
    )


async def main(port: int, delay_s: float) -> None:
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/hook", handler(delay_s))
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=8192).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    arguments = parser.parse_args()
    uvloop.run(main(arguments.port, arguments.delay))
