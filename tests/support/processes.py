"""Starting the engine's real processes for the tests that need them (end to end, faults, the admin app over
HTTP), and waiting on them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import requests

from tests.support.services import ADMIN_TOKEN
from tracker_jobs.embedded import free_port

# Settings a developer may have exported must not leak into the process under test.
_TRACKER_VARIABLES = [
    name for name in os.environ if name.startswith("TRACKER_") and not name.startswith("TRACKER_TEST")
]


def clean_env(**variables: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _TRACKER_VARIABLES}
    env.update(variables)
    return env


@contextmanager
def running(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Run a command for the test's duration; stop it with SIGTERM (SIGKILL if it hangs)."""
    log = open(cwd / f"{Path(command[0]).name}-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.seek(0)
        process.output = log.read()  # type: ignore[attr-defined]
        log.close()


def tracker_jobs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracker_jobs", *args]


def engine_env(**variables: str) -> dict[str, str]:
    """Free ports for the admin API and the listener, plus the given variables."""
    return clean_env(
        TRACKER_ADMIN_PORT=str(free_port()), TRACKER_OSMAND_PORT=str(free_port()), TRACKER_HOST="127.0.0.1", **variables
    )


async def wait_for(probe: Callable[[], Any], seconds: float, what: str) -> Any:
    """Call the async `probe` until it returns something truthy."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
        except aiohttp.ClientError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what} (last: {last!r})")


def children_of(pid: int) -> list[int]:
    """Every descendant process id, read from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append(int(entry.name))
            found.extend(children_of(int(entry.name)))
    return found


async def listening(http: aiohttp.ClientSession, url: str) -> bool:
    """Whether a server answers at `url` at all (a device listener answers a bare GET / with a 400)."""
    async with http.get(url) as response:
        return response.status > 0


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
