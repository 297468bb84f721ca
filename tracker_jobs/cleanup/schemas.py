"""The JSON bodies of the cleanup API: each model checks a body and is its OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import Field, StrictBool, StrictInt

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Id
from tracker_jobs.cleanup.arguments import MAX_DEVICE_IDS
from tracker_jobs.cleanup.cache import PATTERN_MAX
from tracker_jobs.cleanup.retention import MAX_RETENTION_DAYS

Days = Annotated[StrictInt, Ge(0), Le(MAX_RETENTION_DAYS)]
DeviceIds = Annotated[tuple[Id, ...], MinLen(1), MaxLen(MAX_DEVICE_IDS)]


class CleanupBody(RequestBody):
    subject = "cleanup"
    dry_run: StrictBool = Field(False, description="count what would go, per table (and device), remove nothing")


class RetentionCleanup(CleanupBody):
    days_to_keep: Days | None = Field(None, description="0 keeps for ever; left out: the TRACKER_RETENTION_* setting")
    device_ids: DeviceIds | None = Field(None, description="left out: every device")


class DevicesCleanup(CleanupBody):
    device_ids: DeviceIds | None = Field(None, description="left out: every device")


class CacheCleanup(CleanupBody):
    pattern: Annotated[str, MinLen(1), MaxLen(PATTERN_MAX)] = Field(
        "*", description="a glob inside the cache namespace, e.g. device-stats:*"
    )
    max_age_hours: Annotated[float, Ge(0), Le(24 * 366)] = Field(24, description="idle at least this long")
