"""Passwords, tokens, login, the bootstrap admin, and managing users and their API tokens.
Secrets are stored only as hashes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.core.db import iso, utcnow
from tracker_jobs.core.errors import Conflict, Unavailable
from tracker_jobs.core.principal import Principal, Role
from tracker_jobs.users.models import ApiToken, User, UserSession

BOOTSTRAP_EMAIL = "admin@localhost"
BOOTSTRAP_TOKEN_NAME = "TRACKER_ADMIN_TOKEN"  # noqa: S105 -- the name of a token, not a secret
SESSION_LIFETIME = timedelta(days=7)
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # scrypt reads all of it; a longer one is a way to burn CPU, not a safer password
# scrypt with n=2**14, r=8: ~50 ms and 16 MiB per guess, the cost OWASP suggests for password storage.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# scrypt runs in threads of its own (it releases the GIL), never on the event loop that serves devices
# and the API; two at most, so a stream of logins queues instead of taking every core and 16 MiB each.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrypt")
# Past this many hashes waiting or running, more are refused at once (about a second of work for two
# threads): a login flood gets 503s instead of a queue that grows without end.
MAX_PENDING_HASHES = 32
_pending_hashes = 0
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)  # lastUsedAt is written at most this often per token


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


class PasswordHashingBusy(Unavailable):
    """Too many passwords are being hashed right now; the caller should try again shortly."""


async def _scrypt_off_loop(password: str, salt: bytes) -> bytes:
    global _pending_hashes
    if _pending_hashes >= MAX_PENDING_HASHES:
        raise PasswordHashingBusy("too many logins at once; try again in a second", retry_after_s=1)
    _pending_hashes += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_HASHING, _scrypt, password, salt)
    finally:
        _pending_hashes -= 1


async def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = await _scrypt_off_loop(password, salt)
    return f"scrypt${salt.hex()}${digest.hex()}"


async def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = await _scrypt_off_loop(password, salt)
    return hmac.compare_digest(digest.hex(), digest_hex)


def normalize_email(email: str) -> str:
    """Emails are compared and kept unique case-insensitively: stored lowercased."""
    return email.strip().lower()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so a fast hash is enough and lets the lookup use an index."""
    return hashlib.sha256(token.encode()).hexdigest()


async def principal_for_token_hash(session: AsyncSession, token_hash: str) -> Principal | None:
    """The enabled user holding this API token or unexpired session token (by the token's hash); an API
    token's `last_used_at` is brought up to date (at most once a minute, so reads stay reads)."""
    now = utcnow()
    by_api_token = (
        select(User.id, User.role, ApiToken.id, ApiToken.last_used_at)
        .join(ApiToken, col(ApiToken.user_id) == col(User.id))
        .where(col(ApiToken.token_hash) == token_hash, col(User.disabled).is_(False))
    )
    by_session = (
        select(User.id, User.role, sa.null(), sa.null())
        .join(UserSession, col(UserSession.user_id) == col(User.id))
        .where(
            col(UserSession.token_hash) == token_hash, col(UserSession.expires_at) > now, col(User.disabled).is_(False)
        )
    )
    row: Any = (await session.execute(sa.union_all(by_api_token, by_session))).first()
    if row is None:
        return None
    user_id, role, api_token_id, last_used_at = row
    if api_token_id is not None and (last_used_at is None or last_used_at < now - TOKEN_TOUCH_INTERVAL):
        await session.execute(sa.update(ApiToken).where(col(ApiToken.id) == api_token_id).values(last_used_at=now))
        await session.commit()
    return Principal(user_id=user_id, role=role)


async def principals_by_token_hash(session: AsyncSession, token_hashes: Iterable[str]) -> dict[str, Principal]:
    """Of these token hashes, the ones that still let their enabled user in, with who that is now."""
    wanted, now = list(set(token_hashes)), utcnow()
    if not wanted:
        return {}
    by_api_token = (
        select(ApiToken.token_hash, User.id, User.role)
        .join(User, col(ApiToken.user_id) == col(User.id))
        .where(col(ApiToken.token_hash).in_(wanted), col(User.disabled).is_(False))
    )
    by_session = (
        select(UserSession.token_hash, User.id, User.role)
        .join(User, col(UserSession.user_id) == col(User.id))
        .where(
            col(UserSession.token_hash).in_(wanted), col(UserSession.expires_at) > now, col(User.disabled).is_(False)
        )
    )
    rows: Any = await session.execute(sa.union_all(by_api_token, by_session))
    return {token_hash: Principal(user_id=user_id, role=role) for token_hash, user_id, role in rows}


async def login(session: AsyncSession, email: str, password: str) -> tuple[str, datetime] | None:
    """A new session token and its expiry, or None when the email or password is wrong."""
    query = select(User).where(col(User.email) == normalize_email(email))
    user = (await session.execute(query)).scalar_one_or_none()
    if user is None or user.disabled or user.password_hash is None:
        await hash_password(password)  # spend the same time, so a wrong email is not told from a wrong password
        return None
    if not await verify_password(password, user.password_hash):
        return None
    token = new_token()
    expires = utcnow() + SESSION_LIFETIME
    assert user.id is not None
    session.add(UserSession(user_id=user.id, token_hash=hash_token(token), expires_at=expires))
    return token, expires


async def ensure_bootstrap_admin(session: AsyncSession, configured_token: str | None) -> str | None:
    """Make sure an admin can get in.

    With TRACKER_ADMIN_TOKEN set: the bootstrap admin exists and holds exactly that token.
    Unset on a database with no users: create the admin with a fresh token and return it (shown once).
    """
    admin = (await session.execute(select(User).where(col(User.email) == BOOTSTRAP_EMAIL))).scalar_one_or_none()
    if configured_token is None and (await session.execute(sa.select(sa.func.count()).select_from(User))).scalar_one():
        return None
    if admin is None:
        admin = User(name="admin", email=BOOTSTRAP_EMAIL, role=Role.ADMIN)
        session.add(admin)
        await session.flush()
    assert admin.id is not None
    token = configured_token or new_token()
    wanted_hash = hash_token(token)
    existing = (
        await session.execute(
            select(ApiToken).where(col(ApiToken.user_id) == admin.id, col(ApiToken.name) == BOOTSTRAP_TOKEN_NAME)
        )
    ).scalar_one_or_none()
    if existing is None:
        session.add(ApiToken(user_id=admin.id, name=BOOTSTRAP_TOKEN_NAME, token_hash=wanted_hash))
    elif existing.token_hash != wanted_hash:
        existing.token_hash = wanted_hash
    return None if configured_token else token


async def restore_bootstrap_admin(session: AsyncSession) -> list[str]:
    """The bootstrap admin as an admin again and enabled (the token command's way back in for an
    operator locked out); what it had to change, in words."""
    admin = (await session.execute(select(User).where(col(User.email) == BOOTSTRAP_EMAIL))).scalar_one()
    changes: list[str] = []
    if admin.role != Role.ADMIN:
        admin.role = Role.ADMIN
        changes.append("is an admin again")
    if admin.disabled:
        admin.disabled = False
        changes.append("is enabled again")
    return changes


async def delete_expired_sessions(session: AsyncSession, *, dry_run: bool = False) -> int:
    """Remove the login sessions whose expiry has passed (on a dry run, count them); how many."""
    expired = col(UserSession.expires_at) <= utcnow()
    if dry_run:
        return int((await session.execute(sa.select(sa.func.count()).where(expired))).scalar_one())
    result = await session.execute(sa.delete(UserSession).where(expired))
    return int(result.rowcount)  # type: ignore[attr-defined]


class LastAdmin(Conflict):
    """The change would leave no enabled admin, and nobody could manage users any more."""


def user_to_api(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "role": user.role,
        "disabled": user.disabled,
        "limitCommands": user.limit_commands,
        "attributes": user.attributes,
        "createdAt": iso(user.created_at),
    }


def token_to_api(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "userId": token.user_id,
        "name": token.name,
        "createdAt": iso(token.created_at),
        "lastUsedAt": iso(token.last_used_at),
    }


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.execute(select(User).order_by(col(User.id)))).scalars())


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def email_taken(session: AsyncSession, email: str, *, except_id: int | None = None) -> bool:
    query = select(User.id).where(col(User.email) == normalize_email(email))
    if except_id is not None:
        query = query.where(col(User.id) != except_id)
    return (await session.execute(query)).first() is not None


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """The API's names of a user's fields as its columns' (limitCommands)."""
    if "limitCommands" in fields:
        fields["limit_commands"] = fields.pop("limitCommands")
    return fields


async def create_user(session: AsyncSession, fields: dict[str, Any]) -> User:
    """`fields`: name, email, role, disabled, limitCommands and `password` (stored only as its scrypt hash)."""
    fields = _columns(fields)
    password = fields.pop("password", None)
    user = User(**fields, password_hash=None if password is None else await hash_password(password))
    session.add(user)
    await session.flush()
    return user


async def update_user(session: AsyncSession, user: User, fields: dict[str, Any]) -> None:
    """Change some fields; a new password also ends the user's login sessions."""
    if await _would_remove_last_admin(
        session, user, fields.get("role", user.role), fields.get("disabled", user.disabled)
    ):
        raise LastAdmin(f"user {user.id} is the last enabled admin; make another admin first")
    password = fields.pop("password", None)
    for name, value in _columns(fields).items():
        setattr(user, name, value)
    if password is not None:
        user.password_hash = await hash_password(password)
        await session.execute(sa.delete(UserSession).where(col(UserSession.user_id) == user.id))


async def delete_user(session: AsyncSession, user: User) -> None:
    if await _would_remove_last_admin(session, user, Role.USER, True):
        raise LastAdmin(f"user {user.id} is the last enabled admin; make another admin first")
    await session.delete(user)


async def _would_remove_last_admin(session: AsyncSession, user: User, role: str, disabled: bool) -> bool:
    if user.role != Role.ADMIN or user.disabled or (role == Role.ADMIN and not disabled):
        return False
    others = (
        select(sa.func.count())
        .select_from(User)
        .where(col(User.role) == Role.ADMIN, col(User.disabled).is_(False), col(User.id) != user.id)
    )
    return (await session.execute(others)).scalar_one() == 0


async def create_api_token(session: AsyncSession, user_id: int, name: str) -> tuple[ApiToken, str]:
    """A new long-lived token for the user: the record, and the token itself (never stored, shown once)."""
    token = new_token()
    record = ApiToken(user_id=user_id, name=name, token_hash=hash_token(token))
    session.add(record)
    await session.flush()
    return record, token


async def list_api_tokens(session: AsyncSession, user_id: int) -> list[ApiToken]:
    query = select(ApiToken).where(col(ApiToken.user_id) == user_id).order_by(col(ApiToken.id))
    return list((await session.execute(query)).scalars())


async def get_api_token(session: AsyncSession, user_id: int, token_id: int) -> ApiToken | None:
    token = await session.get(ApiToken, token_id)
    return token if token is not None and token.user_id == user_id else None
