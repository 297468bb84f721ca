"""A command's type and attributes checked against what its type needs and its transport carries: a
FieldError naming the field (the API answers 400) for an unknown type, a type the device's transport
cannot carry, a missing or wrong attribute, or text over the transport's limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracker_jobs.commands.types import COMMAND_TYPES, GATEWAY_MAX_TEXT, OSMAND, OSMAND_MAX_TEXT, Attribute, CommandType
from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.fields import check_no_nul, parse_int, parse_number, parse_text


def command_type(name: str) -> CommandType:
    found = COMMAND_TYPES.get(name)
    if found is None:
        raise FieldError("type", f"unknown command type {name[:64]!r}; GET /api/commands/types lists them")
    return found


def checked_attributes(command: CommandType, attributes: Mapping[str, Any], transport: str) -> dict[str, Any]:
    """The attributes with each of the type's own parsed (other keys kept as given, for a gateway)."""
    if transport not in command.transports():
        raise FieldError(
            "type",
            f"{command.name} cannot be sent over this device's transport ({transport});"
            f" GET /api/commands/types?deviceId= lists what can",
        )
    limit = OSMAND_MAX_TEXT if transport == OSMAND else GATEWAY_MAX_TEXT
    checked = dict(attributes)
    for attribute in command.attributes:
        field = f"attributes.{attribute.key}"
        if attribute.key not in attributes:
            if attribute.required:
                raise FieldError(field, f"is required by {command.name}")
            continue
        checked[attribute.key] = _value(field, attribute, attributes[attribute.key], limit)
    return checked


def _value(field: str, attribute: Attribute, raw: object, limit: int) -> object:
    if attribute.kind == "integer":
        return parse_int(field, raw, 1, 2**31 - 1)
    if attribute.kind == "number":
        return parse_number(field, raw)
    if attribute.key == "data":  # sent exactly as given: not stripped
        if not isinstance(raw, str) or not raw:
            raise FieldError(field, "must be text, not empty")
        if len(raw) > limit:
            raise FieldError(field, f"must be at most {limit} characters over this transport")
        return check_no_nul(field, raw)
    return parse_text(field, raw, limit)


def osmand_text(command: CommandType, attributes: Mapping[str, Any]) -> str:
    """What the OsmAnd reply carries, within its limit."""
    assert command.osmand_text is not None
    text = command.osmand_text(attributes)
    if len(text) > OSMAND_MAX_TEXT:
        raise FieldError("attributes", f"the command's text must be at most {OSMAND_MAX_TEXT} characters")
    return text
