"""Work side by side that fails as one: the first error raised as it came, the rest cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def side_by_side(*work: Coroutine[Any, Any, None]) -> None:
    """Run `work` concurrently until all of it ends. If any raises, the others are cancelled (between
    their awaits: a transaction in flight rolls back) and its error is raised as it came, not in an
    ExceptionGroup, so a caller's `except` (a job's retry of transient errors) still sees it; any other
    error is logged."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in work:
                group.create_task(coroutine)
    except BaseExceptionGroup as failed:
        first, *others = _leaves(failed)
        for error in others:
            log.warning("also failed beside %r: %r", first, error)
        raise first from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return leaves
