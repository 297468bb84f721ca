"""Regression tests for the defects an outside attack found (issue 9), each on both databases where the
database matters: bounded JSON, NUL and out-of-range input, guessing with junk tokens, password hashing
off the event loop, form charsets, disabled devices, cache entries of deleted devices, the counters and
lastUsedAt, and emails compared case-insensitively."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.support.factories import add_device, make_user, position
from tests.support.processes import wait_for
from tests.support.services import ADMIN_TOKEN, make_settings, open_listener
from tests.support.workers import run_burst
from tracker_jobs.core.access import AccessChange
from tracker_jobs.core.config import Settings
from tracker_jobs.devices.keys import live_key, rate_key
from tracker_jobs.devices.service import DeviceDirectory, UnknownDevice
from tracker_jobs.jobs.refs import POSITIONS
from tracker_jobs.monitor.counters import POSITIONS_ACCEPTED, POSITIONS_REJECTED, read_counts
from tracker_jobs.users.service import MAX_PENDING_HASHES, PasswordHashingBusy, hash_password, hash_token
from tracker_jobs.web.app import create_admin_app

Client = TestClient[Any, Any]
OUT_OF_RANGE_TIMES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    message: str = (await response.json())["error"]["message"]
    return message


async def test_deep_device_attributes_are_refused_and_the_device_list_stays_readable(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "deep")
    for body in ({"attributes": nested(300)}, {"attributes": nested(17)}, {"attributes": {"x": "y" * 20_000}}):
        response = await admin_client.put(f"/api/devices/{device}", json=body, headers=admin_headers)
        assert (await error_of(response, 400)).startswith("attributes:")
    created = await admin_client.post(
        "/api/devices", json={"uniqueId": "deep-2", "attributes": nested(300)}, headers=admin_headers
    )
    assert (await error_of(created, 400)).startswith("attributes:")
    fine = await admin_client.put(f"/api/devices/{device}", json={"attributes": nested(16)}, headers=admin_headers)
    assert fine.status == 200
    listed = await admin_client.get("/api/devices", headers=admin_headers)
    assert listed.status == 200
    assert [d["uniqueId"] for d in await listed.json()] == ["deep"]  # nothing of the refused requests was stored


async def test_deep_attributes_in_a_batch_reject_that_item_only(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "batch-deep")
    body = [position(device, 0), position(device, 10, attributes={"deep": nested(300)})]
    response = await admin_client.post("/api/positions", json=body, headers=admin_headers)
    assert response.status == 202
    answer = await response.json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["reason"].split(":")[0]) for r in answer["rejected"]] == [(1, "attributes")]


async def test_deep_extras_from_traccar_client_are_a_400(ingest_client: Any) -> None:
    # orjson writes at most 254 levels, so the body is spelled out.
    extras = '{"a":' * 300 + "1" + "}" * 300
    body = (
        '{"device_id": "deep-phone", "location": {"coords": {"latitude": 1, "longitude": 2}, "extras": ' + extras + "}}"
    )
    response = await ingest_client.post("/", data=body, headers={"Content-Type": "application/json"})
    assert (await error_of(response, 400)).startswith("attributes:")


async def test_out_of_range_offsets_are_a_400_naming_the_parameter(
    admin_client: Client, admin_headers: dict[str, str], ingest_client: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "offsets")
    for when in OUT_OF_RANGE_TIMES:
        for path, name in [("/api/positions", "from"), ("/api/positions", "to"), ("/api/tasks", "from")]:
            response = await admin_client.get(path, params={name: when}, headers=admin_headers)
            assert (await error_of(response, 400)).startswith(f"{name}:")
        report = {"device_id": device, "start": when, "end": "2026-01-02T00:00:00Z"}
        response = await admin_client.post("/api/tasks/report/device", json=report, headers=admin_headers)
        assert (await error_of(response, 400)).startswith("start:")
        response = await ingest_client.get("/", params={"id": "offsets", "lat": 1, "lon": 2, "timestamp": when})
        assert (await error_of(response, 400)).startswith("timestamp:")
        body = {"device_id": "offsets", "location": {"timestamp": when, "coords": {"latitude": 1, "longitude": 2}}}
        response = await ingest_client.post("/", data=orjson.dumps(body), headers={"Content-Type": "application/json"})
        assert (await error_of(response, 400)).startswith("location.timestamp:")
        batch = [position(device, 0), position(device, 10, fixTime=when)]
        response = await admin_client.post("/api/positions", json=batch, headers=admin_headers)
        assert response.status == 202
        answer = await response.json()
        assert answer["accepted"] == 1
        assert [(r["index"], r["reason"].split(":")[0]) for r in answer["rejected"]] == [(1, "fixTime")]


async def test_nul_and_out_of_range_integers_are_a_400_naming_the_field(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "nul")
    user_body = {"email": "nul@example.com", "password": "long enough", "name": "a\u0000b"}
    report = {
        "device_id": device,
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-02T00:00:00Z",
        "kind": "events",
        "event_types": ["a\u0000"],
    }
    cases = [
        ("PUT", f"/api/devices/{device}", {"name": "a\u0000b"}, None, "name:"),
        ("POST", "/api/devices", {"uniqueId": "nul-2", "name": "x\u0000"}, None, "name:"),
        ("PUT", f"/api/devices/{device}", {"attributes": {"k": "v\u0000"}}, None, "attributes:"),
        ("PUT", f"/api/devices/{device}", {"attributes": {"k\u0000": 1}}, None, "attributes:"),
        ("POST", "/api/users", user_body, None, "name:"),
        ("POST", "/api/users", {**user_body, "name": "ok", "email": "a\u0000b@x"}, None, "email:"),
        ("POST", "/api/tasks/report/device", report, None, "event_types.0:"),
        ("GET", "/api/tasks", None, {"name": "\u0000"}, "name:"),
        ("GET", "/api/reports/events", None, {"deviceId": device, "type": "\u0000"}, "type:"),
        ("GET", "/api/positions", None, {"deviceId": "99999999999"}, "deviceId:"),
        ("GET", "/api/reports/route", None, {"deviceId": str(2**40)}, "deviceId:"),
        ("POST", "/api/tasks/report/device", {**report, "event_types": [], "device_id": 2**40}, None, "device_id:"),
    ]
    for method, path, body, query, field in cases:
        response = await admin_client.request(method, path, json=body, params=query, headers=admin_headers)
        assert (await error_of(response, 400)).startswith(field), (method, path)
    # Unauthenticated, too.
    login = await admin_client.post("/api/session", json={"email": "a\u0000b@x", "password": "whatever"})
    assert (await error_of(login, 400)).startswith("email:")
    assert (await admin_client.get(f"/api/devices/{device}", headers=admin_headers)).status == 200


@pytest.mark.parametrize("charset", ["rot13", "base64", "hex", "zlib", "idna", "bz2", "no-such-charset"])
async def test_form_charsets_other_than_text_encodings_are_a_400(ingest_client: Any, charset: str) -> None:
    response = await ingest_client.post(
        "/",
        data=b"id=form-phone&lat=1&lon=2",
        headers={"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"},
    )
    assert (await error_of(response, 400)).startswith("Content-Type:")


async def test_a_text_charset_is_still_read(ingest_client: Any, sessions: async_sessionmaker[AsyncSession]) -> None:
    await add_device(sessions, "café")
    response = await ingest_client.post(
        "/",
        data="id=café&lat=1&lon=2".encode("latin-1"),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"},
    )
    assert response.status == 200


async def test_junk_bearer_tokens_count_against_the_address(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    engine: AsyncEngine,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await make_user(sessions, "quiet@example.com", token="quiet-token")
    settings = make_settings(database_url, redis_url, TRACKER_ANONYMOUS_RATE_LIMIT="5")
    async with TestClient(TestServer(create_admin_app(settings, redis, engine))) as client:
        assert (await client.get("/api/devices", headers=admin_headers)).status == 200  # in use this window
        answers = [
            (await client.get("/api/devices", headers={"Authorization": f"Bearer junk-{n}"})).status for n in range(8)
        ]
        assert answers == [401] * 5 + [429] * 3
        # Guessing costs no per-token key, and the address stays refused while its window lasts.
        assert await redis.keys("tracker:rate:token:*") == [f"tracker:rate:token:{hash_token(ADMIN_TOKEN)}".encode()]
        refused = await client.get("/api/devices", headers={"Authorization": "Bearer junk-again"})
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        logins = [(await client.post("/api/session", json={"email": "a@b.c", "password": "x"})).status]
        assert logins == [429]
        # A token already in use from this address goes on working: one guesser behind a shared address
        # does not lock its neighbours out. A token not yet seen this window waits for the window's end.
        assert (await client.get("/api/devices", headers=admin_headers)).status == 200
        unseen = await client.get("/api/devices", headers={"Authorization": "Bearer quiet-token"})
        assert unseen.status == 429


async def test_a_valid_token_is_counted_against_itself_not_the_address(
    database_url: str, redis_url: str, redis: ArqRedis, engine: AsyncEngine, admin_headers: dict[str, str]
) -> None:
    settings = make_settings(database_url, redis_url, TRACKER_ANONYMOUS_RATE_LIMIT="2", TRACKER_API_RATE_LIMIT="4")
    async with TestClient(TestServer(create_admin_app(settings, redis, engine))) as client:
        answers = [(await client.get("/api/devices", headers=admin_headers)).status for _ in range(6)]
        assert answers == [200] * 4 + [429] * 2
        assert (await client.post("/api/session", json={"email": "a@b.c", "password": "x"})).status == 401


async def test_password_hashing_leaves_the_event_loop_free() -> None:
    hashing = asyncio.create_task(hash_password("a long passphrase"))
    turns = 0
    while not hashing.done():
        await asyncio.sleep(0.001)
        turns += 1
    # scrypt takes tens of milliseconds: run on the loop, it would finish within the first turn.
    assert turns >= 5
    assert (await hashing).startswith("scrypt$")


async def test_disabled_devices_are_refused_at_the_door_on_every_route(
    settings: Settings,
    redis_url: str,
    redis: ArqRedis,
    engine: AsyncEngine,
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    auto = make_settings(settings.database_url, redis_url, TRACKER_AUTO_REGISTER="true")
    async with open_listener(auto, redis, engine) as listener:
        assert (await listener.get("/", params={"id": "parked", "lat": 1, "lon": 2})).status == 200
        device = (await (await admin_client.get("/api/devices", headers=admin_headers)).json())[0]["id"]
        disable = await admin_client.put(f"/api/devices/{device}", json={"disabled": True}, headers=admin_headers)
        assert disable.status == 200

        # The listener hears of the change on the access channel (pub/sub: a moment, not the minute's reload).
        async def refused_now() -> Any:
            answer = await listener.get("/", params={"id": "parked", "lat": 1, "lon": 2})
            return answer if answer.status == 403 else None

        refused = await wait_for(refused_now, 5, "the listener to refuse the disabled device")
        assert (await error_of(refused, 403)).startswith("id:")
        assert (await refused.json())["error"]["code"] == "device_disabled"
    by_id = position(device, 0)
    by_unique_id = {**position(device, 10), "uniqueId": "parked"}
    del by_unique_id["deviceId"]
    batch = await admin_client.post("/api/positions", json=[by_id, by_unique_id], headers=admin_headers)
    assert batch.status == 400  # none accepted
    rejected = (await batch.json())["rejected"]
    assert [(r["index"], r["code"]) for r in rejected] == [(0, "device_disabled"), (1, "device_disabled")]
    single = await admin_client.post("/api/tasks/position/process-single", json=by_id, headers=admin_headers)
    assert (await error_of(single, 403)).endswith("is disabled")
    devices = await (await admin_client.get("/api/devices", headers=admin_headers)).json()
    assert [(d["uniqueId"], d["disabled"]) for d in devices] == [("parked", True)]  # not registered again


async def test_deleting_a_device_drops_its_cache_and_its_id_is_not_given_again(
    settings: Settings,
    redis: ArqRedis,
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    owner = await make_user(sessions, "owner@example.com", token="owner-token")
    old = await add_device(sessions, "old-phone", owner=owner)
    assert (await admin_client.post("/api/positions", json=[position(old, 0)], headers=admin_headers)).status == 202
    await run_burst(settings, POSITIONS)
    statistics = await admin_client.get(f"/api/devices/{old}/statistics", headers=admin_headers)
    assert statistics.status == 200
    assert await redis.exists(live_key(old)) == 1
    await redis.set(rate_key(old), 1)  # a rate window, as the listener's accept leaves one
    assert (await admin_client.delete(f"/api/devices/{old}", headers=admin_headers)).status == 204
    assert await redis.exists(live_key(old), rate_key(old)) == 0
    gone = await admin_client.get(f"/api/devices/{old}/statistics", headers=admin_headers)
    assert gone.status == 404  # its cached statistics (expiring within a minute) can no longer be read
    created = await admin_client.post("/api/devices", json={"uniqueId": "new-phone"}, headers=admin_headers)
    new = (await created.json())["id"]
    assert new > old
    newest = await admin_client.get("/api/positions", params={"deviceId": new}, headers=admin_headers)
    assert await newest.json() == []


async def test_counters_move_with_what_is_accepted_and_rejected(
    settings: Settings,
    redis: ArqRedis,
    engine: AsyncEngine,
    admin_client: Client,
    admin_headers: dict[str, str],
    ingest_client: Any,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = await add_device(sessions, "counted")
    batch = [position(device, 0), position(device, 10), position(device, 20, latitude=99)]
    assert (await admin_client.post("/api/positions", json=batch, headers=admin_headers)).status == 202
    assert (await ingest_client.get("/", params={"id": "counted", "lat": 1, "lon": 2})).status == 200
    assert (await ingest_client.get("/", params={"id": "counted", "lat": "north", "lon": 2})).status == 400
    assert (await ingest_client.get("/", params={"id": "nobody", "lat": 1, "lon": 2})).status == 404
    counts = await read_counts(redis)
    assert (counts.get(POSITIONS_ACCEPTED), counts.get(POSITIONS_REJECTED)) == (3, 3)
    metrics = await (await admin_client.get("/metrics")).text()
    assert "tracker_positions_accepted_total 3.0" in metrics
    assert "tracker_positions_rejected_total 3.0" in metrics


async def test_api_tokens_record_when_they_were_last_used(admin_client: Client, admin_headers: dict[str, str]) -> None:
    user = await (
        await admin_client.post(
            "/api/users", json={"email": "t@example.com", "password": "long enough"}, headers=admin_headers
        )
    ).json()
    made = await (await admin_client.post(f"/api/users/{user['id']}/tokens", json={}, headers=admin_headers)).json()
    assert made["lastUsedAt"] is None
    assert (await admin_client.get("/api/devices", headers={"Authorization": f"Bearer {made['token']}"})).status == 200
    tokens = await (await admin_client.get(f"/api/users/{user['id']}/tokens", headers=admin_headers)).json()
    assert tokens[0]["lastUsedAt"] is not None


async def test_emails_are_compared_and_kept_unique_case_insensitively(
    admin_client: Client, admin_headers: dict[str, str]
) -> None:
    body = {"email": "Ann@Example.COM", "password": "long enough"}
    created = await admin_client.post("/api/users", json=body, headers=admin_headers)
    assert (await created.json())["email"] == "ann@example.com"
    again = await admin_client.post("/api/users", json={**body, "email": "ANN@example.com"}, headers=admin_headers)
    assert again.status == 409
    login = await admin_client.post("/api/session", json={"email": "aNN@example.com ", "password": "long enough"})
    assert login.status == 200


async def test_a_login_flood_is_refused_rather_than_queued() -> None:
    hashes = await asyncio.gather(
        *(hash_password("a long passphrase") for _ in range(MAX_PENDING_HASHES + 8)), return_exceptions=True
    )
    assert sum(isinstance(found, str) for found in hashes) == MAX_PENDING_HASHES
    assert sum(isinstance(found, PasswordHashingBusy) for found in hashes) == 8
    assert isinstance(await hash_password("a long passphrase"), str)  # the pool frees up again


class PausingDirectory(DeviceDirectory):
    """A directory whose whole-map read pauses after reading, so a change can land meanwhile."""

    read: asyncio.Event
    go_on: asyncio.Event

    async def _read_all(self) -> list[tuple[str, int, bool]]:
        rows = await super()._read_all()
        self.read.set()
        await self.go_on.wait()
        return rows


async def test_a_map_read_across_a_change_is_not_kept(
    sessions: async_sessionmaker[AsyncSession], admin_client: Client, admin_headers: dict[str, str]
) -> None:
    device = await add_device(sessions, "raced")
    directory = PausingDirectory(sessions)
    directory.read, directory.go_on = asyncio.Event(), asyncio.Event()
    resolving = asyncio.create_task(directory.resolve("raced", auto_register=False))
    await directory.read.wait()  # the map is read, the device still in it
    assert (await admin_client.delete(f"/api/devices/{device}", headers=admin_headers)).status == 204
    directory.apply(AccessChange(devices=frozenset({device})))  # as the access channel delivers it
    directory.go_on.set()
    with pytest.raises(UnknownDevice):
        await resolving  # not the deleted id from the stale read


async def test_job_arguments_stay_within_their_columns(admin_client: Client, admin_headers: dict[str, str]) -> None:
    body = {"report_id": 99_999_999_999, "format": "csv"}
    response = await admin_client.post("/api/tasks/run/export_report_data", json=body, headers=admin_headers)
    assert (await error_of(response, 400)).startswith("report_id:")


async def test_an_email_that_lowercases_past_the_column_is_a_400(
    admin_client: Client, admin_headers: dict[str, str]
) -> None:
    body = {"email": "a@" + "İ" * 254, "password": "long enough"}  # 256 characters; "i̇" is two when lowercased
    response = await admin_client.post("/api/users", json=body, headers=admin_headers)
    assert (await error_of(response, 400)).startswith("email:")
