"""GET /api/socket: live positions and device changes over a websocket, as Traccar's web app expects.

Every admin process subscribes to the workers' pub/sub channel and serves its own clients, so any
number of admin processes can run. Each client gets only the devices its user may see; an admin gets
every device, including devices registered after the socket opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.admin.auth import principal
from tracker_jobs.admin.state import REDIS, SESSIONS
from tracker_jobs.devices.service import device_to_api, list_devices
from tracker_jobs.positions.live import LIVE_CHANNEL
from tracker_jobs.positions.service import latest_positions
from tracker_jobs.users.service import Principal

log = logging.getLogger(__name__)
CLIENTS_KEY = "tracker:websocket-clients"  # admin process -> how many sockets it serves (for /metrics)
CLIENT_QUEUE = 256  # messages a slow client may fall behind before it is dropped (it reconnects)
REFRESH_ACCESS_S = 5.0  # a user's visible devices are re-read at most this often, on an unknown id


@dataclass(eq=False)  # each socket is itself, hashable by identity
class Client:
    ws: web.WebSocketResponse
    principal: Principal
    allowed: set[int]
    inbox: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    refreshed: float = field(default_factory=time.monotonic)


class LiveHub:
    """Subscribes once per process and hands each message to every client's own sender."""

    def __init__(self, redis: Redis, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.redis = redis
        self.sessions = sessions
        self.clients: set[Client] = set()
        self.listener: asyncio.Task[None] | None = None
        self.closing: set[asyncio.Task[bool]] = set()  # keeps closing sockets' tasks alive until done
        self.process = f"{socket.gethostname()}:{os.getpid()}"

    async def start(self) -> None:
        self.listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"server shutting down")
        with contextlib.suppress(Exception):
            await self.redis.hdel(CLIENTS_KEY, self.process)  # type: ignore[misc]

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(LIVE_CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis gone: clients keep their sockets, we resubscribe
                log.warning("live updates interrupted: %s; resubscribing", error)
                await asyncio.sleep(1.0)

    def _dispatch(self, data: bytes) -> None:
        for client in list(self.clients):
            try:
                client.inbox.put_nowait(data)
            except asyncio.QueueFull:
                log.warning("dropping a websocket client that fell %d messages behind", CLIENT_QUEUE)
                self.clients.discard(client)
                closing = asyncio.create_task(client.ws.close(code=1013, message=b"too slow; reconnect"))
                self.closing.add(closing)
                closing.add_done_callback(self.closing.discard)

    async def publish_count(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.hset(CLIENTS_KEY, self.process, str(len(self.clients)))  # type: ignore[misc]

    async def _reload_allowed(self, caller: Principal) -> set[int]:
        async with self.sessions() as session:
            return {device.id for device in await list_devices(session, caller) if device.id is not None}

    async def _visible(self, client: Client, message: dict[str, Any]) -> dict[str, Any]:
        if client.principal.is_admin:
            return message
        ids = {p["deviceId"] for p in message.get("positions", [])} | {d["id"] for d in message.get("devices", [])}
        if not ids <= client.allowed and time.monotonic() - client.refreshed > REFRESH_ACCESS_S:
            client.allowed = await self._reload_allowed(client.principal)
            client.refreshed = time.monotonic()
        return {
            key: [item for item in items if item["deviceId" if key == "positions" else "id"] in client.allowed]
            for key, items in message.items()
        }

    async def serve(self, client: Client) -> None:
        """Send the client what it may see until it goes away."""
        while True:
            visible = await self._visible(client, orjson.loads(await client.inbox.get()))
            visible = {key: items for key, items in visible.items() if items}
            if visible:
                await client.ws.send_str(orjson.dumps(visible).decode())


HUB = web.AppKey("live_hub", LiveHub)


async def socket_handler(request: web.Request) -> web.WebSocketResponse:
    caller = principal(request)
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    hub = request.app[HUB]
    async with request.app[SESSIONS]() as session:
        devices = await list_devices(session, caller)
        ids = [device.id for device in devices if device.id is not None]
        positions = await latest_positions(session, request.app[REDIS], caller, ids)
    await ws.send_str(orjson.dumps({"devices": [device_to_api(d) for d in devices]}).decode())
    await ws.send_str(orjson.dumps({"positions": positions}).decode())
    client = Client(ws=ws, principal=caller, allowed=set(ids))
    hub.clients.add(client)
    await hub.publish_count()
    sender = asyncio.create_task(hub.serve(client))
    try:
        async for message in ws:  # clients only listen; reading keeps the socket's pings answered
            if message.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        hub.clients.discard(client)
        await hub.publish_count()
    return ws


def install(app: web.Application) -> None:
    """Route and lifecycle of the hub on the admin app."""

    async def start(app: web.Application) -> None:
        app[HUB] = LiveHub(app[REDIS], app[SESSIONS])
        await app[HUB].start()

    async def stop(app: web.Application) -> None:
        await app[HUB].stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.router.add_get("/api/socket", socket_handler)
