"""Process helpers: children that cannot outlive the `up` process that started them, and stopping on
a signal with one log line."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys

log = logging.getLogger("tracker_jobs")

_PR_SET_PDEATHSIG = 1


def child_dies_with_parent() -> None:
    """preexec_fn: on Linux, the kernel sends SIGTERM to the child when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_on_signals(role: str) -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for the running loop to wait on. The first signal is logged
    once, by its name: Ctrl-C in a terminal reaches every process of `up` as SIGINT, then `up` sends
    each SIGTERM, and a person should read one line per process."""
    stopping = asyncio.Event()

    def received(signum: int) -> None:
        if not stopping.is_set():
            log.info("%s stopping on %s", role, signal.Signals(signum).name)
        stopping.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, received, signum)
    return stopping
