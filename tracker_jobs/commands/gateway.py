"""The gateway transport: a command POSTed as signed JSON to the URL in its device's `commandGateway`
attribute (signed with HMAC-SHA256 under `commandGatewaySecret`, as notification webhooks are, through
the same client: private and loopback addresses only with TRACKER_WEBHOOK_ALLOW_PRIVATE). A 2xx makes
the command sent; a failure worth another try leaves it queued with its next try due (backoff, until
it expires); any other answer fails it. Every try carries the same command id (X-Tracker-Delivery
`command-{id}` and the body's `id`): a gateway can tell a retry from a new command."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from tracker_jobs.commands.models import Command, State
from tracker_jobs.commands.types import GATEWAY_ATTRIBUTE, GATEWAY_SECRET_ATTRIBUTE
from tracker_jobs.core.db import iso
from tracker_jobs.devices.models import Device
from tracker_jobs.notifications.attempt import Attempt
from tracker_jobs.notifications.webhook import post_signed

MAX_BACKOFF_S = 3600.0


def payload(command: Command, device: Device) -> bytes:
    body: dict[str, Any] = {
        "id": command.id,
        "deviceId": command.device_id,
        "uniqueId": device.unique_id,
        "type": command.type,
        "attributes": command.attributes,
        "createdAt": iso(command.created_at),
        "expiresAt": iso(command.expires_at),
    }
    return orjson.dumps(body)


async def post(client: aiohttp.ClientSession, command: Command, device: Device) -> Attempt:
    attributes = device.attributes or {}
    secret = attributes.get(GATEWAY_SECRET_ATTRIBUTE)
    return await post_signed(
        client,
        str(attributes.get(GATEWAY_ATTRIBUTE, "")),
        payload(command, device),
        secret=secret if isinstance(secret, str) else None,
        delivery_id=f"command-{command.id}",
    )


def record_attempt(command: Command, attempt: Attempt, now: datetime, backoff_s: float) -> bool:
    """The command after one try; whether it went out."""
    command.attempts += 1
    if attempt.ok:
        command.state, command.sent_at, command.error, command.next_attempt_at = State.SENT, now, None, None
        return True
    command.error = (attempt.error or "failed")[:512]
    if attempt.permanent:
        command.state, command.finished_at, command.next_attempt_at = State.FAILED, now, None
    else:
        wait = min(backoff_s * 2 ** (command.attempts - 1), MAX_BACKOFF_S)
        command.next_attempt_at = now + timedelta(seconds=wait)
    return False


async def device_and_command(session: AsyncSession, command_id: int) -> tuple[Command, Device] | None:
    command = await session.get(Command, command_id)
    if command is None:
        return None
    device = await session.get(Device, command.device_id)
    return (command, device) if device is not None else None
