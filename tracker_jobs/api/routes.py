"""A route of the admin app, as each domain's views module lists them (`ROUTES`): the app factory adds
every list the same way, so there is one way to register a route."""

from __future__ import annotations

from dataclasses import dataclass

from tracker_jobs.api.errors import Handler


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
