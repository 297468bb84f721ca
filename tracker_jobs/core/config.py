"""Every setting of the engine, read once from TRACKER_* variables.

A bad value stops start-up with a one-line `ConfigError` that names the variable and what it expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_DATABASE_URL = "sqlite:///./tracker.db"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ConfigError(ValueError):
    """A TRACKER_* variable holds a value the engine cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None  # None: start the embedded Redis
    host: str
    admin_port: int
    osmand_port: int
    admin_token: str | None
    auto_register: bool
    data_dir: Path
    position_partitions: int
    position_batch_size: int
    timezone: str
    log_level: str
    report_min_distance_m: int  # trips: moving once this far from where the device stopped
    report_min_duration_s: int  # stops: staying within min distance this long
    report_stop_gap_s: int  # a silence longer than this is a stop
    report_min_trip_distance_m: int | None  # shorter trips join their stops; None: report_min_distance_m
    report_min_trip_duration_s: int  # shorter trips join their stops
    derived_speed_min_step_m: float  # a speed derived over a shorter step is 0 (jitter is no motion)
    overspeed_multiplier: float  # overspeed: above the device's speed limit times this
    overspeed_minimal_s: float  # overspeed: the event once an episode has lasted this long
    report_max_days: int  # longest range a report job covers
    report_direct_max_days: int  # longest range answered directly by GET /api/reports/{kind}
    osmand_speed_unit: str  # unit OsmAnd clients send speed in: kn, kmh, mps or mph
    batch_limit: int  # positions per batch API request
    filter_invalid: bool
    filter_zero: bool
    filter_future_s: int
    filter_accuracy_m: float  # 0: off
    filter_max_speed_kn: float  # 0: off
    filter_min_period_s: int  # 0: off
    filter_min_distance_m: float  # 0: off
    motion_speed_kn: float
    device_unknown_after_s: int
    device_offline_after_s: int
    metrics_token: str | None  # None: /metrics needs no token
    log_format: str  # text or json
    rate_limit_window_s: int
    api_rate_limit: int  # requests per window per token; 0: off
    anonymous_rate_limit: int  # requests per window per client address without a token; 0: off
    device_rate_limit: int  # positions per window per device on the listener; 0: off
    job_record_retention_days: int
    backlog_age_limit_s: int  # /health is degraded when a queue's oldest waiting job is older
    listener_max_connections: int  # open connections on the device port (fewer if the open-file limit is low)
    listener_max_connections_per_address: int  # of those from one client address; a gateway's trackers share one
    smtp_url: str | None  # smtp://[user:pass@]host:port (STARTTLS when offered) or smtps://; None: no mail channel
    mail_from: str  # the From address of notification mail
    public_url: str | None  # where users open the web app: mail links to a device there; None: no link
    webhook_allow_private: bool  # webhooks may reach loopback and private addresses (tests, a closed network)
    webhook_timeout_s: float  # a receiver slower than this is a failed attempt
    notify_max_age_s: int  # an older event is stored but not notified (a day of buffered positions)
    delivery_retry_s: int  # a failed delivery is tried again, with backoff, for this long, then dead
    delivery_backoff_s: float  # the first retry's wait; each next one waits twice as long (at most an hour)
    mail_digest_s: int  # mail events for one recipient within this long go out as one digest
    daily_summary_hour: int  # local hour (the user's time zone) daily summaries are sent at
    retention_positions_days: int  # positions older go (per device: attribute retentionDays); 0: kept for ever
    retention_events_days: int  # events (and their deliveries) older go; 0: kept for ever
    command_ttl_s: int  # a command not sent (or not answered) this long after it was made expires
    map_tiles: (
        str | None
    )  # the dashboard map's tile URL ({z}/{x}/{y}, optional {s}); None: markers on a plain background

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: expected a number from {low} to {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not 0.0 <= value < float("inf"):
        raise ConfigError(f"{name}: expected a number of 0 or more, got {raw!r}")
    return value


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true/false, 1/0 or yes/no, got {raw!r}")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name)
    return default if raw is None else parse_bool(name, raw)


def _smtp_url(env: Mapping[str, str]) -> str | None:
    url = _text(env, "TRACKER_SMTP_URL")
    if url is not None and not url.startswith(("smtp://", "smtps://")):
        raise ConfigError(f"TRACKER_SMTP_URL: expected smtp://[user:pass@]host:port or smtps://..., got {url!r}")
    return url


def _database_url(env: Mapping[str, str]) -> str:
    url = _text(env, "TRACKER_DATABASE_URL") or DEFAULT_DATABASE_URL
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in {"postgresql", "postgres", "sqlite"}:
        raise ConfigError(
            f"TRACKER_DATABASE_URL: expected postgresql://user@host:port/db or sqlite:///path, got {url!r}"
        )
    return url


def _redis_url(env: Mapping[str, str]) -> str | None:
    url = _text(env, "TRACKER_REDIS_URL")
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"TRACKER_REDIS_URL: expected redis://host:port/db (or unset for embedded), got {url!r}")
    return url


def _timezone(env: Mapping[str, str]) -> str:
    name = _text(env, "TRACKER_TIMEZONE") or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"TRACKER_TIMEZONE: expected an IANA time zone such as Europe/Berlin, got {name!r}") from None
    return name


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (_text(env, name) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _log_level(env: Mapping[str, str]) -> str:
    level = (_text(env, "TRACKER_LOG_LEVEL") or "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"TRACKER_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return level


DEFAULT_MAP_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
MAP_TILES_OFF = {"none", "off"}
TILE_HOST = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?")


def _map_tiles(env: Mapping[str, str]) -> str | None:
    url = _text(env, "TRACKER_MAP_TILES") or DEFAULT_MAP_TILES
    if url.lower() in MAP_TILES_OFF:
        return None
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    placeholders_ok = all(part in url for part in ("{z}", "{x}", "{y}"))
    # The host goes into the page's Content-Security-Policy: an ASCII host name (and port), with `{s}.` as
    # its first label at most (a subdomain, `*.` in the policy): never a wildcard for every host.
    named = host.removeprefix("{s}.")
    host_ok = TILE_HOST.fullmatch(named) is not None
    if scheme not in {"http", "https"} or not placeholders_ok or not host_ok or any(c.isspace() for c in url):
        raise ConfigError(
            f"TRACKER_MAP_TILES: expected https://host/{{z}}/{{x}}/{{y}}.png (or none), got {url[:200]!r}"
        )
    return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every TRACKER_* variable; raise ConfigError on the first bad one."""
    env = os.environ if env is None else env
    database_url = _database_url(env)
    return Settings(
        database_url=database_url,
        redis_url=_redis_url(env),
        host=_text(env, "TRACKER_HOST") or "0.0.0.0",
        admin_port=_int(env, "TRACKER_ADMIN_PORT", 8000, 1, 65535),
        osmand_port=_int(env, "TRACKER_OSMAND_PORT", 5055, 1, 65535),
        admin_token=_text(env, "TRACKER_ADMIN_TOKEN"),
        # An unset database URL means a newcomer's first run: let their phone register itself.
        auto_register=_bool(env, "TRACKER_AUTO_REGISTER", _text(env, "TRACKER_DATABASE_URL") is None),
        data_dir=Path(_text(env, "TRACKER_DATA_DIR") or ".").resolve(),
        position_partitions=_int(env, "TRACKER_POSITION_PARTITIONS", 8, 1, 1024),
        position_batch_size=_int(env, "TRACKER_POSITION_BATCH_SIZE", 5000, 1, 100_000),
        timezone=_timezone(env),
        log_level=_log_level(env),
        report_min_distance_m=_int(env, "TRACKER_REPORT_MIN_DISTANCE", 200, 1, 100_000),
        report_min_duration_s=_int(env, "TRACKER_REPORT_MIN_DURATION", 180, 1, 86_400),
        report_stop_gap_s=_int(env, "TRACKER_REPORT_STOP_GAP", 3600, 1, 30 * 86_400),
        report_min_trip_distance_m=(
            _int(env, "TRACKER_REPORT_MIN_TRIP_DISTANCE", 0, 0, 100_000)
            if _text(env, "TRACKER_REPORT_MIN_TRIP_DISTANCE") is not None
            else None
        ),
        report_min_trip_duration_s=_int(env, "TRACKER_REPORT_MIN_TRIP_DURATION", 60, 0, 86_400),
        derived_speed_min_step_m=_float(env, "TRACKER_DERIVED_SPEED_MIN_STEP", 10.0),
        overspeed_multiplier=_float(env, "TRACKER_OVERSPEED_MULTIPLIER", 1.0),
        overspeed_minimal_s=_float(env, "TRACKER_OVERSPEED_MINIMAL_DURATION", 0.0),
        report_max_days=_int(env, "TRACKER_REPORT_MAX_DAYS", 366, 1, 3660),
        report_direct_max_days=_int(env, "TRACKER_REPORT_DIRECT_MAX_DAYS", 7, 1, 366),
        osmand_speed_unit=_choice(env, "TRACKER_OSMAND_SPEED_UNIT", "kn", ("kn", "kmh", "mps", "mph")),
        batch_limit=_int(env, "TRACKER_BATCH_LIMIT", 10_000, 1, 1_000_000),
        filter_invalid=_bool(env, "TRACKER_FILTER_INVALID", False),
        filter_zero=_bool(env, "TRACKER_FILTER_ZERO", True),
        filter_future_s=_int(env, "TRACKER_FILTER_FUTURE", 86_400, 0, 10 * 365 * 86_400),
        filter_accuracy_m=_float(env, "TRACKER_FILTER_ACCURACY", 0.0),
        filter_max_speed_kn=_float(env, "TRACKER_FILTER_MAX_SPEED", 300.0),
        filter_min_period_s=_int(env, "TRACKER_FILTER_MIN_PERIOD", 0, 0, 86_400),
        filter_min_distance_m=_float(env, "TRACKER_FILTER_MIN_DISTANCE", 0.0),
        motion_speed_kn=_float(env, "TRACKER_MOTION_SPEED", 0.01),
        device_unknown_after_s=_int(env, "TRACKER_DEVICE_UNKNOWN_AFTER", 600, 1, 365 * 86_400),
        device_offline_after_s=_int(env, "TRACKER_DEVICE_OFFLINE_AFTER", 3600, 1, 365 * 86_400),
        metrics_token=_text(env, "TRACKER_METRICS_TOKEN"),
        log_format=_choice(env, "TRACKER_LOG_FORMAT", "text", ("text", "json")),
        rate_limit_window_s=_int(env, "TRACKER_RATE_LIMIT_WINDOW", 60, 1, 86_400),
        api_rate_limit=_int(env, "TRACKER_API_RATE_LIMIT", 120_000, 0, 10**9),
        anonymous_rate_limit=_int(env, "TRACKER_ANONYMOUS_RATE_LIMIT", 600, 0, 10**9),
        device_rate_limit=_int(env, "TRACKER_DEVICE_RATE_LIMIT", 3_000, 0, 10**9),
        job_record_retention_days=_int(env, "TRACKER_JOB_RECORD_RETENTION_DAYS", 7, 1, 3650),
        backlog_age_limit_s=_int(env, "TRACKER_BACKLOG_AGE_LIMIT", 300, 1, 365 * 86_400),
        # No 0 for off: a device port without a cap is what let one client take every descriptor.
        listener_max_connections=_int(env, "TRACKER_LISTENER_MAX_CONNECTIONS", 10_000, 1, 1_000_000),
        listener_max_connections_per_address=_int(
            env, "TRACKER_LISTENER_MAX_CONNECTIONS_PER_ADDRESS", 1_000, 1, 1_000_000
        ),
        smtp_url=_smtp_url(env),
        mail_from=_text(env, "TRACKER_MAIL_FROM") or "tracker@localhost",
        public_url=(_text(env, "TRACKER_PUBLIC_URL") or "").rstrip("/") or None,
        webhook_allow_private=_bool(env, "TRACKER_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_timeout_s=_float(env, "TRACKER_WEBHOOK_TIMEOUT", 10.0) or 10.0,
        notify_max_age_s=_int(env, "TRACKER_NOTIFY_MAX_AGE", 900, 1, 365 * 86_400),
        delivery_retry_s=_int(env, "TRACKER_DELIVERY_RETRY", 86_400, 0, 30 * 86_400),
        delivery_backoff_s=_float(env, "TRACKER_DELIVERY_BACKOFF", 10.0) or 10.0,
        mail_digest_s=_int(env, "TRACKER_MAIL_DIGEST", 60, 0, 86_400),
        daily_summary_hour=_int(env, "TRACKER_DAILY_SUMMARY_HOUR", 7, 0, 23),
        retention_positions_days=_int(env, "TRACKER_RETENTION_POSITIONS_DAYS", 30, 0, 36_500),
        retention_events_days=_int(env, "TRACKER_RETENTION_EVENTS_DAYS", 90, 0, 36_500),
        command_ttl_s=_int(env, "TRACKER_COMMAND_TTL", 3600, 1, 30 * 86_400),
        map_tiles=_map_tiles(env),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
