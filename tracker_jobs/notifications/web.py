"""The web channel: events pushed to the recipient's open sockets as `{"events": [...]}` (Traccar's
shape, through every admin process's hub), and kept as the user's recent notifications (capped, for a
day) for a page that opens later."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from tracker_jobs.core.redis import cache_key

NOTIFY_CHANNEL = "tracker:notify"  # {"users": {"<user id>": [event, ...]}}
RECENT_KEEP = 100
RECENT_TTL_S = 86_400


def recent_key(user_id: int) -> str:
    return cache_key("recent-notifications", user_id)


async def push(redis: Redis, messages: Iterable[tuple[int, dict[str, Any]]]) -> None:
    """Send each (user, event) to the user's sockets and recent list: one round trip."""
    by_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for user_id, event in messages:
        by_user[user_id].append(event)
    if not by_user:
        return
    async with redis.pipeline(transaction=False) as pipe:
        pipe.publish(NOTIFY_CHANNEL, orjson.dumps({"users": {str(user): events for user, events in by_user.items()}}))
        for user_id, events in by_user.items():
            key = recent_key(user_id)
            pipe.lpush(key, *(orjson.dumps(event) for event in events))
            pipe.ltrim(key, 0, RECENT_KEEP - 1)
            pipe.expire(key, RECENT_TTL_S)
        await pipe.execute()


async def recent(redis: Redis, user_id: int) -> list[dict[str, Any]]:
    """The user's web notifications of the last day, newest first."""
    return [orjson.loads(item) for item in await redis.lrange(recent_key(user_id), 0, RECENT_KEEP - 1)]  # type: ignore[misc]
