"""Notifications under faults, against the real processes (`tracker-jobs admin` and `tracker-jobs worker`),
set up through the HTTP API as a user would: a user and a token, vans with a speed limit, a Depot
geofence linked to them, webhook notifications of geofenceEnter and deviceOverspeed and a mail one of
geofenceExit; positions by the batch API along a trace that says exactly which events must happen.

- kill -9 the worker again and again while the positions stream in: every expected event stored once,
  every delivery sent; at the receivers each delivery id arrives, and only a delivery in flight at a
  kill arrives more than once (a kill between each copy and the next), each copy with the same delivery
  id, event, position, geofence and notification, signed over its own bytes. (The copies' `device` is
  the device as of each try: its lastUpdate, positionId and totalDistance move on between them, so the
  bodies, and with them the signatures, are not byte for byte the same.)
- the webhook receiver and the SMTP server down (20 s here; the issue's two minutes with
  TRACKER_TEST_NOTIFY_OUTAGE_S=120): everything is delivered once they are back on the same ports,
  the failed tries counted and their error shown meanwhile.
- a receiver answering 410: dead after one try, and not tried again.

A delivery whose sender is killed after claiming it stays leased for LEASE_S (75 s,
notifications/outbox_state.py) and is then found by the sweep (the cron, at seconds 15 and 45): the
kill test therefore waits up to LEASE_S + a sweep period after its last kill (its kills all land while
the positions stream in, so that wait starts as early as it can).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis

from tests.support.processes import engine_env, running, tracker_jobs_command
from tests.support.receivers import Hook, smtp_server, webhook_receiver
from tests.support.services import ADMIN_TOKEN
from tracker_jobs.core.db import create_engine
from tracker_jobs.embedded import free_port
from tracker_jobs.notifications.outbox_state import LEASE_S

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OUTAGE_S = float(os.environ.get("TRACKER_TEST_NOTIFY_OUTAGE_S", "20"))
SWEEP_PERIOD_S = 30.0  # sweep_deliveries runs at seconds 15 and 45 (worker.py CRON_TABLE)
BACKOFF_S = 0.5  # TRACKER_DELIVERY_BACKOFF: the first retry's wait

# The trace: every van sends a fix every STEP_S seconds (fix time), in for 4 fixes then out for 4, and over
# its limit for 3 fixes out of every 9 (separate episodes, each one deviceOverspeed).
LAT, LON, RADIUS_M = 50.0, 8.0, 200
OUTSIDE_LON = LON + 0.006  # about 430 m east of the centre
LIMIT_KN, SLOW_KN, FAST_KN = 50.0, 20.0, 80.0
STEP_S = 10
ENTER_SECRET, OVERSPEED_SECRET = "enter-secret", "overspeed-secret"
TYPES = ("geofenceEnter", "geofenceExit", "deviceOverspeed")


def inside(step: int) -> bool:
    return (step // 4) % 2 == 1


def over(step: int) -> bool:
    return (step // 3) % 3 == 2


def fix(device: int, step: int, base: int) -> dict[str, Any]:
    return {
        "deviceId": device,
        "fixTime": base + step * STEP_S,
        "latitude": LAT + step * 1e-6,
        "longitude": LON if inside(step) else OUTSIDE_LON,
        "speed": FAST_KN if over(step) else SLOW_KN,
    }


def expected_events(devices: Sequence[int], steps: range, base: int) -> Counter[tuple[int, str, int]]:
    """(device, type, fix time) of every event the trace makes, by Traccar's rules (the first fix is outside
    and slow: it makes none)."""
    found: Counter[tuple[int, str, int]] = Counter()
    for device in devices:
        for step in steps:
            if step == 0:
                continue
            when = base + step * STEP_S
            if inside(step) and not inside(step - 1):
                found[(device, "geofenceEnter", when)] += 1
            if inside(step - 1) and not inside(step):
                found[(device, "geofenceExit", when)] += 1
            if over(step) and not over(step - 1):
                found[(device, "deviceOverspeed", when)] += 1
    return found


@dataclass
class Engine:
    """The admin app (running for the test) and the worker processes the test starts and kills."""

    admin: str
    env: dict[str, str]
    directory: Path
    database_url: str
    log: IO[str]
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            tracker_jobs_command("worker", "--queues", "positions,notifications"),
            cwd=self.directory,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: subprocess.Popen[str]) -> None:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    def worker_log(self) -> str:
        return (self.directory / "workers.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def engine(
    tmp_path: Path, clean_postgres_url: str, redis_url: str, redis: ArqRedis, smtp_port: int
) -> Iterator[Engine]:
    env = engine_env(
        TRACKER_DATABASE_URL=clean_postgres_url,
        TRACKER_REDIS_URL=redis_url,
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
        TRACKER_WEBHOOK_ALLOW_PRIVATE="true",
        TRACKER_WEBHOOK_TIMEOUT="5",
        TRACKER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        TRACKER_MAIL_FROM="tracker@fleet.test",
        TRACKER_DELIVERY_BACKOFF=str(BACKOFF_S),
        TRACKER_MAIL_DIGEST="0",
        TRACKER_NOTIFY_MAX_AGE="86400",  # the traces' fix times are up to an hour old
        TRACKER_POSITION_BATCH_SIZE="200",
    )
    with ExitStack() as stack:
        stack.enter_context(running(tracker_jobs_command("admin"), tmp_path, env))
        log = stack.enter_context(open(tmp_path / "workers.log", "a"))  # what the workers say, for a post-mortem
        found = Engine(f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}", env, tmp_path, clean_postgres_url, log)
        try:
            yield found
        finally:
            for worker in found.workers:
                if worker.poll() is None:
                    worker.terminate()
                    try:
                        worker.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait()


# --- the API, as a user drives it -------------------------------------------------------------------------


async def call(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any = None, status: int = 200
) -> Any:
    async with http.request(method, url, json=body, headers=headers) as response:
        text = await response.text()
        assert response.status == status, f"{method} {url}: {response.status} {text}"
        return orjson.loads(text) if text else None


async def poll(probe: Callable[[], Awaitable[Any]], seconds: float, what: str, every_s: float = 0.5) -> Any:
    """Call `probe` until it answers something truthy; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
        except aiohttp.ClientError as error:
            last = error
        else:
            if last:
                return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what} (last: {last!r})")


@dataclass
class Fleet:
    user: dict[str, str]  # the user's request headers
    devices: list[int]
    notifications: dict[str, int]  # enter, overspeed, exit (mail) -> id
    secrets: dict[int, str]  # webhook notification id -> its secret


async def make_fleet(http: aiohttp.ClientSession, admin: str, vans: int, hook_url: str, *, mail: bool) -> Fleet:
    """A user (by the admin) with a token; the user's vans, their Depot and notifications: geofenceEnter and
    deviceOverspeed by webhook for every van, geofenceExit by mail for the first van only."""
    await poll(lambda: _healthy(http, admin), 20, "the admin app", every_s=0.1)
    user = await call(
        http, "POST", f"{admin}/api/users", ADMIN, {"email": "ops@fleet.test", "password": "a long passphrase"}, 201
    )
    token = await call(http, "POST", f"{admin}/api/users/{user['id']}/tokens", ADMIN, {"name": "faults"}, 201)
    headers = {"Authorization": f"Bearer {token['token']}"}
    devices = [
        (
            await call(
                http, "POST", f"{admin}/api/devices", headers, {"uniqueId": f"van-{i}", "speedLimit": LIMIT_KN}, 201
            )
        )["id"]
        for i in range(vans)
    ]
    depot = await call(
        http,
        "POST",
        f"{admin}/api/geofences",
        headers,
        {"name": "Depot", "area": f"CIRCLE ({LAT} {LON}, {RADIUS_M})"},
        201,
    )
    for device in devices:
        await call(
            http, "POST", f"{admin}/api/permissions", headers, {"deviceId": device, "geofenceId": depot["id"]}, 204
        )
    notifications: dict[str, int] = {}
    secrets: dict[int, str] = {}
    for name, kind, secret in (
        ("enter", "geofenceEnter", ENTER_SECRET),
        ("overspeed", "deviceOverspeed", OVERSPEED_SECRET),
    ):
        attributes = {"webhookUrl": hook_url, "webhookSecret": secret}
        body = {"type": kind, "always": True, "notificators": "webhook", "attributes": attributes}
        created = await call(http, "POST", f"{admin}/api/notifications", headers, body, 201)
        notifications[name] = created["id"]
        secrets[created["id"]] = secret
    if mail:
        body = {"type": "geofenceExit", "always": False, "notificators": "mail"}
        notifications["exit"] = (await call(http, "POST", f"{admin}/api/notifications", headers, body, 201))["id"]
        link = {"deviceId": devices[0], "notificationId": notifications["exit"]}
        await call(http, "POST", f"{admin}/api/permissions", headers, link, 204)
    return Fleet(headers, devices, notifications, secrets)


async def _healthy(http: aiohttp.ClientSession, admin: str) -> bool:
    async with http.get(f"{admin}/health") as response:
        return response.status == 200


async def send_steps(http: aiohttp.ClientSession, admin: str, fleet: Fleet, steps: range, base: int) -> None:
    body = [fix(device, step, base) for device in fleet.devices for step in steps]
    answer = await call(http, "POST", f"{admin}/api/positions", fleet.user, body, 202)
    assert answer["accepted"] == len(body), answer


async def unsettled(http: aiohttp.ClientSession, admin: str, fleet: Fleet) -> list[dict[str, Any]]:
    """The user's deliveries still pending or failed (the deliveries API)."""
    found: list[dict[str, Any]] = []
    for state in ("pending", "failed"):
        url = f"{admin}/api/notifications/deliveries?state={state}&limit=1000"
        found += await call(http, "GET", url, fleet.user)
    return found


async def wait_until_settled(http: aiohttp.ClientSession, admin: str, fleet: Fleet, seconds: float) -> None:
    async def settled() -> bool:
        return not await unsettled(http, admin, fleet)

    await poll(settled, seconds, "no pending or failed delivery")


# --- the database, read directly --------------------------------------------------------------------------


async def rows(database_url: str, query: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(sa.text(query))).all())
    finally:
        await engine.dispose()


async def stored_events(database_url: str) -> list[tuple[int, int, str, int]]:
    """(id, device, type, fix time) of the stored events of the three notified types."""
    found = await rows(
        database_url,
        "SELECT id, device_id, type, event_time FROM events WHERE type IN ('geofenceEnter', 'geofenceExit', 'deviceOverspeed')",
    )
    return [(event_id, device, kind, round(when.timestamp())) for event_id, device, kind, when in found]


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    event_id: int | None
    notification_id: int | None
    channel: str
    state: str
    attempts: int
    last_error: str | None


async def stored_deliveries(database_url: str) -> list[DeliveryRow]:
    found = await rows(
        database_url,
        "SELECT id, event_id, notification_id, channel, state, attempts, last_error FROM deliveries ORDER BY id",
    )
    return [DeliveryRow(*row) for row in found]


# --- what the receivers got -------------------------------------------------------------------------------


def hooks_by_delivery(received: Sequence[Hook]) -> dict[str, list[Hook]]:
    found: dict[str, list[Hook]] = defaultdict(list)
    for hook in received:
        found[hook.headers["X-Tracker-Delivery"]].append(hook)
    return found


def check_signature(hook: Hook, secrets: dict[int, str]) -> None:
    """The copy is signed with its notification's secret, over the exact bytes received."""
    notification = orjson.loads(hook.body)["notification"]["id"]
    expected = "sha256=" + hmac.new(secrets[notification].encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Tracker-Signature"], expected)


def differing(bodies: Sequence[dict[str, Any]], prefix: str = "") -> set[str]:
    """The paths ("device.lastUpdate") at which the copies of one body differ."""
    found: set[str] = set()
    for key in sorted({key for body in bodies for key in body}):
        values = [body.get(key) for body in bodies]
        nested = [value for value in values if isinstance(value, dict)]
        if len(nested) == len(values):
            found |= differing(nested, f"{prefix}{key}.")
        elif len({orjson.dumps(value, option=orjson.OPT_SORT_KEYS) for value in values}) > 1:
            found.add(prefix + key)
    return found


def message_keys(message: EmailMessage) -> list[str]:
    """The delivery keys ("d12") a message carries: X-Tracker-Deliveries names them all; its Message-ID
    (`<d12-d13@tracker-jobs>`) names the first eight, then how many there are (`-nN`)."""
    message_id = str(message["Message-ID"])
    assert message_id.startswith("<"), message_id
    assert message_id.endswith("@tracker-jobs>"), message_id
    keys = str(message["X-Tracker-Deliveries"]).split()
    named = message_id[1:].removesuffix("@tracker-jobs>").split("-")
    expected = keys[:8] + ([f"n{len(keys)}"] if len(keys) > 8 else [])
    assert named == expected, f"{message_id} does not match its deliveries {keys}"
    assert all(key.startswith("d") for key in keys), keys
    return keys


def mailed_keys(messages: Sequence[EmailMessage]) -> Counter[str]:
    """How often each delivery key came by mail."""
    return Counter(key for message in messages for key in message_keys(message))


# --- the tests --------------------------------------------------------------------------------------------

KILL_VANS = 20
KILL_ROUNDS = 50  # one request per round: every van's next STEPS_PER_ROUND fixes
STEPS_PER_ROUND = 4
ROUND_PAUSE_S = 0.5
KILL_EVERY_S = 4.0


@pytest.mark.timeout(LEASE_S + 240)
async def test_kill_9_the_worker_while_events_are_notified(engine: Engine, smtp_port: int) -> None:
    started = time.monotonic()
    base = int(time.time()) - 3600  # fix times within the last hour: recent enough to be notified
    steps = range(KILL_ROUNDS * STEPS_PER_ROUND)
    kills: list[float] = []
    with smtp_server(smtp_port) as inbox:
        # A receiver that answers after a little while: a kill finds webhooks in flight.
        async with webhook_receiver(delay_s=0.2) as hook, aiohttp.ClientSession() as http:
            fleet = await make_fleet(http, engine.admin, KILL_VANS, hook.url, mail=True)
            worker = engine.start_worker()
            next_kill = time.monotonic() + KILL_EVERY_S
            for round_ in range(KILL_ROUNDS):
                first = round_ * STEPS_PER_ROUND
                await send_steps(http, engine.admin, fleet, range(first, first + STEPS_PER_ROUND), base)
                if time.monotonic() >= next_kill and round_ < KILL_ROUNDS - 3:  # the kills land during ingestion
                    # Once a webhook of this round is held at the receiver (if one comes within 3 s): the
                    # kill then cuts a delivery off mid-try, which is what the repeats below are about.
                    await hook.wait_answering(3.0)
                    engine.kill_worker(worker)
                    kills.append(time.monotonic())
                    worker = engine.start_worker()
                    next_kill = time.monotonic() + KILL_EVERY_S
                await asyncio.sleep(ROUND_PAUSE_S)
            streamed = time.monotonic()
            assert len(kills) >= 5

            expected = expected_events(fleet.devices, steps, base)

            async def all_events_stored() -> bool:
                return len(await stored_events(engine.database_url)) >= sum(expected.values())

            await poll(all_events_stored, 120, f"{sum(expected.values())} events")
            # A delivery claimed by a killed worker waits out its lease, then the next sweep sends it.
            await wait_until_settled(http, engine.admin, fleet, LEASE_S + SWEEP_PERIOD_S + 30)
            settled = time.monotonic()
            await asyncio.sleep(2.0)  # a late copy would arrive now
            received = list(hook.received)
        mail = list(zip(inbox.messages, inbox.arrived, strict=True))

    # Every expected event stored, each once, and no other of these types.
    events = await stored_events(engine.database_url)
    assert Counter((device, kind, when) for _, device, kind, when in events) == expected
    event_types = {event_id: (device, kind) for event_id, device, kind, _ in events}

    # Every event owes exactly its deliveries, and every one of them was sent.
    deliveries = await stored_deliveries(engine.database_url)

    def owed_by(device: int, kind: str) -> tuple[str, int] | None:
        if kind == "geofenceEnter":
            return ("webhook", fleet.notifications["enter"])
        if kind == "deviceOverspeed":
            return ("webhook", fleet.notifications["overspeed"])
        return ("mail", fleet.notifications["exit"]) if device == fleet.devices[0] else None

    owed = {(event_id, *what) for event_id, (device, kind) in event_types.items() if (what := owed_by(device, kind))}
    assert Counter((d.event_id, d.channel, d.notification_id) for d in deliveries) == Counter(owed)
    assert [d for d in deliveries if d.state != "sent"] == []

    # At the receivers: every delivery's id, and a copy twice only when its sender was killed mid-try.
    webhooks = {f"d{d.id}": d for d in deliveries if d.channel == "webhook"}
    copies = hooks_by_delivery(received)
    assert set(copies) == set(webhooks)
    repeated = {key: hooks for key, hooks in copies.items() if len(hooks) > 1}
    for key, hooks in copies.items():
        for hook_copy in hooks:
            check_signature(hook_copy, fleet.secrets)
            assert orjson.loads(hook_copy.body)["deliveryId"] == key
        assert webhooks[key].attempts >= len(hooks)
    for key, hooks in repeated.items():
        bodies = [orjson.loads(h.body) for h in hooks]
        # The same delivery says the same thing each time: the event, where it happened, the notification.
        for part in ("event", "position", "notification", "geofence"):
            assert len({orjson.dumps(b.get(part), option=orjson.OPT_SORT_KEYS) for b in bodies}) == 1, (key, part)
        # Each copy but the last was cut off by a kill: a kill came after it and before the next copy.
        for earlier, later in pairwise(hooks):
            assert any(earlier.at <= kill <= later.at for kill in kills), (key, earlier.at, later.at, kills)
    mails = {f"d{d.id}": d for d in deliveries if d.channel == "mail"}
    mailed: dict[str, list[float]] = defaultdict(list)  # delivery key -> when each message naming it came
    for message, at in mail:
        for mail_key in message_keys(message):
            mailed[mail_key].append(at)
    assert set(mailed) == set(mails)
    for mail_key, times in mailed.items():
        assert mails[mail_key].attempts >= len(times)
        for earlier_at, later_at in pairwise(times):
            assert any(earlier_at <= kill <= later_at for kill in kills), (mail_key, times, kills)

    assert repeated, "no kill caught a webhook in flight: the test proved nothing about repeats"
    changed = sorted({path for hooks in repeated.values() for path in differing([orjson.loads(h.body) for h in hooks])})
    print(
        f"\nkill test: {len(kills)} kills, {len(events)} events, {len(deliveries)} deliveries"
        f" ({len(webhooks)} webhooks, {len(mails)} mail); received twice or more: {len(repeated)} webhooks"
        f" (their bodies differ only in {changed}), {sum(1 for times in mailed.values() if len(times) > 1)} mail;"
        f" deliveries tried more than once: {sum(1 for d in deliveries if d.attempts > 1)};"
        f" streamed {streamed - started:.0f} s, all sent {settled - kills[-1]:.0f} s after the last kill,"
        f" {settled - started:.0f} s in all"
    )


OUTAGE_VANS = 4


@pytest.mark.timeout(OUTAGE_S * 2 + 150)
async def test_receivers_down_then_back_get_everything(engine: Engine, smtp_port: int) -> None:
    base = int(time.time()) - 3600
    hook_port = free_port()
    received: list[Hook] = []
    messages: list[EmailMessage] = []
    engine.start_worker()
    async with aiohttp.ClientSession() as http:
        fleet = await make_fleet(http, engine.admin, OUTAGE_VANS, f"http://127.0.0.1:{hook_port}/hook", mail=True)

        # Up: the first events go out at once.
        with smtp_server(smtp_port) as inbox:
            async with webhook_receiver(port=hook_port) as hook:
                await send_steps(http, engine.admin, fleet, range(0, 16), base)
                await poll(
                    lambda: _all_sent(engine.database_url, expected_events(fleet.devices, range(16), base)),
                    60,
                    "the first deliveries sent",
                )
                received += hook.received
            messages += inbox.messages
        before = {d.id for d in await stored_deliveries(engine.database_url)}

        # Down: both receivers away while the vans go on.
        down = time.monotonic()
        for first in range(16, 48, 8):
            await send_steps(http, engine.admin, fleet, range(first, first + 8), base)
            await asyncio.sleep(1.0)

        async def failing() -> list[dict[str, Any]]:
            found = await unsettled(http, engine.admin, fleet)
            failed = [d for d in found if d["state"] == "failed"]
            channels = {d["channel"] for d in failed if d["attempts"] >= 2}
            return failed if channels == {"webhook", "mail"} else []

        failed = await poll(failing, OUTAGE_S, "failed tries of both channels")
        for delivery in failed:
            assert delivery["attempts"] >= 1
            assert delivery["lastError"], delivery
            assert delivery["sentAt"] is None
        webhook_error = next(d["lastError"] for d in failed if d["channel"] == "webhook")
        mail_error = next(d["lastError"] for d in failed if d["channel"] == "mail")
        assert "connect" in webhook_error.lower(), webhook_error
        await asyncio.sleep(max(down + OUTAGE_S - time.monotonic(), 0))
        during = await unsettled(http, engine.admin, fleet)
        assert during, "nothing was waiting for the receivers"

        # Back, on the same ports: everything goes out (the longest backoff reached is about the outage).
        with smtp_server(smtp_port) as inbox:
            async with webhook_receiver(port=hook_port) as hook:
                back = time.monotonic()
                await wait_until_settled(http, engine.admin, fleet, OUTAGE_S + SWEEP_PERIOD_S + 30)
                settled = time.monotonic()
                await asyncio.sleep(1.0)
                received += hook.received
            messages += inbox.messages
        log = await call(http, "GET", f"{engine.admin}/api/notifications/deliveries?limit=1000", fleet.user)

    expected = expected_events(fleet.devices, range(48), base)
    events = await stored_events(engine.database_url)
    assert Counter((device, kind, when) for _, device, kind, when in events) == expected
    deliveries = await stored_deliveries(engine.database_url)
    assert len(log) == len(deliveries)
    assert {entry["state"] for entry in log} == {"sent"}
    assert all(entry["lastError"] is None and entry["sentAt"] for entry in log)
    outage = [entry for entry in log if entry["id"] not in before]
    assert {entry["channel"] for entry in outage} == {"webhook", "mail"}
    assert all(entry["attempts"] > 1 for entry in outage), [(e["id"], e["attempts"]) for e in outage]
    assert all(entry["attempts"] == 1 for entry in log if entry["id"] in before)
    # Each delivery reached its receiver once, none while it was down.
    copies = hooks_by_delivery(received)
    assert {key: len(hooks) for key, hooks in copies.items()} == {
        f"d{d.id}": 1 for d in deliveries if d.channel == "webhook"
    }
    assert all(not down <= hook.at < back for hook in received)
    for hooks in copies.values():
        check_signature(hooks[0], fleet.secrets)
    assert mailed_keys(messages) == Counter({f"d{d.id}": 1 for d in deliveries if d.channel == "mail"})
    print(
        f"\noutage test: down {back - down:.0f} s, {len(outage)} deliveries waited (attempts"
        f" {min(e['attempts'] for e in outage)}..{max(e['attempts'] for e in outage)}), all sent"
        f" {settled - back:.1f} s after the receivers came back; errors: {webhook_error!r}, {mail_error!r}"
    )


async def _all_sent(database_url: str, expected: Counter[tuple[int, str, int]]) -> bool:
    if len(await stored_events(database_url)) < sum(expected.values()):
        return False
    deliveries = await stored_deliveries(database_url)
    return bool(deliveries) and all(d.state == "sent" for d in deliveries)


@pytest.mark.timeout(90)
async def test_a_receiver_answering_410_is_dead_after_one_try(engine: Engine) -> None:
    base = int(time.time()) - 3600
    engine.start_worker()
    async with webhook_receiver(status=410) as gone, aiohttp.ClientSession() as http:
        fleet = await make_fleet(http, engine.admin, 1, gone.url, mail=False)
        await send_steps(http, engine.admin, fleet, range(8), base)  # in at step 4, over the limit at step 6

        async def dead() -> list[dict[str, Any]]:
            url = f"{engine.admin}/api/notifications/deliveries?state=dead"
            found: list[dict[str, Any]] = await call(http, "GET", url, fleet.user)
            return found if len(found) == 2 else []

        await poll(dead, 30, "two dead deliveries")
        # Past several backoff periods (0.5 + 1 + 2 + 4 s): no second try.
        await asyncio.sleep(BACKOFF_S * (1 + 2 + 4 + 8) + 1)
        log = await call(http, "GET", f"{engine.admin}/api/notifications/deliveries", fleet.user)
        received = list(gone.received)
    assert sorted((entry["type"], entry["state"], entry["attempts"]) for entry in log) == [
        ("deviceOverspeed", "dead", 1),
        ("geofenceEnter", "dead", 1),
    ]
    assert all("410" in entry["lastError"] for entry in log)
    assert sorted(hook.headers["X-Tracker-Delivery"] for hook in received) == sorted(f"d{e['id']}" for e in log)
