"""The JSON bodies of /api/commands, with Traccar's field names."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import MaxLen, MinLen

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Id, Omittable, Text, Time, checked
from tracker_jobs.commands.queue import MAX_RESULT
from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.fields import check_json, check_no_nul

Attributes = Annotated[dict[str, Any], checked(check_json)]
TypeName = Annotated[str, Text(64)]
MAX_FAN_OUT = 1000


class SendCommand(RequestBody):
    """POST /api/commands/send: to `deviceId`, or to each of `deviceIds` (a fan-out), either a `type`
    with its `attributes` or a saved command's `id`; `expiresAt` defaults to now + TRACKER_COMMAND_TTL."""

    subject = "command"
    id: Omittable[Id] = None
    deviceId: Omittable[Id] = None
    deviceIds: Omittable[Annotated[list[Id], MinLen(1), MaxLen(MAX_FAN_OUT)]] = None
    type: Omittable[TypeName] = None
    attributes: Omittable[Attributes] = None
    description: Omittable[Annotated[str, Text(512)]] = None
    expiresAt: Omittable[Time] = None


class SavedCommandChanges(RequestBody):
    """PUT /api/commands/saved/{id}: the fields to change."""

    subject = "saved command"
    description: Omittable[Annotated[str, Text(512)]] = None
    type: Omittable[TypeName] = None
    attributes: Omittable[Attributes] = None


class NewSavedCommand(SavedCommandChanges):
    """POST /api/commands/saved: a type and attributes to send again."""

    type: TypeName


def _result(field: str, raw: object) -> str:
    """A device's answer as it gave it (line breaks kept), not empty, without NUL."""
    if not isinstance(raw, str) or not raw:
        raise FieldError(field, "must be text, not empty")
    if len(raw) > MAX_RESULT:
        raise FieldError(field, f"must be at most {MAX_RESULT} characters")
    return check_no_nul(field, raw)


class CommandResult(RequestBody):
    """POST /api/commands/{id}/result: what the device answered (a gateway reports it)."""

    subject = "command result"
    result: Annotated[str, MinLen(1), MaxLen(MAX_RESULT), checked(_result)]
