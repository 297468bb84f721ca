"""Delivery channels. A failed delivery raises DeliveryFailed, which the job base retries with backoff."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


class DeliveryFailed(ConnectionError):
    """The receiver could not be reached or answered with an error; worth another try."""


async def post_webhook(url: str, payload: dict[str, Any], *, timeout_s: float = 10.0) -> int:
    """POST the payload as JSON; return the receiver's status, raise DeliveryFailed unless it is 2xx."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.post(url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}) as response,
        ):
            if not 200 <= response.status < 300:
                raise DeliveryFailed(f"webhook {url} answered {response.status}")
            return response.status
    except aiohttp.ClientError as error:
        raise DeliveryFailed(f"webhook {url}: {error}") from error
