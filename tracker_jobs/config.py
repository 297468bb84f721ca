"""Every setting of the engine, read once from TRACKER_* variables.

A bad value stops start-up with a one-line `ConfigError` that names the variable and what it expected.
"""

from __future__ import annotations

import os
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
    osmand_speed_unit: str  # unit OsmAnd clients send speed in: kn, kmh, mps or mph

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
        osmand_speed_unit=_choice(env, "TRACKER_OSMAND_SPEED_UNIT", "kn", ("kn", "kmh", "mps", "mph")),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
