"""Every route of the admin app, taken from its router (so a new route is walked without anyone
adding it here), called with no token, with a `user` token on someone else's objects, and as an admin:
401 / 403 for admin routes or 404 for others' objects / 2xx."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.client import bearer
from tests.support.factories import OTHER_TOKEN, USER_TOKEN, Users
from tracker_jobs.api.openapi import Operation, documented_routes, route_path
from tracker_jobs.core.db import utcnow
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.records import JobRun, RecordBatch, write_now
from tracker_jobs.jobs.refs import CLEANUP, JOBS
from tracker_jobs.users.models import ApiToken

Client = TestClient[Any, Any]
MISSING = "999999"
# Bodies that must differ per caller, or hold the test's own credentials; the rest use the spec's example.
BODIES = {
    "POST /api/session": lambda who: {"email": "user@example.com", "password": "user password"},
    "POST /api/devices": lambda who: {"uniqueId": f"walk-{who.replace(' ', '-')}"},
    "POST /api/users": lambda who: {"email": f"walk-{who.replace(' ', '-')}@example.com", "password": "long enough"},
}  # for a path parameter this test has no object for: nobody's, so 404 to a user
# Routes whose 2xx for an admin this test can promise; others (from other modules) must just not fail.
OWN_PREFIXES = (
    "/health",
    "/metrics",
    "/api/openapi.json",
    "/api/session",
    "/api/devices",
    "/api/users",
    "/api/tasks/status",
    "/api/tasks/queues",
    "/api/tasks/workers",
    "/api/tasks/stats",
    "/api/tasks/jobs",
    "/api/tasks/task",
    "/api/tasks/run",
    "/api/tasks/retry-failed",
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: Operation | None

    def sort_key(self) -> tuple[bool, bool, bool]:
        # Retrying everything and deleting come last (users last of all), so every other route
        # still finds its objects as they were made.
        return (self.method == "DELETE", self.path == "/api/tasks/retry-failed", self.path == "/api/users/{id}")

    def url(self, objects: dict[str, str]) -> str:
        def fill(match: re.Match[str]) -> str:
            return objects.get(f"{self.method} {self.path} {match[1]}") or objects.get(
                f"{self.path} {match[1]}", MISSING
            )

        return re.sub(r"{(\w+)(?::[^}]*)?}", fill, self.path)

    @property
    def has_objects(self) -> bool:
        return "{" in self.path

    @property
    def own(self) -> bool:
        return self.path.startswith(OWN_PREFIXES) and not self.path.startswith("/api/devices/{id}/")

    def body(self, who: str) -> Any:
        made = BODIES.get(f"{self.method} {self.path}")
        if made is not None:
            return made(who)
        if self.operation is not None and self.operation.example is not None:
            return self.operation.example
        return {} if self.method in ("POST", "PUT") else None


async def someone_elses_objects(
    admin_client: Client, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], users: Users
) -> dict[str, str]:
    device = await admin_client.post("/api/devices", json={"uniqueId": "others-truck"}, headers=bearer(OTHER_TOKEN))
    device_id = str((await device.json())["id"])
    queued = await enqueue(redis, JOBS["ping"], user_id=users.other)
    assert queued is not None
    batch = RecordBatch()
    batch.put(JobRun("others-failed-job", "ping", CLEANUP, {}, utcnow(), user_id=users.other, state="failed", tries=1))
    await write_now(sessions, batch)
    async with sessions() as session:
        token_id = (await session.execute(select(ApiToken.id).where(col(ApiToken.user_id) == users.other))).scalar_one()
    return {
        "/api/devices/{id} id": device_id,
        "/api/devices/{id}/statistics id": device_id,
        "/api/tasks/task/{id} id": queued.job_id,
        "/api/tasks/task/{id}/retry id": "others-failed-job",
        "/api/tasks/run/{job_name} job_name": "ping",
        "/api/users/{id} id": str(users.other),
        "/api/users/{id}/tokens id": str(users.other),
        "/api/users/{id}/tokens/{token_id} id": str(users.other),
        "/api/users/{id}/tokens/{token_id} token_id": str(token_id),
    }


async def test_every_route_with_no_token_a_user_token_and_an_admin_token(
    admin_client: Client,
    admin_headers: dict[str, str],
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
    users: Users,
) -> None:
    objects = await someone_elses_objects(admin_client, redis, sessions, users)
    routes = sorted(
        (Route(route.method, route_path(route), operation) for route, operation in documented_routes(admin_client.app)),
        key=Route.sort_key,
    )
    assert len(routes) > 30
    problems: list[str] = []

    async def call(route: Route, headers: dict[str, str], who: str, allowed: Any) -> None:
        response = await admin_client.request(route.method, route.url(objects), json=route.body(who), headers=headers)
        if not allowed(response.status):
            problems.append(f"{route.method} {route.path} as {who}: {response.status} {await response.text()}")

    for route in routes:
        auth = route.operation.auth if route.operation else "token"
        public = auth in ("none", "metrics")
        await call(route, {}, "nobody", (lambda status: status != 401 and status < 500) if public else (401).__eq__)
        if auth == "admin":
            expected_for_user: Any = (403).__eq__
        elif route.has_objects and not public:
            expected_for_user = (404).__eq__
        else:
            expected_for_user = lambda status: status not in (401, 403) and status < 500  # noqa: E731
        await call(route, bearer(USER_TOKEN), "a user", expected_for_user)
        if route.own and not (public and route.method == "POST"):
            expected_for_admin: Any = lambda status: 200 <= status < 300  # noqa: E731
        else:
            expected_for_admin = lambda status: status not in (401, 403) and status < 500  # noqa: E731
        await call(route, admin_headers, "an admin", expected_for_admin)
    assert problems == [], "\n".join(problems)
