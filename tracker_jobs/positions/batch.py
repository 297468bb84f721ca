"""The batch API's logic: decode every item, resolve its device among those the caller may use,
and split the batch into what is accepted and what is rejected (with the index and reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, or_, select

from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.principal import Principal
from tracker_jobs.devices.models import Device
from tracker_jobs.devices.service import register_devices, visible_device_ids
from tracker_jobs.positions.decode import Decoded, decode_position_object
from tracker_jobs.positions.record import PositionRecord

# Why an item was rejected, as the listener's error codes say it.
UNKNOWN, DISABLED = "unknown_device", "device_disabled"
REJECTION_CODES = ("invalid_field", UNKNOWN, DISABLED)


@dataclass
class BatchAnswer:
    accepted: list[PositionRecord] = field(default_factory=list)  # each with its device id
    rejected: list[dict[str, Any]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": len(self.accepted),
            "rejected": self.rejected,
            "task_id": self.task_ids[0] if self.task_ids else None,
            "task_ids": self.task_ids,
        }


async def resolve_batch(
    session: AsyncSession, principal: Principal, items: list[Any], *, now: datetime, auto_register: bool
) -> BatchAnswer:
    answer = BatchAnswer()
    decoded: list[tuple[int, Decoded]] = []
    for index, item in enumerate(items):
        try:
            decoded.append((index, decode_position_object(item, now=now)))
        except FieldError as error:
            answer.rejected.append({"index": index, "code": "invalid_field", "reason": str(error)})
    ids = {position.device_id for _, (unique_id, position) in decoded if not unique_id}
    unique_ids = {unique_id for _, (unique_id, _) in decoded if unique_id}
    by_id, by_unique_id, disabled = await _visible_devices(session, principal, ids, unique_ids)
    unknown = unique_ids - set(by_unique_id)
    if unknown and auto_register and principal.is_admin:
        # Only ids no device holds are registered: a disabled device stays disabled, and its positions refused.
        registered = await register_devices(session, unknown)
        await session.commit()
        by_unique_id.update(registered)
        by_id.update(registered.values())
    for index, (unique_id, position) in decoded:
        if not unique_id:
            device_id = position.device_id if position.device_id in by_id else None
            field, name = "deviceId", str(position.device_id)
        else:
            device_id = by_unique_id.get(unique_id)
            field, name = "uniqueId", repr(unique_id)
        if device_id is None:
            answer.rejected.append({"index": index, "code": UNKNOWN, "reason": f"{field}: unknown device {name}"})
        elif device_id in disabled:
            answer.rejected.append({"index": index, "code": DISABLED, "reason": f"{field}: device {name} is disabled"})
        else:
            position.device_id = device_id
            answer.accepted.append(position)
    answer.rejected.sort(key=lambda rejection: rejection["index"])
    return answer


async def _visible_devices(
    session: AsyncSession, principal: Principal, ids: set[int], unique_ids: set[str]
) -> tuple[set[int], dict[str, int], set[int]]:
    """The referenced devices the caller may see: their ids, their uniqueIds, and which are disabled."""
    if not ids and not unique_ids:
        return set(), {}, set()
    query = select(Device.id, Device.unique_id, Device.disabled).where(
        or_(col(Device.id).in_(ids), col(Device.unique_id).in_(unique_ids)),
        col(Device.id).in_(visible_device_ids(principal)),
    )
    found = await session.execute(query)
    rows = [(device_id, unique_id, disabled) for device_id, unique_id, disabled in found if device_id is not None]
    return (
        {device_id for device_id, _, _ in rows},
        {unique_id: device_id for device_id, unique_id, _ in rows},
        {device_id for device_id, _, disabled in rows if disabled},
    )
