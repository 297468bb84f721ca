"""Commands end to end with the real processes (`tracker-jobs up` on its embedded default): one sent
through the API reaches a phone in a real OsmAnd reply and one reaches a real local gateway; each
result comes back tied to its command; the commands queue is counted with the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.processes import engine_env, listening, running, tracker_jobs_command, wait_for
from tests.support.receivers import webhook_receiver
from tests.support.services import ADMIN_TOKEN

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_commands_reach_a_phone_and_a_gateway_and_their_results_come_back(tmp_path: Path) -> None:
    env = engine_env(TRACKER_ADMIN_TOKEN=ADMIN_TOKEN, TRACKER_WEBHOOK_ALLOW_PRIVATE="1")
    admin = f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}"
    listener = f"http://127.0.0.1:{env['TRACKER_OSMAND_PORT']}"
    with running(tracker_jobs_command("up"), tmp_path, env) as up:
        async with aiohttp.ClientSession() as http, webhook_receiver() as gateway:

            async def healthy() -> bool:
                async with http.get(f"{admin}/health") as response:
                    return response.status == 200 and (await response.json())["status"] == "healthy"

            await wait_for(healthy, 30, "a healthy engine")
            await wait_for(lambda: listening(http, listener), 20, "the device listener")

            async def post(path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
                async with http.post(f"{admin}{path}", json=body, headers=HEADERS) as response:
                    assert response.status == status, await response.text()
                    answer: dict[str, Any] = await response.json()
                    return answer

            async def command(command_id: int) -> dict[str, Any]:
                async with http.get(f"{admin}/api/commands/{command_id}", headers=HEADERS) as response:
                    found: dict[str, Any] = await response.json()
                    return found

            phone = await post("/api/devices", {"uniqueId": "e2e-phone", "name": "phone"}, 201)
            tracker = await post(
                "/api/devices",
                {"uniqueId": "e2e-tracker", "name": "tracker", "attributes": {"commandGateway": gateway.url}},
                201,
            )

            # The phone: its next OsmAnd reply carries the command.
            periodic = await post(
                "/api/commands/send",
                {"deviceId": phone["id"], "type": "positionPeriodic", "attributes": {"frequency": 60}},
                202,
            )
            second = 1_767_225_600

            async def reply() -> str:
                nonlocal second
                second += 1
                async with http.get(f"{listener}/?id=e2e-phone&lat=59.3&lon=18.0&timestamp={second}") as answer:
                    assert answer.status == 200
                    return await answer.text()

            assert await wait_for(reply, 10, "a reply carrying the command") == "frequency=60"
            assert await reply() == ""  # once only
            async with http.get(f"{listener}/?id=e2e-phone&lat=59.3&lon=18.0&timestamp={second + 1}&result=ok") as r:
                assert r.status == 200

            async def answered(command_id: int) -> dict[str, Any] | None:
                found = await command(command_id)
                return found if found["state"] == "answered" else None

            done = await wait_for(lambda: answered(periodic["id"]), 10, "the phone's result")
            assert done["result"] == "ok"

            # The tracker behind a gateway: the gateway is sent the command, then reports the result.
            stop = await post("/api/commands/send", {"deviceId": tracker["id"], "type": "engineStop"}, 202)
            await wait_for(lambda: _received(gateway), 10, "the command at the gateway")
            assert orjson.loads(gateway.received[0].body)["id"] == stop["id"]

            async def sent(command_id: int) -> bool:
                return (await command(command_id))["state"] == "sent"

            await wait_for(lambda: sent(stop["id"]), 10, "the gateway's command sent")
            answer = await post(f"/api/commands/{stop['id']}/result", {"result": "stopped"}, 200)
            assert (answer["state"], answer["result"]) == ("answered", "stopped")

            async with http.get(f"{admin}/api/tasks/queues", headers=HEADERS) as response:
                queues = {queue["name"]: queue for queue in await response.json()}
            assert queues["commands"]["workers"] >= 1  # the fifth queue, served by `up`'s worker
    assert up.returncode == 0, up.output  # type: ignore[attr-defined]


async def _received(gateway: Any) -> bool:
    return bool(gateway.received)
