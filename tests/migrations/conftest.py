"""A fresh PostgreSQL database for a migration's test."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import pytest

from tests.support.plain_sql import run, sql
from tests.support.services import POSTGRES_URL


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database beside the test one, dropped after."""
    name = f"{urlparse(POSTGRES_URL).path.lstrip('/')}_migration"
    run(sql(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}"'))
    run(sql(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    yield urlunparse(urlparse(POSTGRES_URL)._replace(path=f"/{name}"))
    run(sql(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
