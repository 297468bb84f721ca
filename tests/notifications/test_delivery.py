"""Positions in -> event stored -> deliveries written with it -> sent by the real notifications worker:
the webhook received and its signature checked, the mail read from a real SMTP server, the web
notification seen on the recipient's socket (and no one else's); failures retried with backoff, a
410 dead at once, a retry from the API, stale events stored but not notified."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.factories import add_device, make_user
from tests.support.receivers import Inbox, WebhookReceiver, text_of, to_receivers
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.events.models import Delivery, Event
from tracker_jobs.jobs.refs import NOTIFICATIONS, POSITIONS

Client = TestClient[Any, Any]
ANN = {"Authorization": "Bearer ann-token"}
BOB = {"Authorization": "Bearer bob-token"}
SECRET = "hook-secret"


@pytest.fixture
def settings(settings: Settings, smtp_port: int) -> Settings:
    """The suite's settings, pointed at the test's SMTP server and webhook receiver."""
    return to_receivers(settings, smtp_port, public_url="https://fleet.test", delivery_backoff_s=0.2)


async def _fleet(admin_client: Client, sessions: async_sessionmaker[AsyncSession], hook: WebhookReceiver) -> int:
    """Ann's truck, linked to her Depot geofence, and her geofenceEnter notification on all three channels."""
    ann = await make_user(sessions, "ann@fleet.test", token="ann-token")
    await make_user(sessions, "bob@fleet.test", token="bob-token")
    device = await add_device(sessions, "truck-7", owner=ann)
    depot = await (
        await admin_client.post(
            "/api/geofences", json={"name": "Depot", "area": "CIRCLE (52.5 13.4, 200)"}, headers=ANN
        )
    ).json()
    linked = await admin_client.post(
        "/api/permissions", json={"deviceId": device, "geofenceId": depot["id"]}, headers=ANN
    )
    assert linked.status == 204
    created = await admin_client.post(
        "/api/notifications",
        json={
            "type": "geofenceEnter",
            "always": True,
            "notificators": "web,mail,webhook",
            "attributes": {"webhookUrl": hook.url, "webhookSecret": SECRET},
        },
        headers=ANN,
    )
    assert created.status == 201, await created.text()
    shown = await created.json()
    assert shown["attributes"]["webhookSecret"] == "********"  # written, never read back
    return device


async def _drive_in(admin_client: Client, admin_headers: dict[str, str], device: int, start: float) -> None:
    """Outside the depot, then inside it: one geofenceEnter."""
    positions = [
        {"deviceId": device, "fixTime": start, "latitude": 52.52, "longitude": 13.4, "speed": 10},
        {"deviceId": device, "fixTime": start + 30, "latitude": 52.5001, "longitude": 13.4, "speed": 5},
    ]
    response = await admin_client.post("/api/positions", json={"positions": positions}, headers=admin_headers)
    assert response.status == 202, await response.text()


async def _deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[Delivery]:
    async with sessions() as session:
        return list((await session.execute(select(Delivery).order_by(col(Delivery.channel)))).scalars())


async def test_an_event_reaches_every_channel_once(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    hook: WebhookReceiver,
    inbox: Inbox,
) -> None:
    device = await _fleet(admin_client, sessions, hook)
    async with (
        admin_client.ws_connect("/api/socket", headers=ANN) as ann_ws,
        admin_client.ws_connect("/api/socket", headers=BOB) as bob_ws,
    ):
        await _drive_in(admin_client, admin_headers, device, time.time() - 60)
        await run_burst(settings, POSITIONS)
        async with sessions() as session:
            events = list((await session.execute(select(Event).where(col(Event.type) == "geofenceEnter"))).scalars())
        assert len(events) == 1
        assert [(d.channel, d.state) for d in await _deliveries(sessions)] == [
            ("mail", "pending"),
            ("web", "pending"),
            ("webhook", "pending"),
        ]
        await run_burst(settings, NOTIFICATIONS)

        message = await _next_event_message(ann_ws)
        assert [(e["type"], e["deviceId"], e["id"]) for e in message["events"]] == [
            ("geofenceEnter", device, events[0].id)
        ]
        with pytest.raises(TimeoutError):
            await _next_event_message(bob_ws, timeout_s=0.5)

    deliveries = await _deliveries(sessions)
    assert [(d.channel, d.state, d.attempts) for d in deliveries] == [
        ("mail", "sent", 1),
        ("web", "sent", 1),
        ("webhook", "sent", 1),
    ]
    [received] = hook.received
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Tracker-Signature"], expected)
    webhook = next(d for d in deliveries if d.channel == "webhook")
    assert received.headers["X-Tracker-Delivery"] == f"d{webhook.id}"
    body = orjson.loads(received.body)
    assert (body["event"]["type"], body["device"]["uniqueId"], body["geofence"]["name"]) == (
        "geofenceEnter",
        "truck-7",
        "Depot",
    )
    assert body["position"]["latitude"] == pytest.approx(52.5001)
    assert "webhookSecret" not in orjson.dumps(body).decode()

    [mail] = inbox.messages
    assert mail["To"] == "ann@fleet.test"
    assert "Depot" in mail["Subject"]
    mail_delivery = next(d for d in deliveries if d.channel == "mail")
    assert mail["Message-ID"] == f"<d{mail_delivery.id}@tracker-jobs>"
    assert f"https://fleet.test/?deviceId={device}" in text_of(mail)

    recent = await (await admin_client.get("/api/notifications/recent", headers=ANN)).json()
    assert [item["type"] for item in recent] == ["geofenceEnter"]
    assert await (await admin_client.get("/api/notifications/recent", headers=BOB)).json() == []
    log = await (await admin_client.get("/api/notifications/deliveries", headers=ANN)).json()
    assert sorted(entry["state"] for entry in log) == ["sent", "sent", "sent"]
    assert await (await admin_client.get("/api/notifications/deliveries", headers=BOB)).json() == []

    # The same batch again (a drain re-run after a crash) adds no event and no delivery.
    await _drive_in(admin_client, admin_headers, device, time.time() - 60 - 0)
    await run_burst(settings, POSITIONS)
    await run_burst(settings, NOTIFICATIONS)
    assert len(hook.received) == 1
    assert len(inbox.messages) == 1


async def _next_event_message(ws: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    """The next message carrying events (positions and device changes come on the same socket)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        message = orjson.loads((await asyncio.wait_for(ws.receive(), left)).data)
        if "events" in message:
            return dict(message)


async def test_a_failing_receiver_is_tried_again_and_a_gone_one_is_dead(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    hook: WebhookReceiver,
    inbox: Inbox,
) -> None:
    device = await _fleet(admin_client, sessions, hook)
    hook.status = 503
    now = time.time()
    await _drive_in(admin_client, admin_headers, device, now - 120)
    await run_burst(settings, POSITIONS)
    worker = asyncio.create_task(run_burst(settings, NOTIFICATIONS))  # runs the retries as they come due
    await _until(lambda: len(hook.received) >= 3)
    hook.status = 200
    await worker
    webhook = next(d for d in await _deliveries(sessions) if d.channel == "webhook")
    assert (webhook.state, webhook.last_error) == ("sent", None)
    assert webhook.attempts == len(hook.received) >= 4
    assert {h.headers["X-Tracker-Delivery"] for h in hook.received} == {f"d{webhook.id}"}  # one id for every try

    # A receiver that is gone for good: dead after one try, and not tried again.
    hook.status = 410
    hook.received.clear()
    await _drive_in(admin_client, admin_headers, device, now - 60)  # out and in again: a new event
    await run_burst(settings, POSITIONS)
    await run_burst(settings, NOTIFICATIONS)
    dead = [d for d in await _deliveries(sessions) if d.channel == "webhook" and d.state == "dead"]
    assert len(dead) == 1
    assert dead[0].attempts == 1
    assert "410" in (dead[0].last_error or "")
    assert len(hook.received) == 1

    # Retried by hand once the receiver is back: sent.
    hook.status = 200
    listed = await admin_client.get("/api/notifications/deliveries", params={"state": "dead"}, headers=ANN)
    assert [entry["id"] for entry in await listed.json()] == [dead[0].id]
    assert (await admin_client.post(f"/api/notifications/deliveries/{dead[0].id}/retry", headers=BOB)).status == 404
    retried = await admin_client.post(f"/api/notifications/deliveries/{dead[0].id}/retry", headers=ANN)
    assert retried.status == 202
    await run_burst(settings, NOTIFICATIONS)
    async with sessions() as session:
        again = await session.get(Delivery, dead[0].id)
    assert again is not None
    assert again.state == "sent"
    again_twice = await admin_client.post(f"/api/notifications/deliveries/{dead[0].id}/retry", headers=ANN)
    assert again_twice.status == 409


async def test_a_stale_event_is_stored_but_notified_to_nobody(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    hook: WebhookReceiver,
) -> None:
    device = await _fleet(admin_client, sessions, hook)
    await _drive_in(admin_client, admin_headers, device, time.time() - settings.notify_max_age_s - 120)
    await run_burst(settings, POSITIONS)
    async with sessions() as session:
        assert (
            len(list((await session.execute(select(Event).where(col(Event.type) == "geofenceEnter"))).scalars())) == 1
        )
    assert await _deliveries(sessions) == []


async def test_mail_within_the_digest_window_goes_out_as_one_message(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    hook: WebhookReceiver,
    inbox: Inbox,
) -> None:
    settings = replace(settings, mail_digest_s=2)
    device = await _fleet(admin_client, sessions, hook)
    now = time.time()
    await _drive_in(admin_client, admin_headers, device, now - 300)
    await run_burst(settings, POSITIONS)
    await run_burst(settings, NOTIFICATIONS)
    assert len(inbox.messages) == 1  # the first goes at once, and opens the window
    for start in (now - 200, now - 100):  # two more, each its own batch and its own job
        await _drive_in(admin_client, admin_headers, device, start)
        await run_burst(settings, POSITIONS)
    await run_burst(settings, NOTIFICATIONS)  # holds both until the window ends, then sends them as one
    first, digest = inbox.messages
    assert "Depot" in first["Subject"]
    assert digest["Subject"].startswith("2 events")
    mail = [d for d in await _deliveries(sessions) if d.channel == "mail"]
    assert [(d.state, d.attempts) for d in mail] == [("sent", 1)] * 3


async def _until(probe: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
