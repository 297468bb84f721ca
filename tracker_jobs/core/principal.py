"""Who is calling: the user behind a bearer token, and the roles a user can have. Every layer that
decides what a caller may see or do speaks of this, so it lives in the core."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True)
class Principal:
    user_id: int
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN
