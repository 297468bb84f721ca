"""The JSON bodies that ask for a report as a job: each model checks a body and is its OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

from annotated_types import MinLen
from pydantic import Field, StrictBool

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Id, OneOf, Text, Time
from tracker_jobs.reports.builders import DEVICE_KINDS
from tracker_jobs.reports.exporters import FORMATS

Format = Annotated[str, OneOf(FORMATS)]


class _Period(RequestBody):
    subject = "report"
    start: Time
    end: Time
    formats: list[Format] | None = Field(None, description="json is always made; null or left out: json only")


class NewDeviceReport(_Period):
    device_id: Id
    kind: Annotated[str, OneOf(DEVICE_KINDS)] = "summary"
    daily: StrictBool = False
    event_types: tuple[Annotated[str, Text(64)], ...] = ()


class NewFleetReport(_Period):
    device_ids: Annotated[tuple[Id, ...], MinLen(1)] | None = Field(
        None, description="null or left out: every device the caller may see"
    )
