"""System alerts: each kind opens on its facts and resolves without them (`evaluate`); a change is
reported once however often (or however concurrently) it is checked; and end to end, the check job run
by the real notifications worker lists the alert in /health and tells an admin's systemAlert webhook
"opened" once and "resolved" once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.events.models import Delivery
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import CHECK_SYSTEM_ALERTS, NOTIFICATIONS, SEND_SYSTEM_ALERT
from tracker_jobs.monitor import alerts
from tracker_jobs.monitor.alerts import ALERTS_KEY, Alert, Facts, Thresholds, evaluate, record_alerts
from tracker_jobs.positions.stream import SET_ASIDE_KEY

Client = TestClient[Any, Any]
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# --- evaluate: each kind opens on its facts, and is gone without them -------------------------------------------------

OPENING: dict[str, Facts] = {
    "workerLost": Facts(lost_workers=["host-a:41"]),
    "queueBacklog": Facts(backlog_ages={"positions": 301.0, "reports": None}, backlog_age_limit_s=300),
    "jobFailures": Facts(job_tries={"process_position_batch": (20, 5)}),
    "positionsSetAside": Facts(set_aside=1),
    "redisMemory": Facts(redis_used_bytes=950 * 2**20, redis_max_bytes=1000 * 2**20),
    "deadDeliveries": Facts(dead_deliveries=101),
}
QUIET: dict[str, Facts] = {
    "workerLost": Facts(lost_workers=[], unserved_queues={}),
    "queueBacklog": Facts(backlog_ages={"positions": 300.0, "reports": None}, backlog_age_limit_s=300),
    "jobFailures": Facts(job_tries={"process_position_batch": (20, 4), "ping": (19, 19)}),  # 20% is not above
    "positionsSetAside": Facts(set_aside=0),
    "redisMemory": Facts(redis_used_bytes=900 * 2**20, redis_max_bytes=1000 * 2**20),
    "deadDeliveries": Facts(dead_deliveries=100),
}


@pytest.mark.parametrize("kind", alerts.KINDS)
def test_each_kind_opens_on_its_facts_and_resolves_without_them(kind: str) -> None:
    opened = evaluate(OPENING[kind])
    assert list(opened) == [kind]
    assert opened[kind].kind == kind
    assert opened[kind].severity in alerts.SEVERITIES
    assert opened[kind].message
    assert evaluate(QUIET[kind]) == {}


def test_the_messages_say_what_is_wrong() -> None:
    assert evaluate(OPENING["queueBacklog"])["queueBacklog"].message == (
        "positions: the oldest waiting job is 301 s old (limit 300 s)"
    )
    assert evaluate(OPENING["jobFailures"])["jobFailures"].message == (
        "process_position_batch: 5 of 20 tries failed (25%) in the last 15 min"
    )
    assert evaluate(OPENING["redisMemory"])["redisMemory"].message == (
        "Redis uses 95% of its maxmemory (950 MiB of 1000 MiB)"
    )
    unserved = evaluate(Facts(unserved_queues={"reports": 3}))["workerLost"]
    assert (unserved.severity, unserved.message) == ("critical", "reports: 3 jobs and no live worker serves the queue")
    assert evaluate(OPENING["workerLost"])["workerLost"].severity == "warning"


def test_redis_without_maxmemory_never_alerts() -> None:
    assert evaluate(Facts(redis_used_bytes=2**40, redis_max_bytes=0)) == {}


def test_thresholds_can_be_given() -> None:
    strict = Thresholds(failure_rate=0.1, failure_min_tries=5, dead_deliveries=2, redis_memory_share=0.5)
    facts = Facts(job_tries={"ping": (5, 1)}, dead_deliveries=3, redis_used_bytes=6, redis_max_bytes=10)
    assert set(evaluate(facts, strict)) == {"jobFailures", "deadDeliveries", "redisMemory"}
    assert evaluate(facts) == {}


# --- recording: once when it opens, once when it resolves -------------------------------------------------------------


async def test_a_change_is_reported_once_however_often_it_is_checked(redis: ArqRedis) -> None:
    backlog = {"queueBacklog": Alert("queueBacklog", "warning", "positions: 400 s")}
    [opened] = await record_alerts(redis, backlog, NOW)
    assert (opened.state, opened.alert.kind, opened.alert.since) == ("opened", "queueBacklog", NOW.isoformat())
    # Still open, and older: no transition; the stored message follows, `since` stays.
    later = {"queueBacklog": Alert("queueBacklog", "warning", "positions: 460 s")}
    assert await record_alerts(redis, later, NOW + timedelta(minutes=1)) == []
    assert await alerts.open_alerts(redis) == [
        {"kind": "queueBacklog", "severity": "warning", "message": "positions: 460 s", "since": NOW.isoformat()}
    ]
    [resolved] = await record_alerts(redis, {}, NOW + timedelta(minutes=5))
    assert (resolved.state, resolved.alert.kind) == ("resolved", "queueBacklog")
    assert resolved.alert.message == "cleared after 5 min (was: positions: 460 s)"
    assert resolved.attributes() == {
        "kind": "queueBacklog",
        "message": "cleared after 5 min (was: positions: 460 s)",
        "severity": "warning",
        "state": "resolved",
    }
    assert await record_alerts(redis, {}, NOW + timedelta(minutes=6)) == []
    assert await alerts.open_alerts(redis) == []


async def test_two_checks_at_once_report_a_change_once(redis: ArqRedis) -> None:
    memory = {"redisMemory": Alert("redisMemory", "critical", "95%")}
    both = await asyncio.gather(*(record_alerts(redis, memory, NOW) for _ in range(10)))
    assert sorted(len(found) for found in both) == [0] * 9 + [1]
    both = await asyncio.gather(*(record_alerts(redis, {}, NOW) for _ in range(10)))
    assert sorted(len(found) for found in both) == [0] * 9 + [1]


async def test_an_unreadable_entry_counts_as_not_open(redis: ArqRedis) -> None:
    await redis.hset(ALERTS_KEY, mapping={"queueBacklog": "not json", "redisMemory": "[1]"})  # type: ignore[misc]
    assert await alerts.open_alerts(redis) == []
    backlog = {"queueBacklog": Alert("queueBacklog", "warning", "positions: 400 s")}
    assert [(t.state, t.alert.kind) for t in await record_alerts(redis, backlog, NOW)] == [("opened", "queueBacklog")]
    assert await record_alerts(redis, backlog, NOW) == []  # the unreadable redisMemory went without a word
    assert [alert["kind"] for alert in await alerts.open_alerts(redis)] == ["queueBacklog"]


# --- end to end: the check job, /health and an admin's webhook ---------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, webhook_allow_private=True, webhook_timeout_s=2.0, mail_digest_s=0)


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as found:
        yield found


async def _dead_deliveries(sessions: async_sessionmaker[AsyncSession], count: int, when: datetime) -> None:
    async with transaction(sessions) as session:
        for _ in range(count):
            session.add(
                Delivery(
                    user_id=1,  # the bootstrap admin
                    channel="webhook",
                    state="dead",
                    event_type="test",
                    event_time=when,
                    created_at=when,
                    next_attempt_at=when,
                    attempts=1,
                    last_error="410 Gone",
                )
            )


def _alert_bodies(hook: WebhookReceiver) -> list[tuple[str, str]]:
    """(kind, state) of each systemAlert the webhook received, in order."""
    bodies = [orjson.loads(received.body) for received in hook.received]
    return [
        (body["event"]["attributes"]["kind"], body["event"]["attributes"]["state"])
        for body in bodies
        if body["event"]["type"] == "systemAlert"
    ]


async def _check(settings: Settings, redis: ArqRedis) -> None:
    await enqueue(redis, CHECK_SYSTEM_ALERTS)
    await run_burst(settings, NOTIFICATIONS)


async def test_an_alert_reaches_health_and_the_admins_once_when_it_opens_and_once_when_it_resolves(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
    hook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await admin_client.post(
        "/api/notifications",
        json={
            "type": "systemAlert",
            "always": True,
            "notificators": "web,webhook",
            "attributes": {"webhookUrl": hook.url},
        },
        headers=admin_headers,
    )
    assert created.status == 201, await created.text()
    monkeypatch.setattr(alerts, "THRESHOLDS", Thresholds(dead_deliveries=2))
    health = await (await admin_client.get("/health")).json()
    assert health["systemAlerts"] == []

    # A batch the database refused, set aside; and three deliveries dead today (more than 2).
    await redis.xadd(SET_ASIDE_KEY, {"p": b"[]", "n": 1, "partition": 0, "from": "1-0"})
    await _dead_deliveries(sessions, 3, datetime.now(UTC))
    await _check(settings, redis)
    health = await (await admin_client.get("/health")).json()
    shown = {alert["kind"]: alert for alert in health["systemAlerts"]}
    assert {"positionsSetAside", "deadDeliveries"} <= shown.keys()
    assert shown["positionsSetAside"]["severity"] == "critical"
    assert shown["deadDeliveries"]["message"] == "3 notification deliveries died in the last 24 h (limit 2)"
    assert health["alerts"] == [] or all(isinstance(alert, str) for alert in health["alerts"])  # unchanged shape
    watched = {"positionsSetAside", "deadDeliveries"}
    assert sorted(found for found in _alert_bodies(hook) if found[0] in watched) == [
        ("deadDeliveries", "opened"),
        ("positionsSetAside", "opened"),
    ]
    recent = await (await admin_client.get("/api/notifications/recent", headers=admin_headers)).json()
    assert {item["attributes"]["kind"] for item in recent if item["type"] == "systemAlert"} >= watched

    # Checked again while still open: nothing more is sent.
    await _check(settings, redis)
    assert len([found for found in _alert_bodies(hook) if found[0] in watched]) == 2

    # Resolved: the stream emptied, the dead deliveries older than the window.
    await redis.delete(SET_ASIDE_KEY)
    async with transaction(sessions) as session:
        await session.execute(
            sa.update(Delivery)
            .where(col(Delivery.state) == "dead")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(days=2))
        )
    await _check(settings, redis)
    await _check(settings, redis)
    assert sorted(found for found in _alert_bodies(hook) if found[0] in watched) == [
        ("deadDeliveries", "opened"),
        ("deadDeliveries", "resolved"),
        ("positionsSetAside", "opened"),
        ("positionsSetAside", "resolved"),
    ]
    health = await (await admin_client.get("/health")).json()
    assert not watched & {alert["kind"] for alert in health["systemAlerts"]}
    assert not watched & {kind.decode() for kind in await redis.hkeys(ALERTS_KEY)}  # type: ignore[misc]


async def test_an_alert_sent_by_hand_reaches_the_admins(
    admin_client: Client,
    admin_headers: dict[str, str],
    settings: Settings,
    redis: ArqRedis,
    hook: WebhookReceiver,
) -> None:
    created = await admin_client.post(
        "/api/notifications",
        json={"type": "systemAlert", "always": True, "notificators": "webhook", "attributes": {"webhookUrl": hook.url}},
        headers=admin_headers,
    )
    assert created.status == 201, await created.text()
    await enqueue(redis, SEND_SYSTEM_ALERT, kind="disk", message="disk almost full", severity="critical")
    await run_burst(settings, NOTIFICATIONS)
    [received] = hook.received
    body = orjson.loads(received.body)
    assert body["event"]["attributes"] == {
        "kind": "disk",
        "message": "disk almost full",
        "severity": "critical",
        "state": "opened",
    }
    assert body["notification"]["type"] == "systemAlert"
