"""The dashboard in a real browser (Debian's Chromium through Playwright) against the real `tracker-jobs up`
on its embedded default: signing in, the live map, retrying a failed job and cancelling a running one from
the page, a report from request to download, what a user may not see, hostile names shown as text, no
serious accessibility violation in any view, and a screenshot of each view at desktop and phone size."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.support.browser import DESKTOP, PHONE, chromium, screenshot, serious_violations
from tests.support.processes import engine_env, running, tracker_jobs_command
from tests.support.services import ADMIN_TOKEN

VIEWS = ("overview", "tasks", "workers", "map", "reports", "events", "commands", "cleanup")
HOSTILE = '<img src=x onerror="window.pwned=1">'


@dataclass
class Engine:
    admin: str
    listener: str

    def api(self, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs: Any) -> Any:
        response = requests.request(
            method, f"{self.admin}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
        )
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def report(self, unique_id: str, lat: float, lon: float, speed: float = 10.0, seconds_ago: float = 0.0) -> None:
        at = f"{time.time() - seconds_ago:.3f}"
        params = {"id": unique_id, "lat": lat, "lon": lon, "speed": speed, "timestamp": at}
        assert requests.get(self.listener, params=params, timeout=10).status_code == 200


def until(probe: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("dashboard")
    env = engine_env(TRACKER_ADMIN_TOKEN=ADMIN_TOKEN, TRACKER_MAP_TILES="none")
    found = Engine(f"http://127.0.0.1:{env['TRACKER_ADMIN_PORT']}", f"http://127.0.0.1:{env['TRACKER_OSMAND_PORT']}")

    def healthy() -> bool:
        try:
            answer = requests.get(f"{found.admin}/health", timeout=2)
            listening = requests.get(found.listener, timeout=2).status_code == 400  # no id: refused, but up
        except requests.ConnectionError:
            return False
        return answer.ok and answer.json()["status"] == "healthy" and listening

    with running(tracker_jobs_command("up"), folder, env):
        until(healthy, 60, "a healthy engine")
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    found = context.new_page()
    errors: list[str] = []
    found.on("pageerror", lambda error: errors.append(str(error)))
    found.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    yield found
    context.close()
    assert errors == []  # no script error and no alert() on any page a test saw


def sign_in_with_token(page: Page, engine: Engine, token: str = ADMIN_TOKEN) -> None:
    page.goto(f"{engine.admin}/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).not_to_have_text("")


def test_sign_in_with_a_password_or_the_api_token_and_sign_out(page: Page, engine: Engine) -> None:
    engine.api("POST", "/api/users", json={"name": "Dora", "email": "dora@example.com", "password": "dora-secret-1"})
    page.goto(f"{engine.admin}/")
    page.get_by_label("Email").fill("dora@example.com")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email, password or token.")
    page.get_by_label("Password").fill("dora-secret-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("Dora (user)")
    nav = page.get_by_role("navigation", name="Views")
    expect(nav.get_by_role("link", name="Devices")).to_be_visible()
    for admin_view in ("Overview", "Workers", "Cleanup"):
        expect(nav.get_by_role("link", name=admin_view)).to_have_count(0)  # not offered to a user
    token = page.evaluate("() => sessionStorage.getItem('tracker.token')")
    assert engine.api("GET", "/api/session", token=token)["email"] == "dora@example.com"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    ended = requests.get(f"{engine.admin}/api/session", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ended.status_code == 401

    sign_in_with_token(page, engine)
    expect(page.locator("#who")).to_have_text("admin (admin)")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_a_device_appears_on_the_map_then_moves(page: Page, engine: Engine) -> None:
    sign_in_with_token(page, engine)
    page.goto(f"{engine.admin}/#/map")
    expect(page.locator("#live")).to_have_text("● live")
    engine.report("map-mover", 48.8566, 2.3522, seconds_ago=120)  # two minutes to the next: a plausible speed
    row = page.get_by_role("row").filter(has_text="map-mover")
    expect(row).to_contain_text("10.0 kn")  # its position too, not only the device
    row.get_by_role("button", name="map-mover").click()  # the map goes to it (past any cluster), its detail opens
    marker = page.locator('.leaflet-marker-icon[title="map-mover"]')
    expect(marker).to_be_visible()
    before = marker.evaluate("element => element.style.transform")
    engine.report("map-mover", 48.8600, 2.3600, speed=33.0)
    expect(row).to_contain_text("33.0 kn")  # the socket's update reached the list...
    page.wait_for_function(
        "before => document.querySelector('.leaflet-marker-icon[title=\"map-mover\"]').style.transform !== before",
        arg=before,
    )
    expect(page.locator(".detail")).to_contain_text("Positions today")  # the device's numbers of today
    page.goto(f"{engine.admin}/#/events")  # its coming online is an event about it
    expect(page.get_by_role("row").filter(has_text="deviceOnline").filter(has_text="map-mover")).to_be_visible()


def test_while_the_socket_is_down_the_page_polls_and_says_so(page: Page, engine: Engine) -> None:
    refused: list[float] = []

    def refuse(socket: WebSocketRoute) -> None:  # the server's socket "goes away" at every try
        refused.append(time.monotonic())
        socket.close(code=1011, reason="test: unavailable")

    page.route_web_socket("**/api/socket*", refuse)
    sign_in_with_token(page, engine)
    page.goto(f"{engine.admin}/#/map")
    expect(page.locator("#live")).to_have_text("○ reconnecting (polling meanwhile)")
    engine.report("polled-only", 41.9, 12.5)
    # No socket: the map's timer reads the devices and positions (every 5 s, never two reads at once).
    row = page.get_by_role("row").filter(has_text="polled-only")
    expect(row).to_contain_text("10.0 kn", timeout=15_000)  # its position too, not only the device
    row.get_by_role("button", name="polled-only").click()  # the map goes to it, past the clusters
    expect(page.locator('.leaflet-marker-icon[title="polled-only"]')).to_be_visible()
    page.wait_for_timeout(4_000)  # long enough for tries 1 s and 2 s after the first, not for a tight loop's 100
    waits = [later - earlier for earlier, later in itertools.pairwise(refused)]
    assert len(refused) >= 3, refused  # it tried again...
    # ...with backoff: at least 1 s, then 2 s, 4 s, ... (a timer never fires early; under load, later)
    assert all(wait >= 0.95 * 2**index for index, wait in enumerate(waits)), waits


def test_a_failed_job_shows_its_traceback_and_succeeds_after_retry_from_the_page(page: Page, engine: Engine) -> None:
    # An offline alert for the device id the next new device will get: it fails (no such device), then
    # the device registers by reporting, and the same task retried from the page succeeds.
    next_id = max((device["id"] for device in engine.api("GET", "/api/devices")), default=0) + 1
    sign_in_with_token(page, engine)
    page.goto(f"{engine.admin}/#/tasks")
    page.get_by_label("Job to run").select_option("send_device_offline_alert")
    page.get_by_label("device_id (integer, required)").fill(str(next_id))
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("heading", name="Task")).to_be_visible()
    expect(page.locator(".traceback")).to_contain_text("NotFound", timeout=15_000)
    expect(page.locator(".error-message")).to_contain_text(f"device {next_id} not found")
    engine.report("late-arrival", 52.0, 13.0)
    until(lambda: any(d["id"] == next_id for d in engine.api("GET", "/api/devices")), 10, "the device to register")
    failed_url = page.url
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(lambda url: url != failed_url)  # the retried task, a new one
    expect(page.locator(".facts .badge")).to_have_text("complete", timeout=15_000)


def test_a_running_job_is_cancelled_from_the_page(page: Page, engine: Engine) -> None:
    sign_in_with_token(page, engine)
    page.goto(f"{engine.admin}/#/tasks")
    page.get_by_label("Job to run").select_option("ping")
    page.get_by_label("seconds (number)").fill("60")
    page.get_by_label("steps (integer)").fill("60")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator(".facts .badge")).to_have_text("in_progress", timeout=15_000)
    expect(page.locator(".facts progress")).to_be_visible(timeout=10_000)  # the live progress bar
    task_url = page.url
    page.goto(f"{engine.admin}/#/workers")  # the worker running it names it, with each queue's concurrency
    worker = page.get_by_role("row").filter(has_text="cleanup 2")
    worker.get_by_role("link", name="ping").click()
    page.wait_for_url(task_url)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".facts .badge")).to_have_text("cancelled")
    task_id = page.url.rsplit("/", 1)[1]
    assert engine.api("GET", f"/api/tasks/task/{task_id}")["state"] == "cancelled"


def test_a_report_is_requested_progresses_and_downloads(page: Page, engine: Engine, tmp_path: Path) -> None:
    engine.report("reported-car", 40.0, -3.7)
    sign_in_with_token(page, engine)
    page.goto(f"{engine.admin}/#/reports")
    page.get_by_label("Kind").select_option("summary")
    page.get_by_label("Device").select_option(label="reported-car")
    today = datetime.now()  # the browser's local time is this machine's
    page.get_by_label("From", exact=True).fill(f"{today - timedelta(days=1):%Y-%m-%dT%H:%M}")
    page.get_by_label("To", exact=True).fill(f"{today + timedelta(days=1):%Y-%m-%dT%H:%M}")
    page.get_by_label("Also CSV").check()
    page.get_by_role("button", name="Request report").click()
    expect(page.locator("form .outcome")).to_contain_text("queued")
    row = page.get_by_role("row").filter(has_text="summary").first
    expect(row.get_by_role("button", name="JSON")).to_be_visible(timeout=20_000)  # the list refreshes itself
    with page.expect_download() as download:
        row.get_by_role("button", name="JSON").click()
    assert download.value.suggested_filename.endswith("-summary.json")  # the server's name for it
    saved = tmp_path / "report.json"
    download.value.save_as(saved)
    report = json.loads(saved.read_bytes())
    assert report["report"]["kind"] == "summary"
    assert [row["deviceName"] for row in report["summary"]] == ["reported-car"]


def test_a_user_does_not_see_another_users_device_and_names_are_text(page: Page, engine: Engine) -> None:
    engine.api("POST", "/api/users", json={"name": "Eve", "email": "eve@example.com", "password": "eve-secret-12"})
    eve = requests.post(
        f"{engine.admin}/api/session", json={"email": "eve@example.com", "password": "eve-secret-12"}, timeout=10
    ).json()["token"]
    engine.api("POST", "/api/devices", token=eve, json={"name": HOSTILE, "uniqueId": "eve-phone"})
    engine.report("eve-phone", 45.0, 7.0)
    engine.report("admins-van", 45.1, 7.1)
    sign_in_with_token(page, engine, eve)
    page.goto(f"{engine.admin}/#/map")
    devices = page.locator(".devices table")
    expect(devices).to_contain_text(HOSTILE)  # shown as text...
    expect(devices).not_to_contain_text("admins-van")  # ...and only Eve's own device
    expect(page.locator('img[src="x"]')).to_have_count(0)
    assert page.evaluate("() => window.pwned") is None
    csp = requests.get(f"{engine.admin}/", timeout=10).headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


def test_a_command_is_sent_and_cancelled_from_the_page(page: Page, engine: Engine) -> None:
    engine.report("commanded-phone", 59.3, 18.0)
    sign_in_with_token(page, engine)
    page.goto(f"{engine.admin}/#/commands")
    page.get_by_label("Device").select_option(label="commanded-phone")
    page.get_by_label("Type").select_option("custom")
    page.get_by_label("data (string)").fill("12345")  # a string, though it looks like a number
    page.get_by_role("button", name="Send").click()
    expect(page.locator("form .outcome")).to_contain_text("queued")
    command_id = int(page.locator("form .outcome").inner_text().split()[1])
    row = page.get_by_role("row").filter(has_text=f"#{command_id} custom")
    expect(row).to_contain_text("queued")
    assert engine.api("GET", f"/api/commands/{command_id}")["attributes"] == {"data": "12345"}
    row.get_by_role("button", name=f"Cancel command {command_id}").click()
    expect(row).to_contain_text("cancelled")
    assert engine.api("GET", f"/api/commands/{command_id}")["state"] == "cancelled"


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_view_has_no_serious_accessibility_violation_and_is_captured(
    browser: Browser, engine: Engine, size: str
) -> None:
    engine.report("screenshot-car", 52.52, 13.405)
    context = browser.new_context(viewport=DESKTOP if size == "desktop" else PHONE)
    page = context.new_page()
    try:
        page.goto(f"{engine.admin}/")
        assert serious_violations(page) == []  # the sign-in form
        screenshot(page, f"signin-{size}")
        sign_in_with_token(page, engine)
        for view in VIEWS:
            page.goto(f"{engine.admin}/#/{view}")
            expect(page.locator("#view-title")).to_be_visible()
            page.wait_for_load_state("networkidle")
            expect(page.locator("main .notice.error")).to_have_count(0)
            assert serious_violations(page) == [], view
            screenshot(page, f"{view}-{size}")
    finally:
        context.close()
