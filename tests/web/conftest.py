"""Fixtures of the admin app's tests: a real `tracker-jobs admin` process for those that talk to it over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from tests.support.processes import admin_process


@pytest.fixture
def admin_url(tmp_path: Path, redis_url: str, redis: ArqRedis) -> Iterator[str]:
    """A real admin process on a fresh SQLite database; `redis` flushes the test Redis around it."""
    with admin_process(tmp_path, f"sqlite:///{tmp_path / 'api.db'}", redis_url) as admin:
        yield admin.url
