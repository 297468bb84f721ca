"""Which sections each kind of report has, and building them from the database a batch of devices at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.trip_rule import DetectionParams
from tracker_jobs.reports import analysis
from tracker_jobs.reports.loading import (
    DeviceInfo,
    TrackBatch,
    load_devices,
    load_events,
    load_position_attributes,
    load_tracks,
    plan_batches,
    stream_positions,
)
from tracker_jobs.reports.sections import SECTION_COLUMNS, RowChunks, Section, event_row, in_one_chunk, route_row

SECTIONS_OF_KIND: dict[str, tuple[str, ...]] = {
    "route": ("route",),
    "trips": ("trips",),
    "stops": ("stops",),
    "summary": ("summary",),
    "events": ("events",),
    "detailed": ("summary", "trips", "stops", "events"),
    "fleet": ("summary", "trips", "stops", "totals"),
    "daily": ("summary", "trips"),  # made by the midnight cron for each user
}
DEVICE_KINDS = ("summary", "detailed", "route", "trips", "stops", "events")
DIRECT_KINDS = ("route", "trips", "stops", "summary", "events")
_DETECTED = {"trips", "stops", "summary", "totals"}
PROGRESS_EVERY_S = 0.5

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class ReportRequest:
    kind: str
    device_ids: tuple[int, ...]
    start: datetime
    end: datetime
    daily: bool = False
    event_types: tuple[str, ...] = ()


@dataclass
class BuiltReport:
    sections: list[Section]
    totals: dict[str, Any] = field(default_factory=dict)


async def no_progress(_done: int, _total: int) -> None:
    return None


async def build_report(
    sessions: async_sessionmaker[AsyncSession],
    request: ReportRequest,
    defaults: DetectionParams,
    timezone: str,
    progress: Progress = no_progress,
) -> BuiltReport:
    """The report's sections; detected ones are complete here, route rows stream when read."""
    names = SECTIONS_OF_KIND[request.kind]
    async with sessions() as session:
        devices = await load_devices(session, request.device_ids)
    built = BuiltReport(sections=[])
    detected: dict[str, pd.DataFrame] = {}
    if _DETECTED & set(names):
        detected = await _detect_all(sessions, request, devices, defaults, timezone, progress)
        built.totals = analysis.totals(len(devices), detected["summary"], detected["trips"], detected["stops"])
        detected["totals"] = pd.DataFrame([built.totals])
    for name in names:
        if name in detected:
            built.sections.append(Section(name, in_one_chunk(analysis.frame_rows(detected[name], name))))
        elif name == "route":
            built.sections.append(Section(name, _route_chunks(sessions, devices, request, progress)))
        else:
            built.sections.append(Section(name, await _event_chunks(sessions, devices, request)))
    return built


async def _detect_all(
    sessions: async_sessionmaker[AsyncSession],
    request: ReportRequest,
    devices: Sequence[DeviceInfo],
    defaults: DetectionParams,
    timezone: str,
    progress: Progress,
) -> dict[str, pd.DataFrame]:
    """Trips, stops and summaries of every device, in their order; the next batch loads while this one is analysed."""
    params = {device.id: analysis.detection_params(defaults, device) for device in devices}
    by_id = {device.id: device for device in devices}
    async with sessions() as session:
        batches = await plan_batches(session, list(by_id), request.start, request.end)
    frames: list[analysis.DeviceFrames] = []
    daily_timezone = timezone if request.daily else None
    ticker = _ProgressTicker(progress, len(devices))
    loading = _start_loading(sessions, batches, 0, request)
    try:
        for index, batch in enumerate(batches):
            tracks = await loading
            loading = _start_loading(sessions, batches, index + 1, request)
            devices_of_batch = [by_id[device_id] for device_id in batch]
            frames.extend(await _analyse_batch(sessions, tracks, devices_of_batch, params, daily_timezone, ticker))
    finally:
        loading.cancel()
    await ticker.finish()
    return {
        "trips": _concat([f.trips for f in frames], "trips"),
        "stops": _concat([f.stops for f in frames], "stops"),
        "summary": _concat([f.summary for f in frames], "summary"),
    }


async def _analyse_batch(
    sessions: async_sessionmaker[AsyncSession],
    tracks: TrackBatch,
    devices: Sequence[DeviceInfo],
    params: dict[int, DetectionParams],
    daily_timezone: str | None,
    ticker: _ProgressTicker,
) -> list[analysis.DeviceFrames]:
    """Devices analysed one at a time in a thread (a second one gained nothing: the GIL), while the event
    loop reads the boundary attributes of those done."""
    one_at_a_time = asyncio.Lock()

    async def analyse(device: DeviceInfo) -> analysis.DeviceFrames:
        async with one_at_a_time:
            frames = await asyncio.to_thread(
                lambda: analysis.analyse(device, tracks.track(device.id), params[device.id], daily_timezone)
            )
        async with sessions() as session:
            attributes = await load_position_attributes(session, sorted(frames.boundary_ids()))
        await ticker.tick()
        return analysis.attach_attributes(frames, attributes)

    return list(await asyncio.gather(*(analyse(device) for device in devices)))


def _start_loading(
    sessions: async_sessionmaker[AsyncSession], batches: list[list[int]], index: int, request: ReportRequest
) -> asyncio.Future[TrackBatch]:
    return asyncio.ensure_future(_load_batch(sessions, batches[index] if index < len(batches) else [], request))


async def _load_batch(
    sessions: async_sessionmaker[AsyncSession], device_ids: list[int], request: ReportRequest
) -> TrackBatch:
    async with sessions() as session:
        return await load_tracks(session, device_ids, request.start, request.end)


def _concat(frames: list[pd.DataFrame], section: str) -> pd.DataFrame:
    columns = [column.name for column in SECTION_COLUMNS[section]]
    present = [frame for frame in frames if len(frame)]
    if not present:
        return pd.DataFrame({name: [] for name in columns})
    return pd.concat(present, ignore_index=True)[columns]


class _ProgressTicker:
    """Reports devices done as they finish, at most every PROGRESS_EVERY_S."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done, self.last = progress, total, 0, 0.0

    async def tick(self) -> None:
        self.done += 1
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            await self.finish()

    async def finish(self) -> None:
        self.last = time.monotonic()
        await self.progress(self.done, self.total)


async def _route_chunks(
    sessions: async_sessionmaker[AsyncSession],
    devices: Sequence[DeviceInfo],
    request: ReportRequest,
    progress: Progress,
) -> RowChunks:
    for done, device in enumerate(devices):
        async with sessions() as session:
            async for rows in stream_positions(session, device.id, request.start, request.end):
                yield [route_row(row) for row in rows]
        await progress(done + 1, len(devices))


async def _event_chunks(
    sessions: async_sessionmaker[AsyncSession], devices: Sequence[DeviceInfo], request: ReportRequest
) -> AsyncIterator[Sequence[dict[str, Any]]]:
    async with sessions() as session:
        events = await load_events(
            session, [device.id for device in devices], request.start, request.end, request.event_types
        )
    return in_one_chunk([event_row(event) for event in events])
