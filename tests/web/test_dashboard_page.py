"""The dashboard's page and files as the admin app serves them: a strict Content-Security-Policy on each,
the tile server as the only other origin, nothing outside the assets folder, and GET /api/session."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from tests.support.factories import USER_TOKEN, Users
from tracker_jobs.core.config import Settings
from tracker_jobs.web.app import create_admin_app


async def test_the_page_is_served_with_a_strict_policy_and_the_tile_host(
    settings: Settings, redis: ArqRedis, engine: AsyncEngine
) -> None:
    tiles = "https://{s}.tiles.example.org/{z}/{x}/{y}.png?a=1&b=2"
    async with TestClient(TestServer(create_admin_app(replace(settings, map_tiles=tiles), redis, engine))) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.content_type == "text/html"
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy
        assert "img-src 'self' data: blob: https://*.tiles.example.org;" in policy
        assert "frame-ancestors 'none'" in policy
        html = await page.text()
        assert 'data-tiles="https://{s}.tiles.example.org/{z}/{x}/{y}.png?a=1&amp;b=2"' in html  # escaped
        assert "<script>" not in html  # every script is a file of its own

        script = await client.get("/assets/app.js")
        assert script.status == 200
        assert script.headers["Content-Security-Policy"] == policy
        assert "javascript" in script.content_type
        leaflet = await client.get("/assets/vendor/leaflet/leaflet.js")
        assert leaflet.status == 200
        assert (await client.get("/assets/vendor/leaflet/LICENSE")).status == 200


async def test_without_tiles_the_policy_names_no_other_host(
    settings: Settings, redis: ArqRedis, engine: AsyncEngine
) -> None:
    # TRACKER_MAP_TILES=none: markers on a plain background, and no host but this one in the policy.
    async with TestClient(TestServer(create_admin_app(replace(settings, map_tiles=None), redis, engine))) as client:
        page = await client.get("/")
        assert 'data-tiles=""' in await page.text()
        assert "img-src 'self' data: blob:;" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "name",
    [
        "index.html",
        "..%2Fdashboard.py",  # tracker_jobs/web/dashboard.py: a file, one folder up (the client keeps %2F)
        "vendor%2F..%2F..%2Fdashboard.py",
        "..%2F..%2F__init__.py",
        "%2E%2E%2Fdashboard.py",
        "missing.js",
        "a" * 300,
    ],
)
async def test_only_files_inside_the_assets_are_served(admin_client: TestClient[Any, Any], name: str) -> None:
    response = await admin_client.get(URL(f"/assets/{name}", encoded=True))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_the_session_says_who_is_signed_in(
    admin_client: TestClient[Any, Any], admin_headers: dict[str, str], users: Users
) -> None:
    admin = await admin_client.get("/api/session", headers=admin_headers)
    assert (admin.status, (await admin.json())["role"]) == (200, "admin")
    user = await (await admin_client.get("/api/session", headers={"Authorization": f"Bearer {USER_TOKEN}"})).json()
    assert (user["id"], user["email"], user["role"]) == (users.user, "user@example.com", "user")
    assert (await admin_client.get("/api/session")).status == 401
