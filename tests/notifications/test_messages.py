"""Notification mail as written: a template per event type, local times, units, escaping, digests, the daily
summary and the fallback for any other type."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

import pytest

from tracker_jobs.notifications.messages import EVENT_TYPES, GENERIC, render, template_name

NOON_UTC = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 13:00 CET in Berlin
PUBLIC_URL = "https://fleet.test"


def item(event_type: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": event_type,
        "eventTime": NOON_UTC,
        "device": {"id": 7, "name": "Truck 7", "uniqueId": "860000000000007"},
        "position": {"latitude": 52.5200081, "longitude": 13.4049542, "speed": 50.0, "course": 90.0},
        "geofence": {"id": 3, "name": "Depot"},
        "maintenance": {"id": 2, "name": "Oil change"},
        "attributes": {"alarm": "lowBattery", "speedLimit": 43.2},
    }
    if event_type == "dailySummary":
        base.update(device=None, position=None, geofence=None, maintenance=None, attributes=summary_attributes())
    if event_type == "systemAlert":
        base.update(
            device=None,
            position=None,
            geofence=None,
            maintenance=None,
            attributes={
                "kind": "backlog",
                "message": "positions are 20 min behind",
                "severity": "critical",
                "state": "opened",
            },
        )
    base.update(changes)
    return base


def summary_attributes() -> dict[str, Any]:
    return {
        "date": "2026-03-01",
        "devices": [
            {
                "name": "Van <3>",
                "distance": 12_345.0,
                "drivingTime": 3_900,
                "maxSpeed": 60.0,
                "trips": 2,
                "events": {"geofenceEnter": 3, "deviceOverspeed": 1},
            },
            {"name": "Bus", "distance": 0, "drivingTime": 0, "maxSpeed": 0, "trips": 0, "events": {}},
        ],
    }


def one(
    entry: dict[str, Any], *, timezone: str = "Europe/Berlin", public_url: str | None = PUBLIC_URL
) -> tuple[str, str, str]:
    return render([entry], timezone=timezone, public_url=public_url)


# --- every template ---------------------------------------------------------------------------------------------


def test_every_type_has_its_template_and_every_template_a_type() -> None:
    shipped = {entry.name for entry in files("tracker_jobs.notifications").joinpath("templates").iterdir()}
    per_type = {name for name in shipped if not name.startswith("_")}
    assert per_type == {f"{event_type}.jinja" for event_type in EVENT_TYPES}
    assert f"{GENERIC}.jinja" in shipped
    assert template_name("geofenceEnter") == "geofenceEnter.jinja"
    assert template_name("commandResult") == template_name("../../etc/passwd") == "_generic.jinja"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_template_renders_subject_text_and_html(event_type: str) -> None:
    subject, text, html = one(item(event_type))
    assert subject
    assert "\n" not in subject
    assert len(subject) <= 200
    assert text.strip()
    assert "None" not in subject + text + html  # a missing value never shows as Python's None
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    assert f"<title>{subject}</title>" in html
    if event_type not in {"test", "dailySummary", "systemAlert"}:
        assert "Truck 7" in subject
        assert "Truck 7" in text
        assert "Truck 7" in html
        assert "Time: 2026-03-02 13:00:00 CET" in text
        assert "Position: 52.52001, 13.40495 at 93 km/h" in text  # 5 decimals; 50 kn = 92.6 km/h
        assert "Open in the tracker: https://fleet.test/?deviceId=7" in text
        assert 'href="https://fleet.test/?deviceId=7"' in html


@pytest.mark.parametrize(
    ("event_type", "subject"),
    [
        ("geofenceEnter", "Truck 7 entered Depot"),
        ("geofenceExit", "Truck 7 left Depot"),
        ("deviceOverspeed", "Truck 7 exceeded the speed limit: 93 km/h"),
        ("deviceMoving", "Truck 7 started moving"),
        ("deviceStopped", "Truck 7 stopped"),
        ("deviceOnline", "Truck 7 is online"),
        ("deviceUnknown", "Truck 7: status unknown"),
        ("deviceOffline", "Truck 7 is offline"),
        ("deviceInactive", "Truck 7 has been inactive"),
        ("alarm", "Truck 7: alarm low battery"),
        ("ignitionOn", "Truck 7: ignition on"),
        ("ignitionOff", "Truck 7: ignition off"),
        ("maintenance", "Truck 7: maintenance due (Oil change)"),
        ("test", "Test notification"),
        ("dailySummary", "Daily summary for 2026-03-01: 2 devices"),
        ("systemAlert", "System alert (critical): backlog – positions are 20 min behind"),
    ],
)
def test_subjects(event_type: str, subject: str) -> None:
    assert one(item(event_type))[0] == subject


def test_overspeed_shows_speed_and_limit_in_kmh() -> None:
    _, text, html = one(item("deviceOverspeed"))
    assert "Truck 7 exceeded the speed limit, driving 93 km/h where the limit is 80 km/h." in text
    assert "<strong>93 km/h</strong>" in html
    # Without a position the event's own speed attribute serves.
    subject, _, _ = one(item("deviceOverspeed", position=None, attributes={"speed": 27.0}))
    assert subject == "Truck 7 exceeded the speed limit: 50 km/h"


# --- times, names, links ------------------------------------------------------------------------------------------


def test_times_are_local_with_the_zone_abbreviation() -> None:
    assert "Time: 2026-03-02 13:00:00 CET" in one(item("deviceStopped"))[1]
    summer = item("deviceStopped", eventTime=datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert "Time: 2026-07-01 14:00:00 CEST" in one(summer)[1]
    assert "Time: 2026-03-02 07:00:00 EST" in one(item("deviceStopped"), timezone="America/New_York")[1]
    # A naive time is UTC; an unknown zone falls back to UTC rather than failing the mail.
    assert "Time: 2026-03-02 13:00:00 CET" in one(item("deviceStopped", eventTime=NOON_UTC.replace(tzinfo=None)))[1]
    assert "Time: 2026-03-02 12:00:00 UTC" in one(item("deviceStopped"), timezone="Mars/Olympus_Mons")[1]


def test_html_escapes_user_names_and_text_keeps_them() -> None:
    hostile = item(
        "geofenceEnter",
        device={"id": 7, "name": "<b>x</b>", "uniqueId": "<i>1</i>"},
        geofence={"id": 3, "name": 'Depot "A" & <script>alert(1)</script>'},
    )
    subject, text, html = one(hostile)
    assert subject == 'Depot "A" & <script>alert(1)</script>'.join(["<b>x</b> entered ", ""])
    assert '<b>x</b> entered the geofence Depot "A" & <script>alert(1)</script>.' in text
    assert "<b>x</b>" not in html
    assert "<script>" not in html
    assert "<i>1</i>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "Depot &#34;A&#34; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_subjects_are_one_line_and_bounded() -> None:
    subject, text, _ = one(item("geofenceEnter", device={"id": 7, "name": "Truck\r\n7\tBcc: eve@evil.test"}))
    assert subject == "Truck 7 Bcc: eve@evil.test entered Depot"
    assert "Truck 7 Bcc: eve@evil.test entered the geofence Depot." in text
    subject, _, _ = one(item("deviceStopped", device={"id": 7, "name": "T" * 500}))
    assert len(subject) == 200
    assert subject.endswith("…")
    assert "\n" not in subject


def test_the_device_link_needs_a_public_url_and_missing_parts_are_left_out() -> None:
    _, text, html = one(item("deviceStopped"), public_url=None)
    assert "Open in the tracker" not in text
    assert "href" not in html
    _, text, _ = one(item("deviceStopped"), public_url="https://fleet.test/")
    assert "Open in the tracker: https://fleet.test/?deviceId=7" in text
    subject, text, html = one(item("geofenceEnter", device=None, position=None, geofence=None))
    assert subject == "A device entered a geofence"
    assert "Position" not in text
    assert "Position" not in html
    assert "Open in the tracker" not in text
    # A device without a name goes by its identifier.
    assert one(item("deviceOnline", device={"id": 9, "name": " ", "uniqueId": "IMEI-9"}))[0] == "IMEI-9 is online"


def test_an_unknown_type_falls_back_to_the_generic_template() -> None:
    subject, text, html = one(item("commandResult"))
    assert subject == "Truck 7: command result"
    assert "Truck 7: command result." in text
    assert "Time: 2026-03-02 13:00:00 CET" in text
    assert "<strong>Truck 7</strong>: command result." in html


# --- the daily summary and system alerts ----------------------------------------------------------------------------


def test_the_daily_summary_is_a_table_per_device() -> None:
    _, text, html = one(item("dailySummary"))
    assert "Van <3>: 12.3 km, driving 1:05, top speed 111 km/h, 2 trips" in text
    assert "events: overspeed 1, geofence entered 3" in text
    assert "Bus: 0.0 km, driving 0:00, top speed 0 km/h, 0 trips" in text
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    cells = [[cell.strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)] for row in rows]
    assert cells == [
        ["Device", "Distance", "Driving time", "Max speed", "Trips", "Events"],
        ["Van &lt;3&gt;", "12.3 km", "1:05", "111 km/h", "2", "overspeed 1<br>geofence entered 3"],
        ["Bus", "0.0 km", "0:00", "0 km/h", "0", ""],
    ]


def test_a_daily_summary_with_gaps_still_renders() -> None:
    attributes = {"date": "2026-03-01", "devices": [{"name": "Van"}]}
    subject, text, _ = one(item("dailySummary", attributes=attributes))
    assert subject == "Daily summary for 2026-03-01: 1 device"
    assert "Van: –, driving –, top speed –, 0 trips" in text
    subject, text, _ = one(item("dailySummary", attributes={}))
    assert subject == "Daily summary: 0 devices"
    assert "No devices." in text


def test_a_system_alert_opens_and_resolves() -> None:
    _, text, _ = one(item("systemAlert"))
    assert 'System alert "backlog" opened, severity critical.' in text
    assert "positions are 20 min behind" in text
    resolved = item(
        "systemAlert",
        attributes={"kind": "backlog", "message": "caught up", "severity": "critical", "state": "resolved"},
    )
    subject, text, _ = one(resolved)
    assert subject == "Resolved: backlog – caught up"
    assert 'The system alert "backlog" is resolved.' in text


# --- digests --------------------------------------------------------------------------------------------------------


def test_a_digest_lists_its_items_in_time_order() -> None:
    items = [
        item("deviceStopped", eventTime=NOON_UTC + timedelta(seconds=40)),
        item("geofenceEnter", eventTime=NOON_UTC),
        item("ignitionOff", eventTime=NOON_UTC + timedelta(seconds=20), device={"id": 8, "name": "Van <2>"}),
    ]
    subject, text, html = render(items, timezone="Europe/Berlin", public_url=PUBLIC_URL)
    assert subject == "3 events: Truck 7 entered Depot, Van <2>: ignition off, Truck 7 stopped"
    assert text.startswith("3 events\n")
    order = [text.index(part) for part in ("entered the geofence Depot", "ignition of Van <2>", "Truck 7 stopped.")]
    assert order == sorted(order)
    assert "13:00:00 CET" in text
    assert "13:00:20 CET" in text
    assert "13:00:40 CET" in text
    assert html.count("<!DOCTYPE html>") == 1
    assert html.count("<hr") == 2
    body = html[html.index("<body") :]
    order = [
        body.index(part) for part in ("entered the geofence", "ignition of <strong>Van &lt;2&gt;", "</strong> stopped.")
    ]
    assert order == sorted(order)
    assert "deviceId=8" in html


def test_a_long_digest_has_a_bounded_one_line_subject() -> None:
    items = [item("geofenceEnter", eventTime=NOON_UTC + timedelta(seconds=index)) for index in range(50)]
    subject, text, html = render(items, timezone="UTC", public_url=None)
    assert subject.startswith("50 events: Truck 7 entered Depot, Truck 7 entered Depot")
    assert len(subject) <= 200
    assert subject.endswith("…")
    assert "\n" not in subject
    assert text.count("Truck 7 entered the geofence Depot.") == 50
    assert html.count("<hr") == 49


def test_nothing_to_render_is_an_error() -> None:
    with pytest.raises(ValueError, match="no items"):
        render([], timezone="UTC", public_url=None)
