"""Work side by side that fails as one: the first error raised as it came, the rest cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def side_by_side(*work: Coroutine[Any, Any, None]) -> None:
    """Run `work` concurrently until all of it ends. If any raises, the others are cancelled (between
    their awaits: a transaction in flight rolls back) and its error is raised as it came, not in an
    ExceptionGroup, so a caller's `except` (a job's retry of transient errors) still sees it."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in work:
                group.create_task(coroutine)
    except BaseExceptionGroup as failed:
        raise _first(failed) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error
