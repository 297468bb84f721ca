"""The cleanup API: admins start each cleanup as a task run by a real worker, see retention's status;
bad input is a 400 naming the field; users and strangers are refused; a device's newest position stays
readable through the positions API after its day is gone."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.aged import device_with, newest_ids, store_positions
from tests.support.client import Client, bearer, error_of
from tests.support.factories import USER_TOKEN, Users
from tests.support.fleet import add_event
from tests.support.services import make_settings
from tests.support.workers import run_burst
from tracker_jobs.cleanup.partitions import EVENTS_BY_WEEK, POSITIONS_BY_DAY, ensure_partitions, is_partitioned
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import utcnow
from tracker_jobs.jobs.refs import CLEANUP

KINDS = ("positions", "events", "cache", "duplicates", "orphans", "optimize")


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    """Retention days other than the defaults, so a run that follows the settings can be told apart."""
    return make_settings(
        database_url, redis_url, TRACKER_RETENTION_POSITIONS_DAYS="45", TRACKER_RETENTION_EVENTS_DAYS="120"
    )


async def run_task(admin_client: Client, headers: dict[str, str], settings: Settings, kind: str, body: Any) -> Any:
    started = await admin_client.post(f"/api/tasks/cleanup/{kind}", json=body, headers=headers)
    assert started.status == 202, await started.text()
    task_id = (await started.json())["task_id"]
    await run_burst(settings, CLEANUP)
    record = await (await admin_client.get(f"/api/tasks/task/{task_id}", headers=headers)).json()
    assert record["state"] == "complete", record
    return record["result"]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_cleanup_runs_as_a_task_and_a_dry_run_says_what_it_would_remove(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings, kind: str
) -> None:
    result = await run_task(admin_client, admin_headers, settings, kind, {"dry_run": True})

    assert result["dry_run"] is True
    assert "would_remove" in result
    assert "steps_s" in result
    # Left out, the days to keep are the TRACKER_RETENTION_* settings' (the cron's runs rely on it).
    days = {"positions": 45, "events": 120}.get(kind)
    if days is not None:
        kept = utcnow() - datetime.fromisoformat(result["cutoff"])
        assert timedelta(days=days) <= kept < timedelta(days=days, minutes=5)


async def test_positions_past_retention_go_and_a_silent_devices_newest_stays_readable(
    admin_client: Client,
    admin_headers: dict[str, str],
    settings: Settings,
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    async with sessions() as session:
        if await is_partitioned(session, POSITIONS_BY_DAY):
            await ensure_partitions(sessions, redis, (now - timedelta(days=80)).date(), ahead_days=88)
    silent = await device_with(sessions, "silent")
    await store_positions(sessions, silent, now, (50, 70))
    newest = (await newest_ids(sessions))[silent]

    result = await run_task(admin_client, admin_headers, settings, "positions", {"days_to_keep": 30})

    assert result["removed"]["positions"] == 5  # all but the newest of six
    answer = await admin_client.get("/api/positions", params={"deviceId": str(silent)}, headers=admin_headers)
    assert [position["id"] for position in await answer.json()] == [newest]
    device = await (await admin_client.get(f"/api/devices/{silent}", headers=admin_headers)).json()
    assert device["positionId"] == newest


async def test_status_shows_tables_partitions_and_the_next_run(
    admin_client: Client,
    admin_headers: dict[str, str],
    settings: Settings,
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    old, ancient = settings.retention_events_days + 20, 500  # days: one in a week's partition, one older
    async with sessions() as session:
        partitioned = await is_partitioned(session, EVENTS_BY_WEEK)
    if partitioned:  # the weeks since `old` have their partitions; older events are in the default one
        await ensure_partitions(sessions, redis, (now - timedelta(days=old + 10)).date(), ahead_days=old + 17)
    van = await device_with(sessions, "van")
    await store_positions(sessions, van, now, (1, 45))
    for age in (1, old, ancient):
        await add_event(sessions, van, "deviceOverspeed", now - timedelta(days=age))

    answer = await admin_client.get("/api/cleanup/status", headers=admin_headers)

    assert answer.status == 200
    status = await answer.json()
    assert {table["table"] for table in status["tables"]} >= {"positions", "events"}
    assert status["nextRun"]["positionsInChunks"] + status["nextRun"]["positionsInPartitionsEstimate"] >= 2
    assert status["oldestPosition"].startswith(str((now - timedelta(days=45, minutes=10)).date()))
    if partitioned:
        # The old event's week goes whole (its rows estimated); the ancient one, in the default partition,
        # older than that week, is counted among the rows that go one by one.
        assert EVENTS_BY_WEEK.partition_name((now - timedelta(days=old)).date()) in status["nextRun"]["eventPartitions"]
        assert status["nextRun"]["eventsInChunks"] == 1
        default = [(partition["of"], partition["table"]) for partition in status["partitions"] if partition["default"]]
        assert default == [("positions", POSITIONS_BY_DAY.default_partition), ("events", "events_default")]
        assert {partition["of"] for partition in status["partitions"] if partition["from"]} == {"positions", "events"}
    else:
        assert status["nextRun"]["eventsInChunks"] == 2
        assert status["nextRun"]["eventPartitions"] == []
        assert status["partitions"] == []


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("positions", {"days_to_keep": -1}, "days_to_keep"),
        ("positions", {"days_to_keep": "30"}, "days_to_keep"),
        ("events", {"device_ids": [987654]}, "device_ids"),
        ("positions", {"device_ids": []}, "device_ids"),
        ("cache", {"pattern": "tracker:queue:*"}, "pattern"),
        ("cache", {"pattern": "live:\\*"}, "pattern"),
        ("cache", {"max_age_hours": -2}, "max_age_hours"),
        ("optimize", {"dry_run": "yes"}, "dry_run"),
        ("orphans", {"colour": 1}, "colour"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    admin_client: Client, admin_headers: dict[str, str], kind: str, body: dict[str, Any], field: str
) -> None:
    answer = await admin_client.post(f"/api/tasks/cleanup/{kind}", json=body, headers=admin_headers)

    assert answer.status == 400
    assert (await error_of(answer))["message"].startswith(f"{field}:")


async def test_only_admins_may_clean_up_or_see_the_status(admin_client: Client, users: Users) -> None:
    for method, path in [("POST", "/api/tasks/cleanup/positions"), ("GET", "/api/cleanup/status")]:
        assert (await admin_client.request(method, path, json={})).status == 401
        assert (await admin_client.request(method, path, json={}, headers=bearer(USER_TOKEN))).status == 403
