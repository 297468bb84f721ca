"""Daily summaries: yesterday (in the user's zone) per device, from the report engine, sent by the real
notifications worker as an HTML table by mail, JSON by webhook and a web notification; once per user and
date however often (or however concurrently) the job runs; the hourly fan-out picks the users whose
local hour it is."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.factories import add_device, make_user
from tests.support.fleet import add_event, store_trace
from tests.support.receivers import Inbox, WebhookReceiver, to_receivers
from tests.support.traces import Trace
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.events.models import Delivery, Notification, UserNotification
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import NOTIFICATIONS, SEND_DAILY_SUMMARIES, SEND_DAILY_SUMMARY
from tracker_jobs.notifications.summaries import daily_summary, due_users
from tracker_jobs.reports.daily import yesterday
from tracker_jobs.users.models import User

Client = TestClient[Any, Any]
ANN = {"Authorization": "Bearer ann-token"}
ZONE = "Pacific/Auckland"  # far from UTC: Ann's yesterday is not the server's


@pytest.fixture
def settings(settings: Settings, smtp_port: int) -> Settings:
    """The suite's settings, pointed at the test's SMTP server and webhook receiver."""
    return to_receivers(settings, smtp_port)


async def _set_zone(sessions: async_sessionmaker[AsyncSession], user_id: int, zone: str | None) -> None:
    async with transaction(sessions) as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.attributes = {} if zone is None else {"timezone": zone}


async def _subscribe(admin_client: Client, headers: dict[str, str], hook: WebhookReceiver) -> None:
    created = await admin_client.post(
        "/api/notifications",
        json={
            "type": "dailySummary",
            "always": True,
            "notificators": "web,mail,webhook",
            "attributes": {"webhookUrl": hook.url},
        },
        headers=headers,
    )
    assert created.status == 201, await created.text()


async def _ann_with_a_trip_yesterday(
    admin_client: Client, sessions: async_sessionmaker[AsyncSession], hook: WebhookReceiver
) -> tuple[int, str, Trace, dict[str, Any]]:
    """Ann (in ZONE), her truck driving once on her yesterday, three events then, and her dailySummary
    notification on every channel; her local yesterday, the trace and the trip it makes."""
    ann = await make_user(sessions, "ann@fleet.test", token="ann-token")
    await _set_zone(sessions, ann, ZONE)
    truck = await add_device(sessions, "truck-7", owner=ann)
    day, start, _ = yesterday(datetime.now(UTC), ZONE)
    trace = Trace(start + timedelta(hours=9))
    home = trace.park(20)
    road = trace.drive(12, step_m=450)
    trace.park(30)
    await store_trace(sessions, truck, trace)
    for minutes, kind in ((12, "deviceOverspeed"), (14, "deviceOverspeed"), (16, "geofenceEnter")):
        await add_event(sessions, truck, kind, trace.start + timedelta(minutes=minutes))
    await add_event(sessions, truck, "deviceOverspeed", start - timedelta(minutes=1))  # the day before: not counted
    await _subscribe(admin_client, ANN, hook)
    return ann, day, trace, trace.expected_trip(home[-1], road[-1], truck, "truck-7")


def _html_rows(message: Any) -> list[list[str]]:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    html = str(part.get_content())
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    return [[cell.strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)] for row in rows]


async def _summary_deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[Delivery]:
    async with sessions() as session:
        query = select(Delivery).where(col(Delivery.event_type) == "dailySummary").order_by(col(Delivery.channel))
        return list((await session.execute(query)).scalars())


async def test_the_summary_reaches_every_channel_once(
    admin_client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
    hook: WebhookReceiver,
    inbox: Inbox,
) -> None:
    ann, day, trace, trip = await _ann_with_a_trip_yesterday(admin_client, sessions, hook)
    distance = trace.road_m(0, len(trace.fixes) - 1)

    # Two jobs at once (a tick run twice, or by hand meanwhile): one summary.
    await enqueue(redis, SEND_DAILY_SUMMARY, recipient_id=ann)
    await enqueue(redis, SEND_DAILY_SUMMARY, recipient_id=ann)
    await run_burst(settings, NOTIFICATIONS)

    assert [(d.channel, d.state, d.user_id) for d in await _summary_deliveries(sessions)] == [
        ("mail", "sent", ann),
        ("web", "sent", ann),
        ("webhook", "sent", ann),
    ]
    [mail] = inbox.messages
    assert mail["To"] == "ann@fleet.test"
    assert mail["Subject"] == f"Daily summary for {day}: 1 device"
    assert _html_rows(mail) == [
        ["Device", "Distance", "Driving time", "Max speed", "Trips", "Events"],
        [
            "truck-7",
            f"{distance / 1000:.1f} km",
            f"{trip['duration'] // 60_000 // 60}:{trip['duration'] // 60_000 % 60:02d}",
            f"{trip['maxSpeed'] * 1.852:.0f} km/h",
            "1",
            "overspeed 2<br>geofence entered 1",
        ],
    ]

    [received] = hook.received
    body = orjson.loads(received.body)
    assert (body["event"]["type"], body["device"], body["position"]) == ("dailySummary", None, None)
    summary = body["event"]["attributes"]
    assert summary["date"] == day
    [truck] = summary["devices"]
    assert truck["name"] == "truck-7"
    assert truck["distance"] == pytest.approx(distance, abs=0.1)
    assert truck["drivingTime"] == trip["duration"] // 1000
    assert truck["maxSpeed"] == pytest.approx(trip["maxSpeed"])
    assert truck["trips"] == 1
    assert truck["events"] == {"deviceOverspeed": 2, "geofenceEnter": 1}

    recent = await (await admin_client.get("/api/notifications/recent", headers=ANN)).json()
    assert [(item["type"], item["attributes"]["date"]) for item in recent] == [("dailySummary", day)]

    # Run again later the same day: nothing more is written or sent.
    await enqueue(redis, SEND_DAILY_SUMMARY, recipient_id=ann)
    await run_burst(settings, NOTIFICATIONS)
    assert len(await _summary_deliveries(sessions)) == 3
    assert len(inbox.messages) == 1
    assert len(hook.received) == 1


async def test_concurrent_runs_write_one_summary(
    admin_client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    hook: WebhookReceiver,
) -> None:
    ann, day, _, _ = await _ann_with_a_trip_yesterday(admin_client, sessions, hook)
    now = datetime.now(UTC)
    runs = await asyncio.gather(*(daily_summary(sessions, settings, ann, now) for _ in range(6)))
    assert sorted(run.written for run in runs) == [False] * 5 + [True]
    assert {run.day for run in runs} == {day}
    written = await _summary_deliveries(sessions)
    assert len(written) == 3
    assert all(set(run.deliveries) == {d.id for d in written} for run in runs)  # each may send them


async def test_the_hourly_fan_out_sends_to_users_at_their_hour(
    admin_client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
    hook: WebhookReceiver,
    inbox: Inbox,
) -> None:
    ann, day, _, _ = await _ann_with_a_trip_yesterday(admin_client, sessions, hook)
    local = datetime.now(ZoneInfo(ZONE))
    if (local.minute, local.second) >= (59, 50):  # not across the hour, whose change would make nobody due
        await asyncio.sleep(11)
    hour = datetime.now(ZoneInfo(ZONE)).hour
    settings = replace(settings, daily_summary_hour=hour)
    await enqueue(redis, SEND_DAILY_SUMMARIES)
    await run_burst(settings, NOTIFICATIONS)  # the fan-out, then the summary it enqueued
    [mail] = inbox.messages
    assert mail["Subject"] == f"Daily summary for {day}: 1 device"
    await enqueue(redis, SEND_DAILY_SUMMARIES)
    await run_burst(settings, NOTIFICATIONS)
    assert len(inbox.messages) == 1
    # At another hour, nobody is due.
    other = replace(settings, daily_summary_hour=(hour + 1) % 24)
    async with sessions() as session:
        assert await due_users(session, other, datetime.now(UTC)) == []
        assert await due_users(session, settings, datetime.now(UTC)) == [(ann, day)]


async def test_who_is_due_follows_each_users_zone(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    berlin = await make_user(sessions, "berlin@fleet.test", token="berlin-token")
    utc = await make_user(sessions, "utc@fleet.test", token="utc-token")
    unknown = await make_user(sessions, "unknown@fleet.test", token="unknown-token")
    disabled = await make_user(sessions, "disabled@fleet.test", token="disabled-token")
    await make_user(sessions, "none@fleet.test", token="none-token")  # no dailySummary notification
    await _set_zone(sessions, berlin, "Europe/Berlin")
    await _set_zone(sessions, unknown, "Mars/Olympus_Mons")  # unknown: TRACKER_TIMEZONE (UTC here)
    await _set_zone(sessions, disabled, "Europe/Berlin")
    async with transaction(sessions) as session:
        user = await session.get(User, disabled)
        assert user is not None
        user.disabled = True
    async with transaction(sessions) as session:
        notification = Notification(type="dailySummary", always=True, notificators="web")
        session.add(notification)
        await session.flush()
        assert notification.id is not None
        for user_id in (berlin, utc, unknown, disabled):
            session.add(UserNotification(user_id=user_id, notification_id=notification.id))

    seven = replace(settings, daily_summary_hour=7)
    async with sessions() as session:
        # 06:05 UTC on 2 March is 07:05 in Berlin (CET): Berlin's users are due, for 1 March.
        assert await due_users(session, seven, datetime(2026, 3, 2, 6, 5, tzinfo=UTC)) == [(berlin, "2026-03-01")]
        # 07:05 UTC: the users in UTC (and the unknown zone's) are due.
        assert await due_users(session, seven, datetime(2026, 3, 2, 7, 5, tzinfo=UTC)) == [
            (utc, "2026-03-01"),
            (unknown, "2026-03-01"),
        ]
        # Summer time: 05:05 UTC on 2 July is 07:05 in Berlin (CEST).
        assert await due_users(session, seven, datetime(2026, 7, 2, 5, 5, tzinfo=UTC)) == [(berlin, "2026-07-01")]


async def test_a_summary_not_always_covers_the_devices_linked_to_it(
    admin_client: Client, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ann = await make_user(sessions, "ann@fleet.test", token="ann-token")
    truck = await add_device(sessions, "truck-1", owner=ann)
    await add_device(sessions, "truck-2", owner=ann)
    created = await admin_client.post(
        "/api/notifications", json={"type": "dailySummary", "notificators": "web"}, headers=ANN
    )
    assert created.status == 201
    notification = (await created.json())["id"]
    now = datetime.now(UTC)
    # Linked to no device: nothing to summarise.
    assert (await daily_summary(sessions, settings, ann, now)).skipped == "no devices"
    link = {"deviceId": truck, "notificationId": notification}
    assert (await admin_client.post("/api/permissions", json=link, headers=ANN)).status == 204
    summary = await daily_summary(sessions, settings, ann, now)
    assert summary.written
    [delivery] = await _summary_deliveries(sessions)
    assert [device["name"] for device in delivery.content["attributes"]["devices"]] == ["truck-1"]
