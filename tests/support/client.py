"""Talking to the admin API in tests: a token's headers, a JSON error read back, the stored positions."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def error_of(response: Any) -> dict[str, str]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, str] = body["error"]
    return error


async def stored(admin_client: Client, admin_headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await admin_client.get("/api/positions", params={"from": "2026-01-01T00:00:00Z"}, headers=admin_headers)
    found: list[dict[str, Any]] = await response.json()
    return found
