"""The JSON bodies /api/devices takes, with Traccar's field names: each model checks a body and is its
OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Gt, MaxLen, MinLen
from pydantic import ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Omittable, Text, checked
from tracker_jobs.core.fields import MAX_UNIQUE_ID_LENGTH, check_json, parse_number, parse_unique_id

UniqueId = Annotated[str, MinLen(1), MaxLen(MAX_UNIQUE_ID_LENGTH), checked(parse_unique_id)]
SpeedLimit = Annotated[float, Gt(0), checked(parse_number)]  # knots, finite
Attributes = Annotated[dict[str, Any], checked(check_json)]


def read_only() -> Any:
    return Field(None, exclude=True, description="read-only: a client may send back what a GET gave; ignored")


class DeviceChanges(RequestBody):
    """PUT /api/devices/{id}: the fields to change."""

    model_config = ConfigDict(alias_generator=to_camel)
    subject = "device"
    unique_id: Omittable[UniqueId] = None
    name: Omittable[Annotated[str, Text(128)]] = None
    disabled: Omittable[StrictBool] = None
    speed_limit: SpeedLimit | None = Field(None, description="knots; null for none")
    attributes: Omittable[Attributes] = None
    id: Any = read_only()
    status: Any = read_only()
    last_update: Any = read_only()
    position_id: Any = read_only()
    total_distance: Any = read_only()
    motion: Any = read_only()


class NewDevice(DeviceChanges):
    """POST /api/devices: the name defaults to the uniqueId."""

    unique_id: UniqueId

    def given(self) -> dict[str, Any]:
        # A uniqueId is at most 128 printable characters, so it is always a name (Text(128)) too.
        return {"name": self.unique_id, **super().given()}
