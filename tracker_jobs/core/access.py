"""Telling every process that someone's access changed, so nothing cached outlives it.

Whoever changes a user (password, role, disabled, deleted), ends a session, revokes a token, or
creates through the API, disables, renames or deletes a device publishes an AccessChange after the
commit. Every admin process hears it (its live hub subscribes) and so does the device listener it
serves: open websockets of those users are checked again (closed when their token no longer lets them
in, filtered anew when their devices or role changed), and the uniqueId directory forgets those
devices (`watch_access_changes`). (A device auto-registered by a listener is announced to nobody: no socket of a user can see
it yet, and every other directory looks an unknown uniqueId up in the database.) Pub/sub delivers at most once, so a process that lost its
subscription treats the gap as "everything changed" and checks everything again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from tracker_jobs.core.redis import listen_forever

log = logging.getLogger(__name__)
ACCESS_CHANNEL = "tracker:access"


@dataclass(frozen=True)
class AccessChange:
    users: frozenset[int] = frozenset()  # their sessions, tokens, role or state changed, or they are gone
    devices: frozenset[int] = frozenset()  # created, disabled, renamed (uniqueId) or deleted
    everything: bool = False  # a subscription was lost: check every socket and reload every directory

    def encode(self) -> bytes:
        return orjson.dumps({"users": sorted(self.users), "devices": sorted(self.devices)})

    @classmethod
    def decode(cls, data: bytes) -> AccessChange:
        message = orjson.loads(data)
        return cls(users=frozenset(message.get("users", ())), devices=frozenset(message.get("devices", ())))


EVERYTHING = AccessChange(everything=True)


async def publish_access_change(redis: Redis, *, users: Iterable[int] = (), devices: Iterable[int] = ()) -> None:
    """Call after the change has committed. A Redis away is logged, not raised: the change itself stands,
    and every process re-checks its sockets and reloads its directory on a timer as well."""
    change = AccessChange(users=frozenset(users), devices=frozenset(devices))
    if not change.users and not change.devices:
        return
    try:
        await redis.publish(ACCESS_CHANNEL, change.encode())
    except Exception as error:  # the change is committed; the periodic re-check catches up
        log.warning("could not announce an access change (%s): %s", change, error)


async def watch_access_changes(redis: Redis, on_change: Callable[[AccessChange], None]) -> None:
    """Every announced change, until cancelled; EVERYTHING after each (re)subscription, for what was
    announced while this process was not listening."""
    await listen_forever(
        redis, ACCESS_CHANNEL, lambda data: on_change(AccessChange.decode(data)), lambda: on_change(EVERYTHING)
    )
