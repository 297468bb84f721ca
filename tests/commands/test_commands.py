"""Device commands end to end in one process: sent through the API, carried by a real OsmAnd reply of
the listener (at most once), recorded by the real commands worker, answered by the device's `result`,
cancelled, expired, delivered to a real local gateway (signed) and answered through the API; bad input
refused naming the field; a user commands only the devices they may see."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.client import bearer, error_of
from tests.support.factories import OTHER_TOKEN, USER_TOKEN, Users, add_device
from tests.support.receivers import webhook_receiver
from tests.support.workers import run_burst
from tracker_jobs.commands import queue
from tracker_jobs.commands.models import Command
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.events.models import Delivery, Event
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import COMMANDS, EXPIRE_COMMANDS, RECORD_COMMAND_UPDATES, RETRY_FAILED_COMMANDS

Client = TestClient[Any, Any]


async def send(client: Client, headers: dict[str, str], **body: Any) -> aiohttp.ClientResponse:
    return await client.post("/api/commands/send", json=body, headers=headers)


async def report(ingest: aiohttp.ClientSession, unique_id: str, second: int, **extra: Any) -> tuple[int, str]:
    params = {"id": unique_id, "lat": 52.5, "lon": 13.4, "timestamp": 1_767_225_600 + second, **extra}
    async with ingest.get("/", params=params) as response:
        return response.status, await response.text()


async def events_of(sessions: async_sessionmaker[AsyncSession], kind: str) -> list[Event]:
    async with sessions() as session:
        query = select(Event).where(col(Event.type) == kind).order_by(col(Event.id))
        return list((await session.execute(query)).scalars())


async def command_of(client: Client, headers: dict[str, str], command_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/commands/{command_id}", headers=headers)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_a_command_goes_out_in_the_next_osmand_reply_once_and_its_result_is_tied_to_it(
    admin_client: Client,
    admin_headers: dict[str, str],
    ingest_client: aiohttp.ClientSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
) -> None:
    device = await add_device(sessions, "phone-1")
    assert (await report(ingest_client, "phone-1", 0)) == (200, "")  # nothing queued: a plain OK
    sent = await send(
        admin_client, admin_headers, deviceId=device, type="positionPeriodic", attributes={"frequency": 30}
    )
    assert sent.status == 202
    command = await sent.json()
    assert (command["state"], command["transport"]) == ("queued", "osmand")
    later = datetime.fromisoformat(command["expiresAt"]) - datetime.fromisoformat(command["createdAt"])
    assert later == timedelta(seconds=settings.command_ttl_s)

    await asyncio.sleep(queue.INBOX_REFRESH_S + 0.1)  # the listener's copy of who has commands
    assert (await report(ingest_client, "phone-1", 10)) == (200, "frequency=30")
    assert (await report(ingest_client, "phone-1", 20)) == (200, "")  # delivered once only
    await run_burst(settings, COMMANDS)
    shown = await command_of(admin_client, admin_headers, command["id"])
    assert shown["state"] == "sent"
    assert shown["sentAt"]
    [sent_event] = await events_of(sessions, "queuedCommandSent")
    assert (sent_event.device_id, sent_event.attributes["commandId"]) == (device, command["id"])

    # A second command goes out too; the result answers the oldest sent one.
    second = await (await send(admin_client, admin_headers, deviceId=device, type="positionStop")).json()
    await asyncio.sleep(queue.INBOX_REFRESH_S + 0.1)
    assert (await report(ingest_client, "phone-1", 25)) == (200, "stop")
    assert (await report(ingest_client, "phone-1", 30, result="frequency set"))[0] == 200
    entries = await redis.xrange(queue.UPDATES_KEY)
    await run_burst(settings, COMMANDS)
    shown = await command_of(admin_client, admin_headers, command["id"])
    assert (shown["state"], shown["result"]) == ("answered", "frequency set")
    [result_event] = await events_of(sessions, "commandResult")
    assert result_event.attributes == {
        "commandId": command["id"],
        "commandType": "positionPeriodic",
        "result": "frequency set",
    }
    assert (await command_of(admin_client, admin_headers, second["id"]))["state"] == "sent"

    # The same entries recorded again (a crash between the commit and the stream's trim): the result
    # answers nothing more (not the second command), and no event is stored twice.
    assert await redis.xlen(queue.UPDATES_KEY) == 0
    await redis.delete(queue.UPDATES_KEY)  # a stream takes no id below its last one
    for entry_id, fields in entries:
        await redis.xadd(queue.UPDATES_KEY, fields, id=entry_id)
    await enqueue(redis, RECORD_COMMAND_UPDATES)
    await run_burst(settings, COMMANDS)
    assert await redis.xlen(queue.UPDATES_KEY) == 0
    assert (await command_of(admin_client, admin_headers, second["id"]))["state"] == "sent"
    assert len(await events_of(sessions, "commandResult")) == 1
    assert len(await events_of(sessions, "queuedCommandSent")) == 2


async def test_two_requests_of_one_device_at_once_claim_a_command_once(redis: ArqRedis) -> None:
    await queue.push(redis, 7, 1, "stop", datetime.now(UTC).timestamp() + 60)
    claims = await asyncio.gather(*(queue.claim(redis, 7) for _ in range(20)))
    assert [claim.text for claim in claims if claim] == ["stop"]
    assert not await redis.sismember(queue.WAITING_KEY, "7")  # type: ignore[misc]


async def test_an_expired_command_is_never_sent(redis: ArqRedis) -> None:
    await queue.push(redis, 8, 1, "old", datetime.now(UTC).timestamp() - 1)
    await queue.push(redis, 8, 2, "new", datetime.now(UTC).timestamp() + 60)
    claimed = await queue.claim(redis, 8)
    assert claimed is not None
    assert (claimed.command_id, claimed.text) == (2, "new")


async def test_cancel_takes_back_a_queued_command_and_refuses_a_sent_one(
    admin_client: Client,
    admin_headers: dict[str, str],
    ingest_client: aiohttp.ClientSession,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = await add_device(sessions, "phone-2")
    first = await (
        await send(admin_client, admin_headers, deviceId=device, type="custom", attributes={"data": "a"})
    ).json()
    second = await (
        await send(admin_client, admin_headers, deviceId=device, type="custom", attributes={"data": "b"})
    ).json()
    cancelled = await admin_client.delete(f"/api/commands/{first['id']}", headers=admin_headers)
    assert cancelled.status == 200
    assert (await cancelled.json())["state"] == "cancelled"
    await asyncio.sleep(queue.INBOX_REFRESH_S + 0.1)
    assert (await report(ingest_client, "phone-2", 0)) == (200, "b")  # the cancelled one never goes
    refused = await admin_client.delete(f"/api/commands/{second['id']}", headers=admin_headers)
    assert refused.status == 409
    assert "already been sent" in (await error_of(refused))["message"]


async def test_a_command_past_its_expiry_expires_with_an_event(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
) -> None:
    device = await add_device(sessions, "phone-3")
    command = await (await send(admin_client, admin_headers, deviceId=device, type="positionSingle")).json()
    async with transaction(sessions) as session:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await session.execute(sa.update(Command).where(col(Command.id) == command["id"]).values(expires_at=past))
    await enqueue(redis, EXPIRE_COMMANDS)
    await run_burst(settings, COMMANDS)
    assert (await command_of(admin_client, admin_headers, command["id"]))["state"] == "expired"
    [expired] = await events_of(sessions, "commandExpired")
    assert expired.attributes["commandId"] == command["id"]
    assert not await redis.exists(queue.queue_key(device))


async def test_a_gateway_gets_the_command_signed_and_reports_the_result(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    told = await admin_client.post(
        "/api/notifications",
        json={"type": "commandResult", "always": True, "notificators": "web"},
        headers=admin_headers,
    )
    assert told.status == 201, await told.text()
    async with webhook_receiver() as gateway:
        attributes = {"commandGateway": gateway.url, "commandGatewaySecret": "s3cret"}
        device = await add_device(sessions, "tracker-1")
        changed = await admin_client.put(
            f"/api/devices/{device}", json={"attributes": attributes}, headers=admin_headers
        )
        assert changed.status == 200
        types = await (await admin_client.get(f"/api/commands/types?deviceId={device}", headers=admin_headers)).json()
        assert "engineStop" in [kind["type"] for kind in types]
        command = await (await send(admin_client, admin_headers, deviceId=device, type="engineStop")).json()
        assert command["transport"] == "gateway"
        await run_burst(dataclasses.replace(settings, webhook_allow_private=True), COMMANDS)
        [hook] = gateway.received
        body = orjson.loads(hook.body)
        assert (body["id"], body["type"], body["uniqueId"]) == (command["id"], "engineStop", "tracker-1")
        expected = "sha256=" + hmac.new(b"s3cret", hook.body, hashlib.sha256).hexdigest()
        assert hook.headers["X-Tracker-Signature"] == expected
        assert hook.headers["X-Tracker-Delivery"] == f"command-{command['id']}"
    assert (await command_of(admin_client, admin_headers, command["id"]))["state"] == "sent"
    answered = await admin_client.post(
        f"/api/commands/{command['id']}/result", json={"result": "engine stopped"}, headers=admin_headers
    )
    assert answered.status == 200
    assert ((await answered.json())["state"], (await answered.json())["result"]) == ("answered", "engine stopped")
    [result_event] = await events_of(sessions, "commandResult")
    assert result_event.attributes["commandId"] == command["id"]
    # The notifications path: the admin's commandResult notification owes a web delivery of it.
    async with sessions() as session:
        owed = (await session.execute(select(Delivery).where(col(Delivery.event_id) == result_event.id))).scalars()
        assert [(delivery.event_type, delivery.channel) for delivery in owed] == [("commandResult", "web")]


async def test_a_gateway_that_fails_for_now_is_tried_again_later(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
) -> None:
    worker_settings = dataclasses.replace(settings, webhook_allow_private=True)
    async with webhook_receiver(status=503) as gateway:
        device = await add_device(sessions, "tracker-2")
        await admin_client.put(
            f"/api/devices/{device}", json={"attributes": {"commandGateway": gateway.url}}, headers=admin_headers
        )
        command = await (await send(admin_client, admin_headers, deviceId=device, type="rebootDevice")).json()
        await run_burst(worker_settings, COMMANDS)
        shown = await command_of(admin_client, admin_headers, command["id"])
        assert (shown["state"], shown["attempts"]) == ("queued", 1)
        assert shown["error"].startswith("HTTP 503")
        async with sessions() as session:
            query = select(Command.next_attempt_at).where(col(Command.id) == command["id"])
            due = (await session.execute(query)).scalar()
        assert due is not None
        assert due > datetime.now(UTC)
        # Not due yet: the retry job leaves it; once due, it goes again, and the gateway takes it now.
        await enqueue(redis, RETRY_FAILED_COMMANDS)
        await run_burst(worker_settings, COMMANDS)
        assert len(gateway.received) == 1
        async with transaction(sessions) as session:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await session.execute(
                sa.update(Command).where(col(Command.id) == command["id"]).values(next_attempt_at=past)
            )
        gateway.status = 200
        await enqueue(redis, RETRY_FAILED_COMMANDS)
        await run_burst(worker_settings, COMMANDS)
        assert len(gateway.received) == 2
        assert {hook.headers["X-Tracker-Delivery"] for hook in gateway.received} == {f"command-{command['id']}"}
    shown = await command_of(admin_client, admin_headers, command["id"])
    assert (shown["state"], shown["attempts"], shown["error"]) == ("sent", 2, None)


async def test_bad_commands_are_refused_naming_the_field(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "phone-4")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for body, field in [
        ({"type": "selfDestruct"}, "type"),
        ({"type": "engineStop"}, "type"),  # OsmAnd replies cannot carry it
        ({"type": "positionPeriodic"}, "attributes.frequency"),
        ({"type": "positionPeriodic", "attributes": {"frequency": 0}}, "attributes.frequency"),
        ({"type": "custom", "attributes": {"data": "x" * 513}}, "attributes.data"),
        ({"type": "positionSingle", "expiresAt": past}, "expiresAt"),
        ({"type": "positionSingle", "expiresAt": (datetime.now(UTC) + timedelta(days=31)).isoformat()}, "expiresAt"),
        ({"type": "custom", "attributes": {"data": "x"}, "deviceId": None}, "deviceId"),
    ]:
        response = await send(admin_client, admin_headers, **{"deviceId": device, **body})
        assert response.status == 400, body
        assert (await error_of(response))["message"].startswith(field), body
    missing = await send(admin_client, admin_headers, deviceId=999_999, type="positionSingle")
    assert missing.status == 404


async def test_a_user_commands_only_their_devices_and_a_limited_user_only_saved_commands(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    theirs = await add_device(sessions, "theirs", owner=users.user)
    others = await add_device(sessions, "others", owner=users.other)
    headers = bearer(USER_TOKEN)
    assert (await send(admin_client, headers, deviceId=others, type="positionSingle")).status == 404
    assert (await send(admin_client, headers, deviceId=theirs, type="positionSingle")).status == 202
    queue_seen = await (await admin_client.get("/api/commands/queue", headers=headers)).json()
    assert {command["deviceId"] for command in queue_seen} == {theirs}

    saved = await admin_client.post(
        "/api/commands/saved", json={"type": "positionPeriodic", "attributes": {"frequency": 60}}, headers=headers
    )
    assert saved.status == 201
    saved_id = (await saved.json())["id"]
    limited = await admin_client.put(f"/api/users/{users.user}", json={"limitCommands": True}, headers=admin_headers)
    assert limited.status == 200
    assert (await limited.json())["limitCommands"] is True
    refused = await send(admin_client, headers, deviceId=theirs, type="positionSingle")
    assert refused.status == 403
    allowed = await send(admin_client, headers, deviceId=theirs, id=saved_id)
    assert allowed.status == 202
    assert (await allowed.json())["attributes"] == {"frequency": 60}
    # Limited, they may not save (then send) a command of their own, nor change one they have.
    engine_stop = {"type": "custom", "attributes": {"data": "stop engine"}}
    assert (await admin_client.post("/api/commands/saved", json=engine_stop, headers=headers)).status == 403
    changed = await admin_client.put(f"/api/commands/saved/{saved_id}", json=engine_stop, headers=headers)
    assert changed.status == 403
    # What an admin saves is offered to every user, to send but not to change.
    offered = await admin_client.post("/api/commands/saved", json=engine_stop, headers=admin_headers)
    offered_id = (await offered.json())["id"]
    listed = await (await admin_client.get("/api/commands/saved", headers=headers)).json()
    assert sorted(item["id"] for item in listed) == sorted([saved_id, offered_id])
    assert (await send(admin_client, headers, deviceId=theirs, id=offered_id)).status == 202
    assert (await admin_client.delete(f"/api/commands/saved/{offered_id}", headers=headers)).status == 403
    other_user = await admin_client.get("/api/commands/saved", headers=bearer(OTHER_TOKEN))
    assert [item["id"] for item in await other_user.json()] == [offered_id]  # not the first user's own


async def test_a_list_of_devices_fans_out_and_a_page_of_sent_commands_is_recorded_at_once(
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
) -> None:
    devices = [await add_device(sessions, f"fleet-{n}") for n in range(3)]
    response = await send(admin_client, admin_headers, deviceIds=devices, type="custom", attributes={"data": "ping"})
    assert response.status == 202
    commands = await response.json()
    assert sorted(command["deviceId"] for command in commands) == devices
    assert len({command["id"] for command in commands}) == 3
    for device in devices:  # as the listener does for each device's next report
        assert await queue.claim(redis, device) is not None
    await enqueue(redis, RECORD_COMMAND_UPDATES)
    await run_burst(settings, COMMANDS)
    states = [(await command_of(admin_client, admin_headers, command["id"]))["state"] for command in commands]
    assert states == ["sent"] * 3
    assert len(await events_of(sessions, "queuedCommandSent")) == 3


async def test_a_result_in_the_request_that_takes_a_new_command_does_not_answer_it(
    admin_client: Client,
    admin_headers: dict[str, str],
    ingest_client: aiohttp.ClientSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    device = await add_device(sessions, "phone-5")
    command = await (await send(admin_client, admin_headers, deviceId=device, type="positionSingle")).json()
    await asyncio.sleep(queue.INBOX_REFRESH_S + 0.1)
    # A result of something before it (no command of ours was out), in the request whose reply carries it.
    assert (await report(ingest_client, "phone-5", 0, result="old news", commandId="true")) == (200, "position")
    await run_burst(settings, COMMANDS)
    assert (await command_of(admin_client, admin_headers, command["id"]))["state"] == "sent"
    [unmatched] = await events_of(sessions, "commandResult")
    assert unmatched.attributes == {"commandId": None, "result": "old news"}


async def test_what_a_deleted_device_left_in_the_stream_holds_nothing_up(
    admin_client: Client,
    admin_headers: dict[str, str],
    ingest_client: aiohttp.ClientSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    redis: ArqRedis,
) -> None:
    gone = await add_device(sessions, "phone-6")
    kept = await add_device(sessions, "phone-7")
    assert (await report(ingest_client, "phone-6", 0, result="late"))[0] == 200
    command = await (await send(admin_client, admin_headers, deviceId=kept, type="positionStop")).json()
    await asyncio.sleep(queue.INBOX_REFRESH_S + 0.1)
    assert (await report(ingest_client, "phone-7", 0)) == (200, "stop")
    assert (await admin_client.delete(f"/api/devices/{gone}", headers=admin_headers)).status == 204
    await enqueue(redis, RECORD_COMMAND_UPDATES)
    await run_burst(settings, COMMANDS)
    assert (await command_of(admin_client, admin_headers, command["id"]))["state"] == "sent"
    assert await redis.xlen(queue.UPDATES_KEY) == 0
    assert await events_of(sessions, "commandResult") == []


async def test_only_an_admin_points_a_device_at_a_gateway_and_its_secret_is_never_shown(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    device = await add_device(sessions, "tracker-3", owner=users.user)
    headers = bearer(USER_TOKEN)
    hijack = {"attributes": {"commandGateway": "https://gateway.example.com/hook"}}
    refused = await admin_client.put(f"/api/devices/{device}", json=hijack, headers=headers)
    assert refused.status == 403
    assert (await error_of(refused))["message"].startswith("attributes.commandGateway")
    gateway = {"commandGateway": "https://gateway.example.com/hook", "commandGatewaySecret": "s3cret"}
    set_by_admin = await admin_client.put(f"/api/devices/{device}", json={"attributes": gateway}, headers=admin_headers)
    assert (await set_by_admin.json())["attributes"]["commandGatewaySecret"] == "********"
    shown = await (await admin_client.get(f"/api/devices/{device}", headers=headers)).json()
    assert shown["attributes"] == {**gateway, "commandGatewaySecret": "********"}
    # The user changes another attribute, sending back what they were shown: the gateway stays as it was.
    renamed = {"attributes": {**shown["attributes"], "color": "red"}}
    assert (await admin_client.put(f"/api/devices/{device}", json=renamed, headers=headers)).status == 200
    async with sessions() as session:
        stored = (await session.execute(select(Device.attributes).where(col(Device.id) == device))).scalar()
    assert stored == {**gateway, "color": "red"}
    stolen = {"attributes": {**shown["attributes"], "commandGatewaySecret": "mine"}}
    assert (await admin_client.put(f"/api/devices/{device}", json=stolen, headers=headers)).status == 403
