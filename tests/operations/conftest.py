"""Fixtures of the operations tests: two `user` accounts beside the bootstrap admin, and a real
`tracker-jobs admin` process for the tests that talk to it over HTTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import ADMIN_TOKEN
from tests.processes import engine_env, running, tracker_jobs_command
from tests.test_admin_api import make_user

USER_TOKEN = "ops-user-token"
OTHER_TOKEN = "ops-other-user-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Users:
    user: int  # holds USER_TOKEN
    other: int  # holds OTHER_TOKEN


@pytest.fixture
async def users(sessions: async_sessionmaker[AsyncSession]) -> Users:
    return Users(
        user=await make_user(sessions, "user@example.com", token=USER_TOKEN, password="user password"),
        other=await make_user(sessions, "other@example.com", token=OTHER_TOKEN),
    )


@dataclass
class AdminProcess:
    """A running `tracker-jobs admin` (bootstrap admin: ADMIN_TOKEN) and the file its output goes to."""

    url: str
    port: int
    log: Path
    process: subprocess.Popen[str]
    _read: int = 0

    def new_log(self) -> str:
        """The output written since the last call: read right after a request, that request's log lines."""
        with self.log.open("rb") as output:
            output.seek(self._read)
            written = output.read()
        self._read += len(written)
        return written.decode(errors="replace")


@contextmanager
def admin_process(directory: Path, database_url: str, redis_url: str, **variables: str) -> Iterator[AdminProcess]:
    """`tracker-jobs migrate`, then `tracker-jobs admin` on free ports until the block ends; it must exit cleanly."""
    env = engine_env(
        TRACKER_DATABASE_URL=database_url, TRACKER_REDIS_URL=redis_url, TRACKER_ADMIN_TOKEN=ADMIN_TOKEN, **variables
    )
    subprocess.run(tracker_jobs_command("migrate"), cwd=directory, env=env, check=True, capture_output=True)
    port = int(env["TRACKER_ADMIN_PORT"])
    url = f"http://127.0.0.1:{port}"
    command = tracker_jobs_command("admin")
    with running(command, directory, env) as process:
        # `running` names the file after the program and the time; the newest such file is this process's.
        log = max(directory.glob(f"{Path(command[0]).name}-*.log"), key=lambda path: path.stat().st_mtime_ns)
        _wait_until_healthy(url, process, log)
        yield AdminProcess(url, port, log, process)
    assert process.returncode == 0, process.output  # type: ignore[attr-defined]


def _wait_until_healthy(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"tracker-jobs admin did not become healthy:\n{log.read_text(errors='replace')}")


@pytest.fixture
def admin_url(tmp_path: Path, redis_url: str, redis: ArqRedis) -> Iterator[str]:
    """A real admin process on a fresh SQLite database; `redis` flushes the test Redis around it."""
    with admin_process(tmp_path, f"sqlite:///{tmp_path / 'api.db'}", redis_url) as admin:
        yield admin.url
