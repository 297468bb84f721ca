"""GET /api/socket: live positions, device changes and the user's web notifications (`{"events": [...]}`)
over a websocket, as Traccar's web app expects; and task-record changes (`{"tasks": [...]}`: an admin's
socket gets every task's, a user's only their own; only when asked, with `?tasks=true`), which the dashboard
watches instead of polling.

Every admin process subscribes to the workers' pub/sub channel and serves its own clients, so any
number of admin processes can run. Each client gets only the devices its user may see; an admin gets
every device, including devices registered after the socket opened.

A socket keeps no more authority than its token: when any process announces an access change
(`tracker_jobs.core.access`), the sockets of those users are checked again at once: closed when the token
no longer lets its user in (password changed, session ended, token revoked, user disabled or deleted),
re-filtered when the user's role or devices changed. Every socket is also checked once a minute, for
sessions that simply expired and for announcements lost while Redis was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.api.access import bearer_token, principal
from tracker_jobs.api.keys import REDIS, SESSIONS
from tracker_jobs.api.openapi import BOOLEAN, STRING, Operation, Query, Reply, describe, error_reply
from tracker_jobs.api.params import query_bool
from tracker_jobs.api.routes import Route
from tracker_jobs.core.access import EVERYTHING, AccessChange, watch_access_changes
from tracker_jobs.core.principal import Principal
from tracker_jobs.core.redis import listen_forever
from tracker_jobs.devices.service import device_to_api, list_devices
from tracker_jobs.jobs.records import TASKS_CHANNEL, task_owners
from tracker_jobs.notifications.web import NOTIFY_CHANNEL
from tracker_jobs.positions.live import LIVE_CHANNEL
from tracker_jobs.positions.service import latest_positions
from tracker_jobs.users.service import hash_token, principals_by_token_hash

log = logging.getLogger(__name__)
CLIENTS_KEY = "tracker:websocket-clients"  # admin process -> how many sockets it serves (for /metrics)
CLIENT_QUEUE = 256  # messages a slow client may fall behind before it is dropped (it reconnects)
REFRESH_ACCESS_S = 5.0  # a user's visible devices are re-read at most this often, on an unknown id
RECHECK_S = 60.0  # every socket's token is checked again this often, whatever was announced
REVOKED = 1008  # websocket close code "policy violation": the token no longer lets its user in
CLOSE_S = 5.0  # how long closing a revoked socket may wait on its client
# Where each kind of message names its device: a socket gets only the devices its user may see.
DEVICE_FIELD = {"positions": "deviceId", "devices": "id", "events": "deviceId"}


@dataclass(eq=False)  # each socket is itself, hashable by identity
class Client:
    ws: web.WebSocketResponse
    principal: Principal
    token_hash: str
    allowed: set[int]
    tasks: bool = False  # asked for task-record changes (?tasks=true)
    inbox: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    refreshed: float = field(default_factory=time.monotonic)


class LiveHub:
    """Subscribes once per process and hands each message to every client's own sender."""

    def __init__(self, redis: Redis, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.redis = redis
        self.sessions = sessions
        self.clients: set[Client] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.closing: set[asyncio.Task[Any]] = set()  # keeps closing sockets' and re-check tasks alive until done
        self.process = f"{socket.gethostname()}:{os.getpid()}"

    async def start(self) -> None:
        self.tasks = [
            asyncio.create_task(listen_forever(self.redis, LIVE_CHANNEL, self._dispatch)),
            asyncio.create_task(listen_forever(self.redis, NOTIFY_CHANNEL, self._dispatch_notifications)),
            asyncio.create_task(listen_forever(self.redis, TASKS_CHANNEL, self._dispatch_tasks)),
            asyncio.create_task(watch_access_changes(self.redis, self._access_changed)),
            asyncio.create_task(self._recheck_periodically()),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"server shutting down")
        with contextlib.suppress(Exception):
            await self.redis.hdel(CLIENTS_KEY, self.process)  # type: ignore[misc]

    def _dispatch(self, data: bytes) -> None:
        for client in list(self.clients):
            self._hand(client, data)

    def _dispatch_notifications(self, data: bytes) -> None:
        """Each recipient's web notifications to that user's sockets only, as `{"events": [...]}`."""
        by_user: dict[str, list[dict[str, Any]]] = orjson.loads(data)["users"]
        for client in list(self.clients):
            events = by_user.get(str(client.principal.user_id))
            if events:
                self._hand(client, orjson.dumps({"events": events}))

    def _dispatch_tasks(self, data: bytes) -> None:
        """Task changes to admins whole, to each user only the tasks they started."""
        watching = [client for client in self.clients if client.tasks]
        users = [client for client in watching if not client.principal.is_admin]
        for client in watching:
            if client.principal.is_admin:
                self._hand(client, data)
        if users:
            self._in_background(self._hand_own_tasks(users, orjson.loads(data)["tasks"]))

    async def _hand_own_tasks(self, users: list[Client], changes: list[dict[str, Any]]) -> None:
        # A worker's records do not know who started a job (the process that enqueued it does): those
        # owners are read from the records, which the flush wrote before it announced them.
        unknown = [change["id"] for change in changes if change["userId"] is None]
        if unknown:
            try:
                async with self.sessions() as session:
                    owners = await task_owners(session, unknown)
            except Exception as error:  # the database away: the page's backstop read catches up
                log.warning("cannot tell whose tasks changed: %s", error)
                owners = {}
            for change in changes:
                change["userId"] = change["userId"] or owners.get(change["id"])
        for client in users:
            if own := [change for change in changes if change["userId"] == client.principal.user_id]:
                self._hand(client, orjson.dumps({"tasks": own}))

    def _hand(self, client: Client, data: bytes) -> None:
        try:
            client.inbox.put_nowait(data)
        except asyncio.QueueFull:
            log.warning("dropping a websocket client that fell %d messages behind", CLIENT_QUEUE)
            self.clients.discard(client)
            self._in_background(client.ws.close(code=1013, message=b"too slow; reconnect"))

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    def _access_changed(self, change: AccessChange) -> None:
        for client in self.clients:
            if change.devices and not client.principal.is_admin:
                client.refreshed = float("-inf")  # its next unknown device re-reads what it may see, at once
        if change.everything or change.users:
            self._in_background(self._recheck_logged(change))

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_S)
            await self._recheck_logged(EVERYTHING)

    async def recheck(self, change: AccessChange) -> None:
        """Check again the sockets of the users `change` names (or all): close those whose token no
        longer lets them in; re-filter those whose user's role changed."""
        affected = [c for c in self.clients if change.everything or c.principal.user_id in change.users]
        if not affected:
            return
        async with self.sessions() as session:
            current = await principals_by_token_hash(session, {client.token_hash for client in affected})
        revoked = [client for client in affected if client.token_hash not in current]
        self.clients.difference_update(revoked)  # no further message reaches them, whatever the closing takes
        for client in affected:
            now = current.get(client.token_hash)
            if now is not None and now != client.principal:
                client.allowed = await self._reload_allowed(now)  # before the role: never the new role, old devices
                client.principal = now
                client.refreshed = time.monotonic()
        # A client that stopped reading makes close() wait: close them side by side, each for a bounded time.
        await asyncio.gather(
            *(
                asyncio.wait_for(c.ws.close(code=REVOKED, message=b"access revoked; log in again"), CLOSE_S)
                for c in revoked
            ),
            return_exceptions=True,
        )

    async def _recheck_logged(self, change: AccessChange) -> None:
        try:
            await self.recheck(change)
        except Exception as error:  # the database away: the minute's re-check tries again
            log.warning("could not re-check websocket clients after an access change: %s", error)

    async def publish_count(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.hset(CLIENTS_KEY, self.process, str(len(self.clients)))  # type: ignore[misc]

    async def _reload_allowed(self, caller: Principal) -> set[int]:
        async with self.sessions() as session:
            return {device.id for device in await list_devices(session, caller) if device.id is not None}

    async def _visible(self, client: Client, message: dict[str, Any]) -> dict[str, Any]:
        if client.principal.is_admin:
            return message
        ids = {item[DEVICE_FIELD[key]] for key, items in message.items() if key in DEVICE_FIELD for item in items} - {
            None
        }
        if not ids <= client.allowed and time.monotonic() - client.refreshed > REFRESH_ACCESS_S:
            client.allowed = await self._reload_allowed(client.principal)
            client.refreshed = time.monotonic()
        # An event about no device (a system alert, a test) was addressed to this user alone. Tasks were
        # picked for the user at dispatch, and are checked again here: a message queued before a demotion
        # is sent after it. What this does not know how to check is not sent.
        visible: dict[str, Any] = {}
        for key, items in message.items():
            if key == "tasks":
                visible[key] = [item for item in items if item["userId"] == client.principal.user_id]
            elif key in DEVICE_FIELD:
                field_name = DEVICE_FIELD[key]
                visible[key] = [
                    item for item in items if item[field_name] in client.allowed or item[field_name] is None
                ]
        return visible

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
    token = bearer_token(request)
    assert token is not None  # the auth middleware let the request through
    wants_tasks = query_bool(request, "tasks")
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    hub = request.app[HUB]
    async with request.app[SESSIONS]() as session:
        devices = await list_devices(session, caller)
        ids = [device.id for device in devices if device.id is not None]
        positions = await latest_positions(session, request.app[REDIS], caller, ids)
    await ws.send_str(orjson.dumps({"devices": [device_to_api(d) for d in devices]}).decode())
    await ws.send_str(orjson.dumps({"positions": positions}).decode())
    client = Client(ws=ws, principal=caller, token_hash=hash_token(token), allowed=set(ids), tasks=wants_tasks)
    hub.clients.add(client)  # from here on every announced change reaches this socket...
    sender: asyncio.Task[None] | None = None
    try:
        # ...and one check covers whatever changed between authenticating and now.
        await hub.recheck(AccessChange(users=frozenset({caller.user_id})))
        await hub.publish_count()
        sender = asyncio.create_task(hub.serve(client))
        async for message in ws:  # clients only listen; reading keeps the socket's pings answered
            if message.type == WSMsgType.ERROR:
                break
    finally:
        if sender is not None:
            sender.cancel()
        hub.clients.discard(client)
        await hub.publish_count()
    return ws


async def live_hub(app: web.Application) -> AsyncIterator[None]:
    """The hub's life on the admin app (a cleanup context): started with it, stopped with it."""
    app[HUB] = LiveHub(app[REDIS], app[SESSIONS])
    await app[HUB].start()
    yield
    await app[HUB].stop()


describe(
    socket_handler,
    Operation(
        "Websocket of live updates (token also as ?token=): {devices} and {positions} on connect, then one message "
        "per stored batch for the devices the caller may see",
        {101: Reply("switching to the websocket protocol"), 400: error_reply("not a websocket request")},
        query=(
            Query("token", STRING, "the bearer token, for browsers that cannot set headers"),
            Query(
                "tasks", BOOLEAN, "also {tasks: [{id, name, queue, state, userId, progress}]} as task records change"
            ),
        ),
        tag="positions",
    ),
)


ROUTES = [
    Route("GET", "/api/socket", socket_handler),
]
