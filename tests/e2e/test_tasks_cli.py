"""The `tasks` command line against real processes: `tracker-jobs up` on the embedded default, and
separate admin and worker processes on PostgreSQL; records survive restarting every process and
losing everything in Redis."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from arq.connections import ArqRedis

from tests.support.processes import engine_env, running, tracker_jobs_command
from tests.support.services import ADMIN_TOKEN


def tasks(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tracker_jobs_command("tasks", *args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def tasks_json(env: dict[str, str], cwd: Path, *args: str) -> Any:
    result = tasks(env, cwd, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(probe: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def api(env: dict[str, str], path: str) -> Any:
    """Read the admin API directly: cheaper than the command line for waiting on something."""
    try:
        response = requests.get(
            f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}{path}",
            timeout=5,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    except requests.ConnectionError:
        return None
    return response.json() if response.status_code == 200 else None


def healthy(env: dict[str, str]) -> bool:
    return any(worker["state"] == "live" for worker in api(env, "/api/tasks/workers") or [])


def test_tasks_commands_on_the_embedded_default_and_after_a_restart(tmp_path: Path) -> None:
    env = engine_env(TRACKER_ADMIN_TOKEN=ADMIN_TOKEN)
    with running(tracker_jobs_command("up"), tmp_path, env) as up:
        wait_until(lambda: healthy(env), 30, "a live worker")
        ran = tasks(env, tmp_path, "run", "ping", "--arg", "seconds=1", "--arg", "steps=4", "--wait")
        assert ran.returncode == 0, ran.stderr
        assert "100.0% complete" in ran.stderr  # the progress bar, fed by the job's progress
        task_id = next(line.split()[1] for line in ran.stdout.splitlines() if line.startswith("id:"))
        assert "step 4 of 4" in ran.stdout

        # The job's own record says complete at once; the counts read records written in batches (<= ~1 s).
        status = wait_until(
            lambda: (found := tasks_json(env, tmp_path, "status"))["queues"]["cleanup"]["complete"] >= 1 and found,
            10,
            "the status counts to include the finished ping",
        )
        assert status["workers"]["live"] == 1
        assert task_id in [found["id"] for found in tasks_json(env, tmp_path, "list", "--name", "ping")]
        for command, heading in [("queues", "QUEUE"), ("workers", "WORKER"), ("stats", "NAME")]:
            shown = tasks(env, tmp_path, command)
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout.startswith(heading)
        before = tasks_json(env, tmp_path, "show", task_id)
        tokenless = tasks({**env, "TRACKER_ADMIN_TOKEN": ""}, tmp_path, "status")
        assert tokenless.returncode == 1
        assert "401" in tokenless.stderr
        assert "--token or TRACKER_ADMIN_TOKEN" in tokenless.stderr  # it says how to give one
    assert up.returncode == 0, up.output  # type: ignore[attr-defined]

    with running(tracker_jobs_command("up"), tmp_path, env):  # worker, admin app and Redis all start anew
        wait_until(lambda: healthy(env), 30, "a live worker again")
        assert tasks_json(env, tmp_path, "show", task_id) == before  # the command line reads it as before
    missing = tasks(env, tmp_path, "show", "no-such-task")
    assert missing.returncode == 1
    assert "cannot reach the admin API" in missing.stderr  # everything has stopped


async def test_cancel_retry_and_records_that_outlive_redis_on_postgresql(
    tmp_path: Path, clean_postgres_url: str, redis_url: str, redis: ArqRedis
) -> None:
    env = engine_env(
        TRACKER_DATABASE_URL=clean_postgres_url, TRACKER_REDIS_URL=redis_url, TRACKER_ADMIN_TOKEN=ADMIN_TOKEN
    )
    subprocess.run(tracker_jobs_command("migrate"), cwd=tmp_path, env=env, check=True, capture_output=True)

    def serve() -> Any:
        return running(tracker_jobs_command("admin"), tmp_path, env), running(
            tracker_jobs_command("worker"), tmp_path, env
        )

    admin, worker = serve()
    with admin, worker:
        wait_until(lambda: healthy(env), 30, "a live worker")
        long = tasks_json(env, tmp_path, "run", "ping", "--arg", "seconds=30", "--arg", "steps=30")["task_id"]
        wait_until(lambda: api(env, f"/api/tasks/task/{long}")["state"] == "in_progress", 10, "the job to start")
        cancelled = tasks_json(env, tmp_path, "cancel", long)
        assert cancelled["state"] == "cancelled"
        retried = tasks_json(env, tmp_path, "retry", long)["task_id"]
        assert tasks_json(env, tmp_path, "cancel", retried)["state"] == "cancelled"
        failing = tasks(env, tmp_path, "run", "ping", "--arg", "seconds=-1", "--wait", "--json")
        assert failing.returncode == 1
        failed = json.loads(failing.stdout)
        assert (failed["state"], failed["error"]["type"]) == ("failed", "ValueError")
        refused = tasks(env, tmp_path, "run", "ping", "--arg", "steps=many")
        assert refused.returncode == 1
        assert "steps: must be integer" in refused.stderr
        records = {task_id: api(env, f"/api/tasks/task/{task_id}") for task_id in (long, retried, failed["id"])}

    await redis.flushdb()
    admin, worker = serve()
    with admin, worker:  # a new admin app and worker, and a Redis that has forgotten everything
        wait_until(lambda: healthy(env), 30, "a live worker again")
        for task_id, record in records.items():
            assert api(env, f"/api/tasks/task/{task_id}") == record
        assert tasks_json(env, tmp_path, "status")["queues"]["cleanup"]["cancelled"] == 2
