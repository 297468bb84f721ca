"""Settings: defaults, parsing, and a one-line error naming the variable for every bad value."""

from __future__ import annotations

import pytest

from tracker_jobs.core.config import ConfigError, load_settings
from tracker_jobs.core.db import async_database_url


def test_defaults_are_the_embedded_engine() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///./tracker.db"
    assert settings.embedded_redis
    assert settings.admin_port == 8000
    assert settings.osmand_port == 5055
    assert settings.admin_token is None
    assert settings.auto_register is True


def test_auto_register_defaults_off_once_a_database_is_configured() -> None:
    assert load_settings({"TRACKER_DATABASE_URL": "postgresql://u@h/db"}).auto_register is False
    assert load_settings({"TRACKER_DATABASE_URL": "postgresql://u@h/db", "TRACKER_AUTO_REGISTER": "yes"}).auto_register


def test_listener_connection_caps() -> None:
    defaults = load_settings({})
    assert (defaults.listener_max_connections, defaults.listener_max_connections_per_address) == (10_000, 1_000)
    chosen = load_settings(
        {"TRACKER_LISTENER_MAX_CONNECTIONS": "50000", "TRACKER_LISTENER_MAX_CONNECTIONS_PER_ADDRESS": "5000"}
    )
    assert (chosen.listener_max_connections, chosen.listener_max_connections_per_address) == (50_000, 5_000)


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)]
)
def test_booleans(raw: str, expected: bool) -> None:
    assert load_settings({"TRACKER_AUTO_REGISTER": raw}).auto_register is expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TRACKER_ADMIN_PORT", "eighty", "TRACKER_ADMIN_PORT: expected a whole number"),
        ("TRACKER_ADMIN_PORT", "70000", "TRACKER_ADMIN_PORT: expected a number from 1 to 65535"),
        ("TRACKER_OSMAND_PORT", "0", "TRACKER_OSMAND_PORT: expected a number from 1 to 65535"),
        ("TRACKER_AUTO_REGISTER", "maybe", "TRACKER_AUTO_REGISTER: expected true/false"),
        ("TRACKER_DATABASE_URL", "mysql://x/y", "TRACKER_DATABASE_URL: expected postgresql://"),
        ("TRACKER_REDIS_URL", "localhost:6379", "TRACKER_REDIS_URL: expected redis://"),
        ("TRACKER_TIMEZONE", "Mars/Olympus", "TRACKER_TIMEZONE: expected an IANA time zone"),
        ("TRACKER_OSMAND_SPEED_UNIT", "furlongs", "TRACKER_OSMAND_SPEED_UNIT: expected one of"),
        ("TRACKER_LISTENER_MAX_CONNECTIONS", "0", "TRACKER_LISTENER_MAX_CONNECTIONS: expected a number from 1 to"),
        ("TRACKER_LISTENER_MAX_CONNECTIONS", "lots", "TRACKER_LISTENER_MAX_CONNECTIONS: expected a whole number"),
        (
            "TRACKER_LISTENER_MAX_CONNECTIONS_PER_ADDRESS",
            "0",
            "TRACKER_LISTENER_MAX_CONNECTIONS_PER_ADDRESS: expected a number from 1 to",
        ),
        ("TRACKER_MAP_TILES", "ftp://tiles.example/{z}/{x}/{y}.png", "TRACKER_MAP_TILES: expected https://"),
        ("TRACKER_MAP_TILES", "https://tiles.example/tiles.png", "TRACKER_MAP_TILES: expected https://"),
        # The host goes into the page's Content-Security-Policy: nothing that could add a source to it.
        ("TRACKER_MAP_TILES", "https://a.example; script-src */{z}/{x}/{y}", "TRACKER_MAP_TILES: expected https://"),
        ("TRACKER_MAP_TILES", "https://{z}.example/{z}/{x}/{y}.png", "TRACKER_MAP_TILES: expected https://"),
        # `{s}` alone would be `https://*` in the policy: every host; elsewhere than first, a source no browser reads.
        ("TRACKER_MAP_TILES", "https://{s}/{z}/{x}/{y}.png", "TRACKER_MAP_TILES: expected https://"),
        ("TRACKER_MAP_TILES", "https://tiles{s}.example/{z}/{x}/{y}.png", "TRACKER_MAP_TILES: expected https://"),
        ("TRACKER_MAP_TILES", "https://tïles.example/{z}/{x}/{y}.png", "TRACKER_MAP_TILES: expected https://"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})
    message = str(raised.value)
    assert message.startswith(expected)
    assert "\n" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///./tracker.db", "sqlite+aiosqlite:///./tracker.db"),
    ],
)
def test_database_urls_get_the_async_driver(url: str, expected: str) -> None:
    assert async_database_url(url) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "https://tile.openstreetmap.org/{z}/{x}/{y}.png"),
        ("https://{s}.tile.example.org:8443/{z}/{x}/{y}.png", "https://{s}.tile.example.org:8443/{z}/{x}/{y}.png"),
        ("http://tiles:8080/osm/{z}/{x}/{y}.png", "http://tiles:8080/osm/{z}/{x}/{y}.png"),  # a host on the LAN
        ("none", None),
        ("OFF", None),
    ],
)
def test_map_tiles_default_to_openstreetmap_and_can_be_off(value: str | None, expected: str | None) -> None:
    assert load_settings({} if value is None else {"TRACKER_MAP_TILES": value}).map_tiles == expected
