"""The task API against the real worker: records from enqueue to end, failures, retries, timeouts,
cancelling waiting and running jobs, retrying, running by hand, and who may see what."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.client import bearer
from tests.support.factories import OTHER_TOKEN, USER_TOKEN, Users
from tests.support.probes import run_cleanup_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import utcnow
from tracker_jobs.jobs.base import enqueue, queue_key
from tracker_jobs.jobs.heartbeat import CURRENT_PROCESS
from tracker_jobs.jobs.models import JobRecord
from tracker_jobs.jobs.records import HANDOVER_KEY, JobRun, RecordBatch, announce_changes, write_now
from tracker_jobs.jobs.refs import CLEANUP, JOBS
from tracker_jobs.worker import build_worker, queue_functions, wind_down

Client = TestClient[Any, Any]


async def task(client: Client, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/tasks/task/{task_id}", headers=headers)
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await response.json()
    return found


async def run_ping(client: Client, headers: dict[str, str], **arguments: Any) -> str:
    response = await client.post("/api/tasks/run/ping", json=arguments, headers=headers)
    assert response.status == 202, await response.text()
    task_id: str = (await response.json())["task_id"]
    return task_id


async def wait_for_state(client: Client, headers: dict[str, str], task_id: str, state: str) -> dict[str, Any]:
    for _ in range(200):
        found = await task(client, headers, task_id)
        if found["state"] == state:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {state}: {found}")


async def test_a_job_is_recorded_from_enqueue_to_end(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings, redis: ArqRedis
) -> None:
    task_id = await run_ping(admin_client, admin_headers, seconds=0.2, steps=2)
    queued = await task(admin_client, admin_headers, task_id)  # readable at once, before any worker ran
    assert queued["state"] == "queued"
    assert (queued["name"], queued["queue"], queued["args"]) == ("ping", CLEANUP, {"seconds": 0.2, "steps": 2})
    assert queued["userId"] == 1
    assert queued["startedAt"] is None

    await run_cleanup_burst(settings)

    done = await task(admin_client, admin_headers, task_id)
    assert done["state"] == "complete"
    assert done["tries"] == 1
    assert done["worker"] == CURRENT_PROCESS.key
    assert done["durationS"] >= 0.2
    assert done["progress"] == {"percent": 100.0, "message": "step 2 of 2"}
    assert done["result"] == {"slept": 0.2, "steps": 2}
    assert done["error"] is None
    assert done["enqueuedAt"] <= done["startedAt"] <= done["finishedAt"]

    listed = await (await admin_client.get("/api/tasks?state=complete&name=ping", headers=admin_headers)).json()
    assert [found["id"] for found in listed] == [task_id]
    elsewhere = await (await admin_client.get("/api/tasks?queue=positions", headers=admin_headers)).json()
    assert elsewhere == []


async def test_failures_retries_and_timeouts_are_recorded(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings, redis: ArqRedis
) -> None:
    ids = {}
    for name, arguments in [("probe_transient_failure", {}), ("probe_timeout", {}), ("ping", {"seconds": -1})]:
        job = await enqueue(redis, JOBS[name], **arguments)
        assert job is not None
        ids[name] = job.job_id
    await run_cleanup_burst(settings)

    outage = await task(admin_client, admin_headers, ids["probe_transient_failure"])
    assert (outage["state"], outage["tries"]) == ("failed", 2)  # retried once, then out of tries
    assert outage["error"]["type"] == "ConnectionError"
    assert "a pretend outage" in outage["error"]["traceback"]
    timeout = await task(admin_client, admin_headers, ids["probe_timeout"])
    assert (timeout["state"], timeout["error"]["type"]) == ("failed", "JobTimeout")
    assert 1 <= timeout["durationS"] < 5
    refused = await task(admin_client, admin_headers, ids["ping"])
    assert refused["error"]["message"] == "seconds: must be from 0 to 3600"

    stats = await (await admin_client.get("/api/tasks/stats?window=1h", headers=admin_headers)).json()
    by_name = {entry["name"]: entry for entry in stats}
    assert by_name["probe_transient_failure"]["counts"]["retried"] == 1
    assert by_name["probe_transient_failure"]["counts"]["failed"] == 1
    assert by_name["probe_transient_failure"]["failureRate"] == 1.0
    assert by_name["probe_timeout"]["durationS"]["max"] >= 1


async def test_records_handed_over_by_a_process_without_a_flusher(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    job = await enqueue(redis, JOBS["ping"], user_id=users.user)  # no app here: nothing in this process writes records
    assert job is not None
    assert await redis.llen(HANDOVER_KEY) == 1  # type: ignore[misc]
    await run_cleanup_burst(settings)  # the worker's flusher takes it over
    assert await redis.llen(HANDOVER_KEY) == 0  # type: ignore[misc]
    async with sessions() as session:
        record = await session.get(JobRecord, job.job_id)
    assert record is not None
    assert (record.state, record.user_id) == ("complete", users.user)


async def test_run_by_hand_checks_the_arguments(admin_client: Client, admin_headers: dict[str, str]) -> None:
    jobs = await (await admin_client.get("/api/tasks/jobs", headers=admin_headers)).json()
    ping = next(job for job in jobs if job["name"] == "ping")
    assert ping["parameters"] == [
        {"name": "seconds", "type": "number", "required": False, "default": 0.0},
        {"name": "steps", "type": "integer", "required": False, "default": 1},
    ]
    for body, field in [
        ({"seconds": "soon"}, "seconds"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"colour": "red"}, "colour"),
    ]:
        response = await admin_client.post("/api/tasks/run/ping", json=body, headers=admin_headers)
        assert response.status == 400, body
        assert (await response.json())["error"]["message"].startswith(f"{field}:")
    for name in ["send_webhook", "no_such_job"]:  # a real job that is not runnable by hand, and nonsense
        response = await admin_client.post(f"/api/tasks/run/{name}", json={}, headers=admin_headers)
        assert response.status == 404
    without_body = await admin_client.post("/api/tasks/run/cleanup_expired_sessions", headers=admin_headers)
    assert without_body.status == 202


async def test_cancel_a_waiting_and_a_running_job(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings, redis: ArqRedis
) -> None:
    waiting = await run_ping(admin_client, admin_headers)
    cancelled = await admin_client.delete(f"/api/tasks/task/{waiting}", headers=admin_headers)
    assert cancelled.status == 200
    assert (await cancelled.json())["state"] == "cancelled"
    assert await redis.zcard(queue_key(CLEANUP)) == 0
    again = await admin_client.delete(f"/api/tasks/task/{waiting}", headers=admin_headers)
    assert again.status == 409

    running = await run_ping(admin_client, admin_headers, seconds=20, steps=20)
    burst = asyncio.create_task(run_cleanup_burst(settings))
    seen = await wait_for_state(admin_client, admin_headers, running, "in_progress")
    assert seen["worker"] == CURRENT_PROCESS.key
    stopped = await admin_client.delete(f"/api/tasks/task/{running}", headers=admin_headers)
    assert stopped.status == 200
    await asyncio.wait_for(burst, 10)  # the job saw the abort and stopped, long before its 20 s
    final = await task(admin_client, admin_headers, running)
    assert final["state"] == "cancelled"
    assert final["error"]["message"] == "cancelled by user 1 while it ran"


async def test_retry_one_and_retry_every_failed(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings, redis: ArqRedis
) -> None:
    failed = [await run_ping(admin_client, admin_headers, seconds=-1) for _ in range(3)]
    complete = await run_ping(admin_client, admin_headers)
    await run_cleanup_burst(settings)

    retried = await admin_client.post(f"/api/tasks/task/{failed[0]}/retry", headers=admin_headers)
    assert retried.status == 202
    new_id = (await retried.json())["task_id"]
    again = await admin_client.post(f"/api/tasks/task/{failed[0]}/retry", headers=admin_headers)
    assert again.status == 409
    assert new_id in (await again.json())["error"]["message"]
    not_failed = await admin_client.post(f"/api/tasks/task/{complete}/retry", headers=admin_headers)
    assert not_failed.status == 409
    copy = await task(admin_client, admin_headers, new_id)
    assert (copy["state"], copy["args"]) == ("queued", {"seconds": -1})
    assert (await task(admin_client, admin_headers, failed[0]))["retriedAs"] == new_id

    every = await admin_client.post("/api/tasks/retry-failed?name=ping", headers=admin_headers)
    assert every.status == 202
    body = await every.json()
    assert body["count"] == 2
    assert {(await task(admin_client, admin_headers, old))["retriedAs"] for old in failed[1:]} == set(body["task_ids"])
    nothing_left = await (await admin_client.post("/api/tasks/retry-failed", headers=admin_headers)).json()
    assert nothing_left == {"task_ids": [], "count": 0}


async def test_tasks_are_found_by_text_in_their_arguments(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings
) -> None:
    slow = await run_ping(admin_client, admin_headers, seconds=0.5, steps=5)
    quick = await run_ping(admin_client, admin_headers, steps=7)
    failed = await run_ping(admin_client, admin_headers, seconds=-1)
    await run_cleanup_burst(settings)

    async def found(query: str) -> list[str]:
        response = await admin_client.get(f"/api/tasks?{query}", headers=admin_headers)
        assert response.status == 200, await response.text()
        return [listed["id"] for listed in await response.json()]

    assert await found("q=steps") == [quick, slow]  # newest first
    assert await found('q="steps": 7') == [quick]
    assert await found("q=seconds&state=failed") == [failed]
    assert await found("q=%25") == []  # LIKE's wildcards are plain text here
    assert await found("q=_") == []
    too_long = await admin_client.get(f"/api/tasks?q={'x' * 201}", headers=admin_headers)
    assert too_long.status == 400
    assert "q:" in (await too_long.json())["error"]["message"]
    # "Retry every failed task that matches" takes the search too.
    assert (await (await admin_client.post("/api/tasks/retry-failed?q=steps", headers=admin_headers)).json())[
        "count"
    ] == 0
    retried = await (await admin_client.post("/api/tasks/retry-failed?q=-1", headers=admin_headers)).json()
    assert retried["count"] == 1


async def test_sockets_that_ask_are_told_of_task_changes_each_user_only_of_their_own(
    admin_client: Client,
    admin_headers: dict[str, str],
    settings: Settings,
    redis: ArqRedis,
    users: Users,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def changes(ws: Any) -> list[dict[str, Any]]:
        while True:  # past the devices and positions every socket gets on connect
            message = orjson.loads((await ws.receive(timeout=10.0)).data)
            if "tasks" in message:
                found: list[dict[str, Any]] = message["tasks"]
                return found

    async with (
        admin_client.ws_connect("/api/socket?tasks=true", headers=admin_headers) as admin_ws,
        admin_client.ws_connect(f"/api/socket?tasks=true&token={USER_TOKEN}") as user_ws,
        admin_client.ws_connect("/api/socket", headers=admin_headers) as plain_ws,
    ):
        for ws in (admin_ws, user_ws, plain_ws):
            assert "devices" in orjson.loads((await ws.receive(timeout=10.0)).data)
            assert "positions" in orjson.loads((await ws.receive(timeout=10.0)).data)
        admins = await run_ping(admin_client, admin_headers, steps=2)
        told = await changes(admin_ws)
        assert [(c["id"], c["name"], c["state"]) for c in told] == [(admins, "ping", "queued")]
        users_job = await enqueue(redis, JOBS["ping"], user_id=users.user)
        assert users_job is not None
        await run_cleanup_burst(settings)
        seen: dict[str, str] = {}
        while seen.get(admins) != "complete" or seen.get(users_job.job_id) != "complete":
            seen.update((c["id"], c["state"]) for c in await changes(admin_ws))
        own = {c["id"] for c in await changes(user_ws)}
        assert own == {users_job.job_id}  # never the admin's task
        with pytest.raises(asyncio.TimeoutError):
            await plain_ws.receive(timeout=0.5)  # a socket that did not ask (Traccar's clients) hears nothing

    # A user promoted to admin hears every task; demoted again, only their own, at once.
    user = bearer(USER_TOKEN)
    promoted = await admin_client.put(f"/api/users/{users.user}", json={"role": "admin"}, headers=admin_headers)
    assert promoted.status == 200
    async with admin_client.ws_connect(f"/api/socket?tasks=true&token={USER_TOKEN}") as ws:
        for _ in range(2):
            await ws.receive(timeout=10.0)  # devices, positions
        admins = await run_ping(admin_client, admin_headers)
        assert {c["id"] for c in await changes(ws)} == {admins}
        demoted = await admin_client.put(f"/api/users/{users.user}", json={"role": "user"}, headers=admin_headers)
        assert demoted.status == 200
        await run_ping(admin_client, admin_headers)
        own = await enqueue(redis, JOBS["ping"], user_id=users.user)
        assert own is not None
        assert {c["id"] for c in await changes(ws)} == {own.job_id}  # the admin's second ping never came
    assert (await admin_client.get("/api/session", headers=user)).status == 200

    # A worker in another process writes a job's record without its owner (only the enqueuing process
    # knew it): the user is told all the same, the owner read from the record.
    async with admin_client.ws_connect(f"/api/socket?tasks=true&token={USER_TOKEN}") as ws:
        for _ in range(2):
            await ws.receive(timeout=10.0)  # devices, positions
        queued = JobRun("theirs-by-record", "ping", CLEANUP, {}, utcnow(), user_id=users.user)
        batch = RecordBatch()
        batch.put(queued)
        await write_now(sessions, batch)
        from_worker = JobRun("theirs-by-record", "ping", CLEANUP, {}, utcnow(), state="complete", tries=1)
        await announce_changes(redis, [from_worker])
        told = await changes(ws)
        assert [(c["id"], c["state"], c["userId"]) for c in told] == [("theirs-by-record", "complete", users.user)]

    bad = await admin_client.get("/api/socket?tasks=yes", headers=admin_headers)
    assert bad.status == 400
    assert "tasks:" in (await bad.json())["error"]["message"]


async def test_users_see_and_steer_only_their_own_tasks(
    admin_client: Client, admin_headers: dict[str, str], redis: ArqRedis, users: Users
) -> None:
    mine = await enqueue(redis, JOBS["ping"], user_id=users.user)
    theirs = await enqueue(redis, JOBS["ping"], user_id=users.other)
    admins = await run_ping(admin_client, admin_headers)
    assert mine is not None
    assert theirs is not None
    user = bearer(USER_TOKEN)

    listed = await (await admin_client.get("/api/tasks", headers=user)).json()
    assert [found["id"] for found in listed] == [mine.job_id]
    everything = await (await admin_client.get("/api/tasks", headers=admin_headers)).json()
    assert {found["id"] for found in everything} == {mine.job_id, theirs.job_id, admins}
    for task_id in [theirs.job_id, admins, "no-such-task", "../../etc", "x" * 65]:
        assert (await admin_client.get(f"/api/tasks/task/{task_id}", headers=user)).status == 404, task_id
        assert (await admin_client.delete(f"/api/tasks/task/{task_id}", headers=user)).status == 404, task_id
        assert (await admin_client.post(f"/api/tasks/task/{task_id}/retry", headers=user)).status == 404, task_id
    assert (await admin_client.delete(f"/api/tasks/task/{mine.job_id}", headers=user)).status == 200
    assert (await task(admin_client, bearer(OTHER_TOKEN), theirs.job_id))["state"] == "queued"
    for path in ["/api/tasks/status", "/api/tasks/queues", "/api/tasks/workers", "/api/tasks/stats", "/api/tasks/jobs"]:
        assert (await admin_client.get(path, headers=user)).status == 403, path
    assert (await admin_client.post("/api/tasks/run/ping", json={}, headers=user)).status == 403


async def test_status_queues_and_workers_while_a_worker_runs(
    admin_client: Client, admin_headers: dict[str, str], settings: Settings, redis: ArqRedis
) -> None:
    task_id = await run_ping(admin_client, admin_headers, seconds=20, steps=20)
    waiting = await (await admin_client.get("/api/tasks/queues", headers=admin_headers)).json()
    cleanup = next(queue for queue in waiting if queue["name"] == CLEANUP)
    assert (cleanup["length"], cleanup["waiting"], cleanup["running"], cleanup["workers"]) == (1, 1, 0, 0)
    assert cleanup["oldestWaitingAgeS"] >= 0
    health = await (await admin_client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["queues"][CLEANUP]["backlog"] == 1
    assert health["alerts"] == ["cleanup: jobs waiting and no live worker serves the queue"]

    assert settings.redis_url is not None
    worker = build_worker(
        CLEANUP,
        settings.redis_url,
        handle_signals=False,
        poll_delay=0.05,
        ctx={"settings": settings},
        functions=queue_functions(CLEANUP),
    )
    run = asyncio.create_task(worker.async_run())
    try:
        await wait_for_state(admin_client, admin_headers, task_id, "in_progress")
        status = await (await admin_client.get("/api/tasks/status", headers=admin_headers)).json()
        assert status["workers"] == {"live": 1, "lost": 0}
        assert status["queues"][CLEANUP]["in_progress"] == 1
        assert [found["id"] for found in status["running"]] == [task_id]
        workers = await (await admin_client.get("/api/tasks/workers", headers=admin_headers)).json()
        assert [(found["pid"], found["queues"], found["state"]) for found in workers] == [
            (CURRENT_PROCESS.pid, [CLEANUP], "live")
        ]
        assert [running["id"] for running in workers[0]["running"]] == [task_id]
        queues = await (await admin_client.get("/api/tasks/queues", headers=admin_headers)).json()
        cleanup = next(queue for queue in queues if queue["name"] == CLEANUP)
        assert (cleanup["waiting"], cleanup["running"], cleanup["workers"]) == (0, 1, 1)
        assert (await (await admin_client.get("/health")).json())["status"] == "healthy"
        for _ in range(60):  # the first of 20 steps ends after a second; its progress is read live from Redis
            progress = (await task(admin_client, admin_headers, task_id))["progress"]
            if progress["percent"]:
                break
            await asyncio.sleep(0.05)
        assert progress["message"].startswith("step ")
    finally:
        worker.handle_sig(15)
        await asyncio.gather(run, return_exceptions=True)
        await wind_down(worker)
        await worker.close()
    interrupted = await task(admin_client, admin_headers, task_id)
    assert interrupted["state"] == "retrying"  # the worker stopped mid-job: arq runs it again later
    assert interrupted["error"]["type"] == "JobInterrupted"
