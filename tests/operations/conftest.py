"""Fixtures of the operations tests: two `user` accounts beside the bootstrap admin."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
