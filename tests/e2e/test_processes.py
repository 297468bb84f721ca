"""End to end with the real processes: `tracker-jobs up`, the arq CLI, `tracker-jobs worker`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from arq.connections import ArqRedis

from tests.support.processes import (
    children_of,
    clean_env,
    engine_env,
    listening,
    running,
    tracker_jobs_command,
    wait_for,
)
from tests.support.services import ADMIN_TOKEN
from tracker_jobs.cli import _open_door_warning
from tracker_jobs.core.config import load_settings
from tracker_jobs.jobs.heartbeat import live_workers

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def report_and_read_back(env: dict[str, str]) -> dict[str, Any]:
    """Wait for a healthy engine, send one OsmAnd request, return the position read through the API."""
    admin = f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}"
    listener = f"http://127.0.0.1:{env['TRACKER_OSMAND_PORT']}"
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            async with http.get(f"{admin}/health") as response:
                return response.status == 200 and (await response.json())["status"] == "healthy"

        await wait_for(healthy, 20, "a healthy engine")
        await wait_for(lambda: listening(http, listener), 20, "the device listener")
        async with http.get(f"{listener}/?id=e2e-phone&lat=59.33&lon=18.06&timestamp=1767225600&speed=3") as sent:
            assert sent.status == 200

        async def stored() -> list[dict[str, Any]]:
            async with http.get(f"{admin}/api/positions", headers=HEADERS) as response:
                assert response.status == 200
                found: list[dict[str, Any]] = await response.json()
                return found

        positions = await wait_for(stored, 10, "the position in the API")
    assert len(positions) == 1
    position: dict[str, Any] = positions[0]
    assert (position["latitude"], position["longitude"], position["speed"]) == (59.33, 18.06, 3.0)
    return position


async def test_up_on_the_embedded_default(tmp_path: Path) -> None:
    env = engine_env(TRACKER_ADMIN_TOKEN=ADMIN_TOKEN)
    with running(tracker_jobs_command("up"), tmp_path, env) as up:
        await report_and_read_back(env)
        descendants = children_of(up.pid)
        assert len(descendants) >= 3  # embedded Redis, worker, admin app
    assert up.returncode == 0, up.output  # type: ignore[attr-defined]
    output: str = up.output  # type: ignore[attr-defined]
    assert "tracker-jobs is up" in output
    # One line per process naming the signal it got; arq's per-queue shutdown lines and each job's
    # start and finish are routine (DEBUG), not for a person reading the log.
    for role in ("tracker-jobs", "worker", "admin API", "device listener"):
        assert output.count(f"{role} stopping on SIGTERM") == 1, output
    assert "shutdown on" not in output
    assert " → " not in output
    assert (tmp_path / "tracker.db").is_file()
    assert (tmp_path / "tracker-redis" / "appendonly.aof").exists()
    time.sleep(0.5)
    assert [pid for pid in descendants if Path(f"/proc/{pid}").exists()] == []  # no orphans


async def test_up_on_postgresql_and_external_redis(
    tmp_path: Path, clean_postgres_url: str, redis_url: str, redis: ArqRedis
) -> None:
    env = engine_env(
        TRACKER_DATABASE_URL=clean_postgres_url,
        TRACKER_REDIS_URL=redis_url,
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
        TRACKER_AUTO_REGISTER="true",
    )
    with running(tracker_jobs_command("up"), tmp_path, env) as up:
        await report_and_read_back(env)
    assert up.returncode == 0, up.output  # type: ignore[attr-defined]
    assert not (tmp_path / "tracker-redis").exists()


async def test_arq_cli_worker_and_a_two_queue_worker_store_positions(
    tmp_path: Path, redis_url: str, redis: ArqRedis
) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    base = engine_env(
        TRACKER_DATABASE_URL=database,
        TRACKER_REDIS_URL=redis_url,
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
        TRACKER_AUTO_REGISTER="true",
    )
    subprocess.run(tracker_jobs_command("migrate"), cwd=tmp_path, env=base, check=True, capture_output=True)
    arq = str(Path(sys.executable).with_name("arq"))
    with (
        running(tracker_jobs_command("admin"), tmp_path, base),
        running(tracker_jobs_command("listener"), tmp_path, base),
        running([arq, "tracker_jobs.worker.PositionsWorker"], tmp_path, base),
        running(tracker_jobs_command("worker", "--queues", "positions,cleanup"), tmp_path, base),
    ):
        await report_and_read_back(base)

        async def both_workers() -> list[tuple[str, ...]]:
            queues = sorted(tuple(worker["queues"]) for worker in await live_workers(redis))
            return queues if queues == [("cleanup", "positions"), ("positions",)] else []

        queues = await wait_for(both_workers, 10, "an arq CLI worker and a two-queue worker")
        assert queues == [("cleanup", "positions"), ("positions",)]


@pytest.mark.parametrize("command", ["worker", "admin", "listener"])
def test_unreachable_redis_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    env = clean_env(TRACKER_REDIS_URL="redis://127.0.0.1:1/0", TRACKER_DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    result = subprocess.run(
        tracker_jobs_command(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1].startswith("tracker-jobs: cannot reach Redis at redis://127.0.0.1:1/0")
    )
    assert "Traceback" not in result.stderr


def test_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    env = clean_env(TRACKER_ADMIN_PORT="eighty")
    result = subprocess.run(
        tracker_jobs_command("up"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "tracker-jobs: TRACKER_ADMIN_PORT: expected a whole number, got 'eighty'"


def test_unreachable_database_is_a_one_line_error(tmp_path: Path) -> None:
    env = clean_env(TRACKER_DATABASE_URL="postgresql://postgres:secret@127.0.0.1:1/none")
    result = subprocess.run(
        tracker_jobs_command("migrate"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("tracker-jobs: cannot reach the database at postgresql://postgres:***@127.0.0.1:1")
    )
    assert "secret" not in result.stderr


def test_an_unmigrated_database_is_a_one_line_error(tmp_path: Path, redis_url: str) -> None:
    env = clean_env(TRACKER_REDIS_URL=redis_url, TRACKER_DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    result = subprocess.run(
        tracker_jobs_command("admin"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is not at the newest schema: run `tracker-jobs migrate` first")
    assert "Traceback" not in result.stderr


def test_the_banner_says_when_anyone_can_register_a_device() -> None:
    everyone = load_settings(clean_env(TRACKER_HOST="0.0.0.0"))
    assert everyone.auto_register  # the embedded default
    note = _open_door_warning(everyone)
    assert note is not None
    assert "TRACKER_HOST=127.0.0.1" in note
    assert "TRACKER_AUTO_REGISTER=false" in note
    assert _open_door_warning(load_settings(clean_env(TRACKER_HOST="127.0.0.1"))) is None
    assert _open_door_warning(load_settings(clean_env(TRACKER_AUTO_REGISTER="false"))) is None
