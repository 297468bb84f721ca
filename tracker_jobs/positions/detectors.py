"""Event detectors of the position pipeline beyond geofences: ignition, alarms, overspeed (Traccar's
rules). Each compares a device's alive positions with the one before, or with its stored newest
position at the start of a batch, so a detector's state is the stored newest position itself and
survives restarts; late positions make no event.

- ignitionOn / ignitionOff: an edge of the `ignition` attribute (no event when the position before
  has none).
- alarm: each alarm of the `alarm` attribute (comma-separated) that the position before did not
  carry; the event's `alarm` attribute names it.
- deviceOverspeed: the speed above the speed limit times `multiplier` (the device's, or a geofence's
  `speedLimit` the position is in, the lowest winning; the event then names the geofence), one event per
  continuous episode, once it has lasted `minimal_s`; the positions of an episode carry
  `overspeedSince` (when it began), which is how the next batch continues it. On a derived speed
  (`speedComputed`) an episode needs two consecutive positions over the limit, so GPS jitter over
  one short interval cannot raise it.
- maintenance: an item's value (the odometer, or a numeric attribute such as hours) passes
  start + k * period; with a `lead` attribute, a reminder (`reminder` true) when it passes
  start + k * period - lead. Items of type `date` are found by the sweep (events/status.py).

deviceMoving / deviceStopped, the trips report's rule, are positions/motion_events.py's.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.devices.models import DeviceMaintenance, Maintenance
from tracker_jobs.events.status import DATE, maintenance_lead
from tracker_jobs.positions.geofencing import GEOFENCE_IDS
from tracker_jobs.positions.pipeline import (
    SKIP,
    Batch,
    Bools,
    Detected,
    Floats,
    Ints,
    PipelineConfig,
    StepResult,
    previous_alive,
)

OVERSPEED_SINCE = "overspeedSince"


def _previous_values(batch: Batch, name: str, alive: Bools) -> tuple[list[Any], list[Any]]:
    """Each row's `name` attribute, and that of the position before it (alive row, or stored newest)."""
    values = [row.attributes.get(name) for row in batch.rows]
    previous = previous_alive(batch.device, alive).tolist()
    states = batch.states
    before = [
        values[p] if p >= 0 else (states[d].attributes.get(name) if d in states else None)
        for p, d in zip(previous, batch.device.tolist(), strict=True)
    ]
    return values, before


def detect_ignition(batch: Batch, config: PipelineConfig) -> StepResult:
    values = [row.attributes.get("ignition") for row in batch.rows]
    if not any(isinstance(value, bool) for value in values):
        return SKIP
    alive = batch.alive
    now, before = _previous_values(batch, "ignition", alive)
    rows_on = [i for i in np.flatnonzero(alive).tolist() if now[i] is True and before[i] is False]
    rows_off = [i for i in np.flatnonzero(alive).tolist() if now[i] is False and before[i] is True]
    return StepResult(
        events=(
            Detected("ignitionOn", np.array(rows_on, dtype=np.int64)),
            Detected("ignitionOff", np.array(rows_off, dtype=np.int64)),
        )
    )


def _alarms(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [alarm for alarm in dict.fromkeys(part.strip() for part in value.split(",")) if alarm][:16]


def detect_alarms(batch: Batch, config: PipelineConfig) -> StepResult:
    if not any("alarm" in row.attributes for row in batch.rows):
        return SKIP
    alive = batch.alive
    now, before = _previous_values(batch, "alarm", alive)
    rows: list[int] = []
    names: list[str] = []
    for i in np.flatnonzero(alive).tolist():
        raised = [alarm for alarm in _alarms(now[i]) if alarm not in _alarms(before[i])]
        rows += [i] * len(raised)
        names += raised
    subject = np.array([zlib.crc32(name.encode()) & 0x7FFFFFFF for name in names], dtype=np.int64)
    attributes = [{"alarm": name[:64]} for name in names]
    return StepResult(events=(Detected("alarm", np.array(rows, dtype=np.int64), subject, attributes),))


@dataclass(frozen=True)
class DetectOverspeed:
    """deviceOverspeed for the batch's devices with a speed limit, or in a geofence with one (knots).
    Runs after DetectGeofences, whose `geofenceIds` it reads."""

    limits: Mapping[int, float]
    multiplier: float = 1.0
    minimal_s: float = 0.0
    geofence_limits: Mapping[int, float] = field(default_factory=dict)

    def __call__(self, batch: Batch, config: PipelineConfig) -> StepResult:
        limit = np.array([self.limits.get(d, np.inf) for d in batch.device.tolist()], dtype=np.float64)
        geofence = np.zeros(len(batch), dtype=np.int64)  # the geofence whose limit applies, 0: the device's
        inside = batch.sparse.get(GEOFENCE_IDS)
        if self.geofence_limits and inside is not None:
            for row, ids in zip(inside[0].tolist(), inside[1], strict=True):
                lowest = min(((self.geofence_limits[g], g) for g in ids if g in self.geofence_limits), default=None)
                if lowest is not None and lowest[0] < limit[row]:
                    limit[row], geofence[row] = lowest
        rows = np.flatnonzero(batch.alive)  # the detector walks alive positions only
        over = batch.speed[rows] > limit[rows] * self.multiplier
        if not over.any():
            return SKIP
        device, fix = batch.device[rows], batch.fix_time[rows]
        first = np.r_[True, device[1:] != device[:-1]]
        # The stored newest position's episode, if it was in one: when it began, and whether its
        # event was made already (it had lasted long enough).
        stored_since = np.array([self._stored_since(batch, d) for d in device.tolist()], dtype=np.float64)
        continues = first & over & ~np.isnan(stored_since)
        # On a derived speed the stored newest alone (its episode began at it) is one position: no event yet.
        stored_fix = batch.start_fix_time[rows]
        stored_derived = np.array([self._stored_derived(batch, d) for d in device.tolist()], dtype=np.bool_)
        stored_made = (
            continues & (stored_fix - stored_since >= self.minimal_s) & (~stored_derived | (stored_since < stored_fix))
        )
        previous_over = np.r_[False, over[:-1]] & ~first
        starts = over & ~previous_over & ~continues
        # Each over-the-limit position's run: its first position (a start, or a continuation of the
        # stored episode), found with one running maximum over the boundaries.
        at = np.arange(len(rows))
        boundary = np.maximum.accumulate(np.where(starts | continues | ~over, at, 0))
        began = np.where(continues[boundary], stored_since[boundary], fix[boundary])
        count = at - boundary + 1 + continues[boundary]  # positions in the run so far
        derived = np.isin(rows, _rows_marked(batch, "speedComputed"))
        eligible = over & (fix - began >= self.minimal_s) & (~derived | (count >= 2))
        # The event is at the first eligible position of a run whose event is not made yet.
        earlier = _run_cumulative_any(eligible, boundary) | (continues[boundary] & stored_made[boundary])
        event = eligible & ~earlier
        event_rows: Ints = rows[event]
        attributes = [
            {"speed": round(float(batch.speed[i]), 2), "speedLimit": float(limit[i])}
            | ({"geofenceId": int(geofence[i])} if geofence[i] else {})
            for i in event_rows.tolist()
        ]
        return StepResult(
            sparse={OVERSPEED_SINCE: (rows[over], began[over].tolist())},
            events=(Detected("deviceOverspeed", event_rows, None, attributes),),
        )

    @staticmethod
    def _stored_derived(batch: Batch, device: int) -> bool:
        state = batch.states.get(device)
        return state is not None and state.attributes.get("speedComputed") is True

    def _stored_since(self, batch: Batch, device: int) -> float:
        state = batch.states.get(device)
        since = None if state is None else state.attributes.get(OVERSPEED_SINCE)
        return float(since) if isinstance(since, int | float) and not isinstance(since, bool) else np.nan


def _rows_marked(batch: Batch, name: str) -> Ints:
    """The rows an earlier step marked with `name` (its sparse attribute; records get it only after
    every step has run)."""
    marked = batch.sparse.get(name)
    return np.zeros(0, dtype=np.int64) if marked is None else np.asarray(marked[0], dtype=np.int64)


def _run_cumulative_any(flags: Bools, boundary: Ints) -> Bools:
    """For each position, whether any earlier position of the same run (same boundary) is flagged."""
    total: Ints = np.cumsum(flags, dtype=np.int64)
    before: Ints = total - flags  # flagged positions strictly before each one
    return np.asarray(before - before[boundary] > 0, dtype=np.bool_)


@dataclass(frozen=True)
class MaintenanceItem:
    id: int
    device_id: int
    name: str
    type: str  # the growing value: totalDistance (m) or another numeric attribute such as hours; `date`: the sweep's
    start: float
    period: float
    lead: float | None = None  # a reminder this much before each due point (the item's unit)


@dataclass(frozen=True)
class DetectMaintenance:
    """maintenance: an item is due each time its value crosses start + k * period (k = 0, 1, ...),
    between a device's position and the one before it (or its stored newest). Several due points
    crossed at once make one event, at the last of them. Items of type `date` are the sweep's
    (events/status.py maintenance_date_events), not the positions'."""

    items: tuple[MaintenanceItem, ...]

    def __call__(self, batch: Batch, config: PipelineConfig) -> StepResult:
        alive = batch.alive
        previous = previous_alive(batch.device, alive)
        rows: list[Ints] = []
        subjects: list[Ints] = []
        details: list[dict[str, Any]] = []
        for item in self.items:
            crossing = _crossing(batch, item, alive, previous)
            if crossing is None:
                continue
            mine, before, now = crossing
            found, counts = self._found(item, before, now)
            details += [self._details(item, count) for count in counts]
            rows.append(mine[found])
            subjects.append(np.full(int(found.sum()), item.id, dtype=np.int64))
        if not details:
            return SKIP
        return StepResult(events=(Detected("maintenance", np.concatenate(rows), np.concatenate(subjects), details),))

    def _found(self, item: MaintenanceItem, before: Floats, now: Floats) -> tuple[Bools, list[float]]:
        """Where the item's event is, and the number of the due point each refers to."""
        crossed, due_now = _due_crossed(item.start, item.period, before, now)
        counts: list[float] = due_now[crossed].tolist()
        return crossed, counts

    def _details(self, item: MaintenanceItem, count: float) -> dict[str, Any]:
        return {"name": item.name[:128], "type": item.type, "due": item.start + count * item.period}


@dataclass(frozen=True)
class DetectMaintenanceReminders(DetectMaintenance):
    """The `maintenance` reminder of items with a `lead`: when the value crosses start + k * period - lead,
    with `reminder` true and the coming `due` point. A step that crosses a due point makes only its due
    event (DetectMaintenance), so a reminder and a due event of one item are never at one time: both
    are stored, each once (the unique key is device, type, time and subject, the item's id)."""

    def _found(self, item: MaintenanceItem, before: Floats, now: Floats) -> tuple[Bools, list[float]]:
        assert item.lead is not None
        due, _ = _due_crossed(item.start, item.period, before, now)
        reminded, remind_now = _due_crossed(item.start - item.lead, item.period, before, now)
        found = reminded & ~due
        counts: list[float] = remind_now[found].tolist()
        return found, counts

    def _details(self, item: MaintenanceItem, count: float) -> dict[str, Any]:
        return super()._details(item, count) | {"reminder": True, "lead": item.lead}


def _due_crossed(start: float, period: float, before: Floats, now: Floats) -> tuple[Bools, Floats]:
    """Whether each step from `before` to `now` passes a point start + k * period, and the number k of
    the last point at or below `now`."""
    due_before = np.floor((before - start) / period)
    due_now = np.floor((now - start) / period)
    crossed: Bools = (now >= start) & ~np.isnan(before) & (due_now > due_before)
    return crossed, due_now


def _crossing(batch: Batch, item: MaintenanceItem, alive: Bools, previous: Ints) -> tuple[Ints, Floats, Floats] | None:
    """The item's device's alive rows, with its value at each and at the position before it (or the
    stored newest); None when the batch has none of them, or the item is the sweep's."""
    if item.type == DATE:
        return None
    mine = np.flatnonzero(alive & (batch.device == item.device_id))
    if not len(mine):
        return None
    value = _values(batch, item.type)
    state = batch.states.get(item.device_id)
    stored = state.attributes.get(item.type) if state is not None else None
    before = np.where(
        previous[mine] >= 0,
        value[np.maximum(previous[mine], 0)],
        float(stored) if isinstance(stored, int | float) and not isinstance(stored, bool) else np.nan,
    )
    return mine, before, value[mine]


def _values(batch: Batch, name: str) -> Floats:
    """Each row's value of the growing quantity: the odometer the pipeline keeps, or the attribute."""
    if name in batch.attributes:
        return np.asarray(batch.attributes[name], dtype=np.float64)
    values = [row.attributes.get(name) for row in batch.rows]
    return np.array(
        [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan for v in values],
        dtype=np.float64,
    )


async def load_maintenance_reminders(session: AsyncSession, device_ids: list[int]) -> DetectMaintenanceReminders:
    """The reminders of these devices' items that set a valid `lead` (the positions' types, not dates)."""
    items = []
    for item, device_id in await maintenance_of(session, device_ids):
        lead = maintenance_lead(item.attributes, item.period)
        if item.id is not None and lead is not None and item.type != DATE:
            items.append(MaintenanceItem(item.id, device_id, item.name, item.type, item.start, item.period, lead))
    return DetectMaintenanceReminders(tuple(items))


async def maintenance_of(session: AsyncSession, device_ids: list[int]) -> list[tuple[Maintenance, int]]:
    """Each item that applies to one of these devices, with the device (an item linked to several comes
    once for each)."""
    found = await session.execute(
        sa.select(Maintenance, col(DeviceMaintenance.device_id))
        .join(DeviceMaintenance, col(DeviceMaintenance.maintenance_id) == col(Maintenance.id))
        .where(col(DeviceMaintenance.device_id).in_(device_ids))
        .order_by(col(Maintenance.id), col(DeviceMaintenance.device_id))
    )
    return [(item, device_id) for item, device_id in found]


# The detectors every batch runs after PIPELINE; geofences, overspeed and maintenance join them per
# batch, for the devices linked to a geofence, with a speed limit or maintenance items, and motion for
# every device (positions/service.py store_batch).
DETECTORS = (detect_ignition, detect_alarms)
