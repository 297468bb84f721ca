"""Geofences in the position pipeline: each position's `geofenceIds`, and geofenceEnter/geofenceExit
events, the difference of a device's sets from one position to the next (Traccar's rule).

A batch loads the links of its devices (one row per device on PostgreSQL, the geofence ids and
revisions as arrays) into `Links`. Parsing WKT and building the index cost far more than the lookup,
so a worker process keeps parsed shapes by id and revision (a geofence's revision grows with every
change) and the index of the set it last built (`ShapeCache`). The step itself is vectorised:
membership for every kept position at once (events/geofences.py), then enter and exit found with set
operations over sorted (row, geofence) keys, never a loop over positions or geofences.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.core.db import dialect_name
from tracker_jobs.core.errors import FieldError
from tracker_jobs.events.geofences import GeofenceIndex, Links, Shape, grown, hysteresis_m, parse_area
from tracker_jobs.events.models import DeviceGeofence, Geofence
from tracker_jobs.positions.pipeline import (
    Batch,
    Detected,
    DeviceState,
    Ints,
    PipelineConfig,
    StepResult,
    previous_alive,
)

log = logging.getLogger(__name__)
GEOFENCE_IDS = "geofenceIds"  # the position attribute, as Traccar names it
_ROW_SHIFT = 31  # (row or device, geofence id) pairs as one integer: ids fit in 31 bits


@dataclass
class ShapeCache:
    """One worker process's parsed geofences, by id: (revision, shape), or None for an area that no
    longer parses (skipped, with one warning per revision). And the index over the last set used."""

    shapes: dict[int, tuple[int, Shape | None]] = field(default_factory=dict)
    speed_limits: dict[int, float] = field(default_factory=dict)  # knots, for geofences that set `speedLimit`
    hysteresis: dict[int, float] = field(default_factory=dict)  # metres, for geofences that set `hysteresis`
    index: GeofenceIndex | None = None
    grown: GeofenceIndex | None = None  # the geofences with hysteresis, widened by it


@dataclass(frozen=True)
class Geofencing:
    """The geofences a batch's devices are linked to: the index over them and the links."""

    index: GeofenceIndex
    links: Links | Sequence[tuple[int, int]]  # (device id, geofence id)
    speed_limits: dict[int, float] = field(default_factory=dict)  # knots, of those that set `speedLimit`
    grown: GeofenceIndex | None = None  # those with hysteresis, widened by it
    sticky: frozenset[int] = frozenset()  # their ids
    linked: Links = field(init=False, repr=False)  # `links` as `Links`, made once for the batch

    def __post_init__(self) -> None:
        object.__setattr__(self, "linked", self.links if isinstance(self.links, Links) else Links.of(self.links))


# PostgreSQL reads the links of a batch's devices with one array parameter, one row per device with
# its geofences' ids and revisions as arrays: a few hundred rows, not one per link. Unordered: sorting
# them is cheaper in numpy than in the query.
_PG_LINKS = sa.text(
    """
    SELECT dg.device_id, array_agg(g.id), array_agg(g.revision)
    FROM device_geofences AS dg JOIN geofences AS g ON g.id = dg.geofence_id
    WHERE dg.device_id = ANY(:ids)
    GROUP BY dg.device_id
    """
).bindparams(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Integer())))


async def _load_links(session: AsyncSession, device_ids: list[int]) -> tuple[Ints, Ints, Ints]:
    """(device id, geofence id, the geofence's revision) of every link of these devices, as arrays
    sorted by device, then geofence."""
    if dialect_name(session) == "postgresql":
        rows = (await session.execute(_PG_LINKS, {"ids": device_ids})).all()
        counts = np.array([len(ids) for _, ids, _ in rows], dtype=np.int64)
        devices = np.repeat(np.array([device for device, _, _ in rows], dtype=np.int64), counts)
        total = int(counts.sum())
        geofences = np.fromiter(chain.from_iterable(ids for _, ids, _ in rows), dtype=np.int64, count=total)
        revisions = np.fromiter(chain.from_iterable(revs for _, _, revs in rows), dtype=np.int64, count=total)
    else:
        linked = (
            await session.execute(
                sa.select(col(DeviceGeofence.device_id), col(Geofence.id), col(Geofence.revision))
                .join(Geofence, col(Geofence.id) == col(DeviceGeofence.geofence_id))
                .where(col(DeviceGeofence.device_id).in_(device_ids))
            )
        ).all()
        columns = np.array(linked, dtype=np.int64).reshape(-1, 3)
        devices, geofences, revisions = columns[:, 0], columns[:, 1], columns[:, 2]
    order = np.lexsort((geofences, devices))
    return devices[order], geofences[order], revisions[order]


async def load_geofencing(session: AsyncSession, device_ids: Iterable[int], cache: ShapeCache) -> Geofencing | None:
    """The geofences linked to these devices (None when there are none), parsing only what changed."""
    devices, geofences, revisions = await _load_links(session, sorted(set(device_ids)))
    if not len(devices):
        return None
    distinct, first = np.unique(geofences, return_index=True)
    revision_of = dict(zip(distinct.tolist(), revisions[first].tolist(), strict=True))
    stale = [
        gid for gid, revision in revision_of.items() if gid not in cache.shapes or cache.shapes[gid][0] != revision
    ]
    if stale:
        found = await session.execute(
            sa.select(col(Geofence.id), col(Geofence.revision), col(Geofence.area), col(Geofence.attributes)).where(
                col(Geofence.id).in_(stale)
            )
        )
        for geofence_id, revision, area, attributes in found:
            cache.shapes[geofence_id] = (revision, _parsed(geofence_id, area, attributes))
            limit = attributes.get("speedLimit")
            if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
                cache.speed_limits[geofence_id] = float(limit)
            else:
                cache.speed_limits.pop(geofence_id, None)
            try:
                cache.hysteresis[geofence_id] = hysteresis_m(attributes)
            except FieldError:
                cache.hysteresis[geofence_id] = 0.0
    if stale or cache.index is None:
        # Over every geofence this worker has met, not only this batch's: batches of other partitions
        # link other sets, and the links already narrow each lookup. Rebuilt only when one changed.
        usable = {gid: shape for gid, (_, shape) in cache.shapes.items() if shape is not None}
        cache.index = GeofenceIndex(usable)
        widened = {
            gid: grown(shape, cache.hysteresis[gid]) for gid, shape in usable.items() if cache.hysteresis.get(gid)
        }
        cache.grown = GeofenceIndex(widened) if widened else None
    limits = {gid: cache.speed_limits[gid] for gid in revision_of if gid in cache.speed_limits}
    sticky = frozenset(gid for gid in revision_of if cache.hysteresis.get(gid))
    return Geofencing(cache.index, Links(devices, geofences), limits, cache.grown, sticky)


def _parsed(geofence_id: int, area: str, attributes: Mapping[str, object]) -> Shape | None:
    try:
        return parse_area(area, attributes)
    except FieldError as error:  # stored before the checks of today; the API refuses such areas now
        log.warning("geofence %d is skipped: %s", geofence_id, error)
        return None


@dataclass(frozen=True)
class DetectGeofences:
    """The pipeline step: `geofenceIds` on every kept position inside any of its device's geofences;
    geofenceEnter and geofenceExit at the alive positions where a device's set changes. Late positions
    get their `geofenceIds` but make no event. A geofence with hysteresis keeps a device that was
    inside it until it is that far outside (`_sticky`)."""

    geofencing: Geofencing

    def __call__(self, batch: Batch, config: PipelineConfig) -> StepResult:
        kept = np.flatnonzero(batch.kept)
        fencing = self.geofencing
        linked = fencing.linked
        points, ids = fencing.index.members(batch.latitude[kept], batch.longitude[kept], batch.device[kept], linked)
        rows = kept[points]  # sorted by row, then geofence id
        alive = batch.alive
        stored = _stored_pairs(batch.states, linked.keys)
        if fencing.grown is not None:
            rows, ids = _with_hysteresis(batch, alive, rows, ids, fencing, stored)
        member_rows, starts = np.unique(rows, return_index=True)
        # One list per member row (the attribute's value): slices of one list, not one array each.
        flat, bounds = ids.tolist(), [*starts.tolist(), len(ids)]
        values = [flat[start:end] for start, end in pairwise(bounds)]
        at_alive = alive[rows]
        entered, left = _crossings(batch, alive, rows[at_alive], ids[at_alive], stored)
        return StepResult(
            sparse={GEOFENCE_IDS: (member_rows, values)},
            events=(
                Detected("geofenceEnter", entered[0], subject=entered[1]),
                Detected("geofenceExit", left[0], subject=left[1]),
            ),
        )


def _crossings(
    batch: Batch, alive: np.ndarray, rows: Ints, ids: Ints, stored: Ints
) -> tuple[tuple[Ints, Ints], tuple[Ints, Ints]]:
    """(rows, geofence ids) of entries and of exits, from the alive rows' memberships (sorted by row,
    then geofence id) and each device's stored newest position's set (`stored`, sorted pair keys)."""
    inside = (rows << _ROW_SHIFT) | ids  # sorted, as the rows and ids are
    previous = previous_alive(batch.device, alive)[rows]
    was_inside = np.where(
        previous >= 0,
        _within((previous << _ROW_SHIFT) | ids, inside),
        _within((batch.device[rows] << _ROW_SHIFT) | ids, stored),
    )
    entered = (rows[~was_inside], ids[~was_inside])
    # Left: inside at one alive row, not at the device's next alive row...
    following = _next_alive(batch.device, alive)[rows]
    gone = (following >= 0) & ~_within((following << _ROW_SHIFT) | ids, inside)
    exit_rows, exit_ids = [following[gone]], [ids[gone]]
    # ... or inside at the stored newest, not at the device's first alive row of this batch.
    if len(stored) and alive.any():
        devices, geofences = stored >> _ROW_SHIFT, stored & ((1 << _ROW_SHIFT) - 1)
        alive_rows = np.flatnonzero(alive)
        first_devices, first_index = np.unique(batch.device[alive_rows], return_index=True)
        slot = np.searchsorted(first_devices, devices)
        present = (slot < len(first_devices)) & (first_devices[np.minimum(slot, len(first_devices) - 1)] == devices)
        first_rows = alive_rows[first_index[slot[present]]]
        out = ~_within((first_rows << _ROW_SHIFT) | geofences[present], inside)
        exit_rows.append(first_rows[out])
        exit_ids.append(geofences[present][out])
    left_rows, left_ids = np.concatenate(exit_rows), np.concatenate(exit_ids)
    order = np.lexsort((left_ids, left_rows))
    return entered, (left_rows[order], left_ids[order])


def _with_hysteresis(
    batch: Batch, alive: np.ndarray, rows: Ints, ids: Ints, fencing: Geofencing, stored: Ints
) -> tuple[Ints, Ints]:
    """The memberships, those of geofences with hysteresis at alive rows replaced by `_sticky`'s."""
    assert fencing.grown is not None
    live = np.flatnonzero(alive)
    points, outer_ids = fencing.grown.members(
        batch.latitude[live], batch.longitude[live], batch.device[live], fencing.linked
    )
    sticky_ids = np.array(sorted(fencing.sticky), dtype=np.int64)
    plain = ~(alive[rows] & _within(ids, sticky_ids))
    kept_rows, kept_ids = _sticky(batch, alive, rows, ids, live[points], outer_ids, stored)
    rows, ids = np.concatenate([rows[plain], kept_rows]), np.concatenate([ids[plain], kept_ids])
    order = np.lexsort((ids, rows))
    return rows[order], ids[order]


def _sticky(
    batch: Batch, alive: np.ndarray, inner_rows: Ints, inner_ids: Ints, rows: Ints, ids: Ints, stored: Ints
) -> tuple[Ints, Ints]:
    """Membership with hysteresis, from where each alive position is inside the area (`inner`) and
    inside it widened (`rows`, `ids`): a device is inside from a position inside the area, and stays
    so while its next positions are inside the widened area; a run of such positions at the device's
    first alive position of the batch goes on from the stored newest position's set (`stored`)."""
    order = np.lexsort((rows, ids))  # per geofence, per device, in time: the rows are sorted so
    rows, ids = rows[order], ids[order]
    widened = np.sort((rows << _ROW_SHIFT) | ids)
    previous = previous_alive(batch.device, alive)[rows]
    starts = (previous < 0) | ~_within((previous << _ROW_SHIFT) | ids, widened)
    run = np.cumsum(starts) - 1
    inside = _within((rows << _ROW_SHIFT) | ids, (inner_rows << _ROW_SHIFT) | inner_ids)  # inner: sorted
    seen = np.cumsum(inside)
    before: Ints = (seen - inside)[np.flatnonzero(starts)][run]  # inside positions before each run began
    first = rows[np.flatnonzero(starts)][run]
    carried = (previous_alive(batch.device, alive)[first] < 0) & _within(
        (batch.device[first] << _ROW_SHIFT) | ids, stored
    )
    member = (seen - before > 0) | carried
    return rows[member], ids[member]


def _stored_pairs(states: Mapping[int, DeviceState], linked: Ints) -> Ints:
    """(device, geofence) pairs of the stored newest positions' sets, those still linked only (sorted
    keys; `linked` sorted too): a geofence deleted or unlinked meanwhile makes no exit (nor an event
    naming a geofence gone)."""
    pairs = [(device << _ROW_SHIFT) | gid for device, state in states.items() for gid in state.geofence_ids]
    stored = np.unique(np.array(pairs, dtype=np.int64))
    return stored[_within(stored, linked)]


def _within(keys: Ints, sorted_keys: Ints) -> npt.NDArray[np.bool_]:
    """Whether each of `keys` is one of `sorted_keys` (sorted): np.isin without sorting them again."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found: npt.NDArray[np.bool_] = sorted_keys[at] == keys
    return found


def _next_alive(device: Ints, alive: np.ndarray) -> Ints:
    """For each row, the index of the next alive row of the same device, or -1."""
    following = np.full(len(device), -1, dtype=np.int64)
    rows = np.flatnonzero(alive)
    same = device[rows[1:]] == device[rows[:-1]]
    following[rows[:-1][same]] = rows[1:][same]
    return following
