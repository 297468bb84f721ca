"""Notification mail, written: subject, plain text and HTML for one event or a digest of several.

Each event type has its template, `templates/{type}.jinja`, with three blocks: `subject`, `text` and
`html` (`_generic.jinja` for any other type). Every block is rendered on its own (so a `{% set %}` belongs
inside the block that uses it; the top level of a template never runs): subject and text by an
environment that does not escape (they are not HTML), the html block by one that escapes everything
(device, geofence and maintenance names are user input). The `_details.*` parts list time, position and
link under an event; `_layout.jinja` wraps the HTML bodies into one document.

A name a template uses that the context lacks is an error (StrictUndefined), but the item's own data is
optional: a missing key of a device, position, attribute or summary row reads as None (printed empty).

An item, as the notification job passes it (a plain dict):

    {
        "type": "geofenceEnter",                   # an event type, "dailySummary" or "systemAlert"
        "eventTime": datetime,                     # aware, UTC (a naive one is taken as UTC)
        "device": {"id": 7, "name": "Truck 7", "uniqueId": "123456"} | None,
        "position": {"latitude": 52.5, "longitude": 13.4, "speed": 27.0, ...} | None,  # speed in knots
        "geofence": {"id": 3, "name": "Depot"} | None,
        "maintenance": {"id": 2, "name": "Oil change"} | None,
        "attributes": {...},                       # the event's attributes (alarm, speedLimit in knots, ...)
    }

A daily summary (`dailySummary`) carries `attributes = {"date": "YYYY-MM-DD", "devices": [{"name",
"distance" (m), "drivingTime" (s), "maxSpeed" (knots), "trips", "events": {type: count}}]}`; a system
alert (`systemAlert`) carries `attributes = {"kind", "message", "severity", "state": "opened" |
"resolved"}`.

Times are shown in the recipient's IANA zone with its abbreviation (an unknown zone falls back to UTC),
speeds in km/h, distances in km; with a public URL the device links to `{public_url}/?deviceId={id}`.
Subjects are one line of at most 200 characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from markupsafe import Markup

KNOTS_TO_KMH = 1.852
SUBJECT_LIMIT = 200
GENERIC = "_generic"
EVENT_TYPES = (
    "geofenceEnter",
    "geofenceExit",
    "deviceOverspeed",
    "deviceMoving",
    "deviceStopped",
    "deviceOnline",
    "deviceUnknown",
    "deviceOffline",
    "deviceInactive",
    "alarm",
    "ignitionOn",
    "ignitionOff",
    "maintenance",
    "test",
    "dailySummary",
    "systemAlert",
)
"""The types with a template of their own (`templates/{type}.jinja`); any other renders with `_generic`."""

LABELS = {
    "geofenceEnter": "geofence entered",
    "geofenceExit": "geofence left",
    "deviceOverspeed": "overspeed",
    "deviceMoving": "started moving",
    "deviceStopped": "stopped",
    "deviceOnline": "online",
    "deviceUnknown": "status unknown",
    "deviceOffline": "offline",
    "deviceInactive": "inactive",
    "alarm": "alarm",
    "ignitionOn": "ignition on",
    "ignitionOff": "ignition off",
    "maintenance": "maintenance due",
    "test": "test notification",
    "dailySummary": "daily summary",
    "systemAlert": "system alert",
}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_DASH = "–"


def one_line(value: object) -> str:
    """Text as one line: line breaks, tabs and other control characters become spaces, runs of spaces one."""
    text = "" if value is None else str(value)
    return " ".join("".join(" " if not char.isprintable() else char for char in text).split())


def bounded_subject(text: str) -> str:
    line = one_line(text)
    return line if len(line) <= SUBJECT_LIMIT else line[: SUBJECT_LIMIT - 1].rstrip() + "…"


def label(value: object) -> str:
    """A readable name of an event (or alarm) type: LABELS, else the camelCase split into words."""
    name = one_line(value)
    return LABELS.get(name) or _CAMEL.sub(" ", name).lower() or "event"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def kmh(knots: object) -> str:
    number = _number(knots)
    return _DASH if number is None else f"{number * KNOTS_TO_KMH:.0f} km/h"


def km(metres: object) -> str:
    number = _number(metres)
    return _DASH if number is None else f"{number / 1000:.1f} km"


def hmm(seconds: object) -> str:
    """A duration as h:mm (1:05 is an hour and five minutes)."""
    number = _number(seconds)
    if number is None:
        return _DASH
    minutes = int(round(max(number, 0.0)) // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def coord(degrees: object) -> str:
    number = _number(degrees)
    return _DASH if number is None else f"{number:.5f}"


class _Data(dict[str, Any]):
    """An item's own data in a template: a key it lacks reads as None (a missing template name still fails)."""

    def __missing__(self, key: str) -> None:
        return None


def _data(value: object) -> Any:
    if isinstance(value, Mapping):
        return _Data((str(key), _data(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return [_data(item) for item in value]
    return value


def _finalize(value: object) -> object:
    return "" if value is None else value


def _environment(*, html: bool) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tracker_jobs.notifications", "templates"),
        # The text environment renders subjects and text/plain bodies, never HTML: escaping would garble them.
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True) if html else False,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    environment.filters.update(one_line=one_line, label=label, kmh=kmh, km=km, hmm=hmm, coord=coord)
    return environment


_TEXT = _environment(html=False)
_HTML = _environment(html=True)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _event_time(item: Mapping[str, Any]) -> datetime | None:
    value = item.get("eventTime")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _format_time(when: datetime | None, zone: ZoneInfo) -> str:
    if when is None:
        return "an unknown time"
    local = when.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or zone.key}"


def _named(value: object) -> _Data | None:
    """A device, geofence or maintenance as given, its name made one line."""
    if not isinstance(value, Mapping):
        return None
    named: _Data = _data(value)
    named["name"] = one_line(named["name"])
    return named


def _context(item: Mapping[str, Any], zone: ZoneInfo, public_url: str | None) -> dict[str, Any]:
    device = _named(item.get("device"))
    geofence = _named(item.get("geofence"))
    maintenance = _named(item.get("maintenance"))
    position = item.get("position")
    attributes = item.get("attributes")
    device_name = ""
    device_url = None
    if device is not None:
        device_name = device["name"] or one_line(device["uniqueId"])
        if not device_name and device["id"] is not None:
            device_name = f"Device {one_line(device['id'])}"
        if public_url and device["id"] is not None:
            device_url = f"{public_url.rstrip('/')}/?deviceId={quote(str(device['id']), safe='')}"
    return {
        "type": one_line(item.get("type")),
        "time": _format_time(_event_time(item), zone),
        "device": device,
        "device_name": device_name or "A device",
        "device_url": device_url,
        "position": _data(position) if isinstance(position, Mapping) else None,
        "geofence": geofence,
        "geofence_name": (geofence["name"] if geofence else "") or "a geofence",
        "maintenance": maintenance,
        "maintenance_name": maintenance["name"] if maintenance else "",
        "attributes": _data(attributes) if isinstance(attributes, Mapping) else _Data(),
        "public_url": public_url.rstrip("/") if public_url else None,
    }


def template_name(event_type: object) -> str:
    """The template an item of this type renders with."""
    return f"{event_type}.jinja" if event_type in EVENT_TYPES else f"{GENERIC}.jinja"


def _block(environment: jinja2.Environment, name: str, block: str, context: dict[str, Any]) -> str:
    template = environment.get_template(name)
    return "".join(template.blocks[block](template.new_context(context))).strip()


def _render_one(item: Mapping[str, Any], zone: ZoneInfo, public_url: str | None) -> tuple[str, str, Markup]:
    name = template_name(item.get("type"))
    context = _context(item, zone, public_url)
    subject = bounded_subject(_block(_TEXT, name, "subject", context))
    text = _block(_TEXT, name, "text", context)
    html = Markup(_block(_HTML, name, "html", context))  # noqa: S704 - rendered with every value escaped
    return subject, text, html


def _page(title: str, bodies: list[Markup], heading: str | None) -> str:
    layout = _HTML.get_template("_layout.jinja")
    return layout.render(title=title, heading=heading, bodies=bodies).strip() + "\n"


def render(items: list[dict[str, Any]], *, timezone: str, public_url: str | None) -> tuple[str, str, str]:
    """(subject, text, html) of one item, or of a digest of several in time order."""
    if not items:
        raise ValueError("render: no items")
    zone = _zone(timezone)
    if len(items) == 1:
        subject, text, html = _render_one(items[0], zone, public_url)
        return subject, text + "\n", _page(subject, [html], None)
    earliest = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(items, key=lambda item: _event_time(item) or earliest)
    rendered = [_render_one(item, zone, public_url) for item in ordered]
    heading = f"{len(rendered)} events"
    subject = bounded_subject(f"{heading}: " + ", ".join(subject for subject, _, _ in rendered))
    separator = "\n\n" + "-" * 40 + "\n\n"
    text = heading + separator + separator.join(text for _, text, _ in rendered) + "\n"
    return subject, text, _page(subject, [html for _, _, html in rendered], heading)
