"""The device listener (port 5055): the OsmAnd protocol and Traccar Client's JSON, answered as
Traccar answers them, on the lean HTTP server of `http1` (a device port's hot path).

A 200 is sent only once the position is in Redis; Redis down answers 503 with Retry-After so the
device keeps the position and sends it again.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from tracker_jobs.commands import queue as commands
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import utcnow
from tracker_jobs.core.errors import UNREACHABLE, FieldError, HttpError, TooManyRequests, TrackerError
from tracker_jobs.core.fields import ID_MAX
from tracker_jobs.core.serialization import parse_json_body
from tracker_jobs.devices.service import DeviceDirectory, DisabledDevice, UnknownDevice
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import RECORD_COMMAND_UPDATES
from tracker_jobs.listener.http1 import HttpServer, Reply, Request, json_error, serve_http
from tracker_jobs.monitor.counters import POSITIONS_REJECTED, count
from tracker_jobs.positions.acceptor import Acceptor, CannotAccept
from tracker_jobs.positions.decode import Decoded, decode_osmand, decode_traccar_client_json
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import RateLimit

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
OK = Reply(200)


@dataclass(frozen=True)
class Ingest:
    """What taking positions in needs, built once per process by whoever serves (the CLI, a test):
    the group-commit acceptor, the uniqueId directory and the copy of which devices have commands."""

    acceptor: Acceptor
    directory: DeviceDirectory
    inbox: commands.Inbox


def form(encoded: str, charset: str = "utf-8") -> dict[str, str]:
    """Query or form fields; a repeated key keeps its first value, undecodable bytes become U+FFFD."""
    fields: dict[str, str] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True, encoding=charset, errors="replace"):
        fields.setdefault(key, value)
    return fields


def form_body(request: Request) -> dict[str, str]:
    """A form body in its declared charset (UTF-8 if none), trailing line breaks ignored. Only text
    encodings are read: Python also names transforms (base64, zlib, rot13, ...) as codecs."""
    charset = request.charset or "utf-8"
    try:
        if not codecs.lookup(charset)._is_text_encoding:
            raise LookupError(charset)
        return form(request.body.rstrip().decode(charset, "replace"), charset)
    except (LookupError, UnicodeError, ValueError):  # idna and friends fail even with errors="replace"
        raise FieldError(
            "Content-Type", f"charset {charset[:40]!r} is not a text encoding this listener reads"
        ) from None


class DeviceListener:
    """Answers one device request: decode, resolve the device, hand the position to the acceptor."""

    def __init__(self, settings: Settings, ingest: Ingest) -> None:
        self.settings = settings
        self.acceptor = ingest.acceptor
        self.directory = ingest.directory
        self.inbox = ingest.inbox
        # Per device, never per address: many trackers report through one gateway.
        self.limit = (
            RateLimit(settings.device_rate_limit, settings.rate_limit_window_s) if settings.device_rate_limit else None
        )

    async def __call__(self, request: Request) -> Reply:
        try:
            position = await self.receive(request)
            if self.is_json(request):  # Traccar Client's JSON is answered with a plain OK, as Traccar does
                return OK
            return await self.reply_with_command(position.device_id)
        except TrackerError as error:
            return json_error(error.status, error.code, error.message, tuple(error.headers.items()))

    async def reply_with_command(self, device_id: int) -> Reply:
        """The 200 of an OsmAnd request, carrying the device's oldest queued command if it has one (the
        position is in already: a failure here costs the command a later reply, never the position)."""
        try:
            if not await self.inbox.has_commands(device_id):
                return OK
            claimed = await commands.claim(self.acceptor.redis, device_id)
        except UNREACHABLE as error:
            log.warning("no command for device %d in this reply: %s", device_id, error)
            return OK
        if claimed is None:
            self.inbox.emptied(device_id)
            return OK
        if claimed.enqueue:
            try:  # taken from the queue: it goes in this reply whatever happens here (the cron records it)
                await enqueue(self.acceptor.redis, RECORD_COMMAND_UPDATES, defer_s=commands.RECORD_AFTER_S)
            except UNREACHABLE as error:
                log.warning("recording of command %d left to the cron: %s", claimed.command_id, error)
        return Reply(200, claimed.text.encode(), (("Content-Type", "text/plain; charset=utf-8"),))

    @staticmethod
    def is_json(request: Request) -> bool:
        return request.method == "POST" and request.content_type == "application/json"

    def decode(self, request: Request) -> Decoded:
        now = utcnow()
        if self.is_json(request):
            return decode_traccar_client_json(parse_json_body(request.content_type, request.body), now=now)
        params: dict[str, Any] = form(request.query)
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params.update(form_body(request))
        return decode_osmand(params, now=now, speed_unit=self.settings.osmand_speed_unit)

    async def refused(self, error: TrackerError) -> TrackerError:
        """Count a position refused at the door (its device's rate limit counts inside the accept)."""
        with contextlib.suppress(*UNREACHABLE):
            await count(self.acceptor.redis, {POSITIONS_REJECTED: 1})
        return error

    async def receive(self, request: Request) -> PositionRecord:
        if request.path != "/":
            raise HttpError(404, "not_found", f"{request.path[:80]} not found; devices report to /")
        if request.method not in ("GET", "POST"):
            raise HttpError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed; use GET or POST",
                headers={"Allow": "GET, POST"},
            )
        try:
            unique_id, position = self.decode(request)
            position.device_id = await self.directory.resolve(unique_id, auto_register=self.settings.auto_register)
        except (FieldError, UnknownDevice, DisabledDevice) as error:
            raise await self.refused(error) from None
        except UNREACHABLE as error:
            log.warning("refusing a position: %s", error)
            raise CannotAccept() from None
        try:
            answer = await self.acceptor.accept([position], self.limit)
        except UNREACHABLE as error:
            log.warning("refusing a position: %s", error)
            raise CannotAccept() from None
        if answer.waits_ms[0]:
            raise TooManyRequests(answer.waits_ms[0] / 1000, f"from device {unique_id!r}")
        if "result" in position.attributes:
            await self.report_result(position)
        return position

    async def report_result(self, position: PositionRecord) -> None:
        """A device's answer to a command, for record_command_updates to tie to it (the oldest sent
        command, or the one its `commandId` names). Redis failing here answers 503: the device sends
        the position again, and the position is stored once."""
        command_id = position.attributes.get("commandId")
        try:
            enqueue_now = await commands.report_result(
                self.acceptor.redis,
                position.device_id,
                str(position.attributes["result"])[: commands.MAX_RESULT],
                # A whole number naming an id (typed_value makes `true` a bool, which is an int too).
                command_id if type(command_id) is int and 0 < command_id <= ID_MAX else None,
                position.server_time,  # when the answer came (the fix may be older)
            )
            if enqueue_now:
                await enqueue(self.acceptor.redis, RECORD_COMMAND_UPDATES, defer_s=commands.RECORD_AFTER_S)
        except UNREACHABLE as error:
            log.warning("refusing a result: %s", error)
            raise CannotAccept() from None


async def serve_listener(settings: Settings, ingest: Ingest, host: str, port: int) -> HttpServer:
    return await serve_http(
        DeviceListener(settings, ingest),
        host,
        port,
        max_body_bytes=MAX_BODY_BYTES,
        max_connections=settings.listener_max_connections,
        max_connections_per_address=settings.listener_max_connections_per_address,
    )
