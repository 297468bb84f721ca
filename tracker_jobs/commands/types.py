"""The command types (Traccar's names), the attributes each takes, and which transport carries which.

Two transports deliver a command:
- `osmand`: the reply to the device's next OsmAnd request carries the command as text (Traccar's way).
  It carries `custom` (its `data` exactly as given), `positionPeriodic` (`frequency=<seconds>`),
  `positionSingle` (`position`) and `positionStop` (`stop`), each at most OSMAND_MAX_TEXT characters.
- `gateway`: a device whose attribute `commandGateway` holds a URL has every command POSTed there as
  JSON (hardware trackers behind a gateway that speaks their protocol): every type goes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracker_jobs.devices.service import ADMIN_ONLY_ATTRIBUTES

OSMAND = "osmand"
GATEWAY = "gateway"
# Device attributes only an admin may set (devices/service.py ADMIN_ONLY_ATTRIBUTES); the secret is never shown.
GATEWAY_ATTRIBUTE, GATEWAY_SECRET_ATTRIBUTE = ADMIN_ONLY_ATTRIBUTES
# A reply body a phone app shows or acts on: Traccar Client reads a line, not a document.
OSMAND_MAX_TEXT = 512
GATEWAY_MAX_TEXT = 4096


@dataclass(frozen=True)
class Attribute:
    key: str
    kind: str  # "string", "integer" (more than 0), "boolean" or "number"
    required: bool = True

    def to_api(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.kind, "required": self.required}


@dataclass(frozen=True)
class CommandType:
    name: str
    description: str
    attributes: tuple[Attribute, ...] = ()
    # The text the OsmAnd reply carries, from the checked attributes; None: not carried over OsmAnd.
    osmand_text: Callable[[Mapping[str, Any]], str] | None = field(default=None, compare=False)

    def transports(self) -> tuple[str, ...]:
        return (OSMAND, GATEWAY) if self.osmand_text else (GATEWAY,)

    def to_api(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "description": self.description,
            "attributes": [attribute.to_api() for attribute in self.attributes],
            "transports": list(self.transports()),
        }


DATA = Attribute("data", "string")
FREQUENCY = Attribute("frequency", "integer")

COMMAND_TYPES: dict[str, CommandType] = {
    command.name: command
    for command in (
        CommandType("custom", "the text in `data`, sent to the device as it is", (DATA,), lambda a: str(a["data"])),
        CommandType(
            "positionPeriodic",
            "report every `frequency` seconds",
            (FREQUENCY,),
            lambda a: f"frequency={a['frequency']}",
        ),
        CommandType("positionSingle", "report one position now", (), lambda a: "position"),
        CommandType("positionStop", "stop reporting", (), lambda a: "stop"),
        CommandType("engineStop", "cut the engine (the relay)"),
        CommandType("engineResume", "let the engine run again"),
        CommandType("alarmArm", "arm the alarm"),
        CommandType("alarmDisarm", "disarm the alarm"),
        CommandType("setTimezone", "the device's time zone", (Attribute("timezone", "string"),)),
        CommandType("rebootDevice", "restart the device"),
        CommandType("message", "show or send a message", (Attribute("message", "string"),)),
        CommandType(
            "outputControl",
            "switch output `index` to `data` (0 or 1)",
            (Attribute("index", "integer"), DATA),
        ),
        CommandType("setSpeedLimit", "the device's own speed alarm, in knots", (Attribute("data", "number"),)),
        CommandType("configuration", "read the device's configuration"),
        CommandType("getVersion", "read the device's firmware version"),
        CommandType("getDeviceStatus", "read the device's status"),
        CommandType(
            "setConnection",
            "the server the device reports to",
            (Attribute("server", "string"), Attribute("port", "integer")),
        ),
        CommandType("setIndicator", "switch an indicator", (DATA,)),
    )
}


def transport_of(device_attributes: Mapping[str, Any]) -> str:
    """How the device's commands travel: its gateway when it names one, else its OsmAnd replies."""
    return GATEWAY if device_attributes.get(GATEWAY_ATTRIBUTE) else OSMAND


def types_for(transport: str | None) -> list[CommandType]:
    """The types a transport carries (every type for None)."""
    return [command for command in COMMAND_TYPES.values() if transport is None or transport in command.transports()]
