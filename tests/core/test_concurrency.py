"""side_by_side: work that runs concurrently and fails as one, with the error as it came."""

from __future__ import annotations

import asyncio

import pytest

from tracker_jobs.core.concurrency import side_by_side


async def test_all_the_work_runs_at_once() -> None:
    started: list[str] = []
    both_running = asyncio.Event()

    async def part(name: str) -> None:
        started.append(name)
        if len(started) == 2:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), 1.0)  # times out if the parts ran one after the other

    await side_by_side(part("a"), part("b"))
    assert sorted(started) == ["a", "b"]


async def test_an_error_comes_as_raised_and_the_rest_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("gone")

    async def nested() -> None:
        await side_by_side(failing())

    with pytest.raises(LookupError, match="gone"):  # not an ExceptionGroup, even from a nested one
        await side_by_side(slow(), nested())
    assert cancelled.is_set()
