"""Starting the engine's real processes for end-to-end tests, and waiting on them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

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
