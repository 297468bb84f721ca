"""tracker-jobs up | worker | admin | listener | migrate | tasks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import sqlalchemy.exc

from tracker_jobs import tasks_cli
from tracker_jobs.core.config import ConfigError, Settings, get_settings
from tracker_jobs.core.redis import RedisUnavailable
from tracker_jobs.jobs.logs import configure_logging
from tracker_jobs.processes import stop_on_signals

log = logging.getLogger("tracker_jobs")
BOOTSTRAP_TRIES = 5
DATABASE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, OSError)


class StartupError(RuntimeError):
    """Start-up cannot go on; the message says why in one line."""


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run a server's event loop on uvloop where it is installed (Linux, macOS): it serves ~1.7x the
    requests per second of asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _require_redis_url(settings: Settings, command: str) -> str:
    if settings.redis_url is None:
        raise StartupError(
            f"TRACKER_REDIS_URL: required by `tracker-jobs {command}` "
            "(or run `tracker-jobs up`, which starts an embedded Redis)"
        )
    return settings.redis_url


def _safe_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def _database_unreachable(settings: Settings, error: Exception) -> StartupError:
    reason = str(getattr(error, "orig", error)).splitlines()[0]
    return StartupError(f"cannot reach the database at {_safe_url(settings.database_url)}: {reason}")


def migrate(settings: Settings) -> None:
    from tracker_jobs.migrations import upgrade_database

    try:
        upgrade_database(settings.database_url)
    except DATABASE_ERRORS as error:
        raise _database_unreachable(settings, error) from None


def require_current_schema(settings: Settings) -> None:
    from tracker_jobs.migrations import schema_is_current

    try:
        current = schema_is_current(settings.database_url)
    except DATABASE_ERRORS as error:
        raise _database_unreachable(settings, error) from None
    if not current:
        raise StartupError(
            f"the database at {_safe_url(settings.database_url)} is not at the newest schema: "
            "run `tracker-jobs migrate` first"
        )


def require_redis(redis_url: str) -> None:
    """Fail now with one line rather than later inside arq or aiohttp."""
    from tracker_jobs.core.redis import connect_redis

    async def probe() -> None:
        await (await connect_redis(redis_url)).aclose()

    asyncio.run(probe())


def bootstrap_admin(settings: Settings) -> str | None:
    """Ensure the bootstrap admin; return a newly made token to show once."""
    from tracker_jobs.core.db import create_engine, session_factory, transaction
    from tracker_jobs.users.service import ensure_bootstrap_admin

    async def run() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            # Several admin processes starting at once on a new database race to create the admin: the
            # loser's insert conflicts (or, on SQLite, its snapshot is stale); trying again finds the
            # winner's rows and changes nothing.
            for attempt in range(BOOTSTRAP_TRIES):
                try:
                    async with transaction(session_factory(engine)) as session:
                        return await ensure_bootstrap_admin(session, settings.admin_token)
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                    if attempt == BOOTSTRAP_TRIES - 1:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            return None
        finally:
            await engine.dispose()

    return asyncio.run(run())


def cmd_token(settings: Settings, _args: argparse.Namespace) -> int:
    """A new API token for the admin admin@localhost (made if missing), replacing the one it had."""
    from tracker_jobs.core.db import create_engine, session_factory, transaction
    from tracker_jobs.users.service import ensure_bootstrap_admin, new_token, restore_bootstrap_admin

    if settings.admin_token is not None:
        print(
            "TRACKER_ADMIN_TOKEN is set: the admin's token is its value (each start sets it). "
            "Unset it to have a token made.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    require_current_schema(settings)
    token = new_token()

    async def run() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            async with transaction(session_factory(engine)) as session:
                await ensure_bootstrap_admin(session, token)
                return await restore_bootstrap_admin(session)
        finally:
            await engine.dispose()

    for change in asyncio.run(run()):
        print(f"admin@localhost {change}.", file=sys.stderr, flush=True)
    print(token, flush=True)
    print(
        f"The admin admin@localhost's API token in {_safe_url(settings.database_url)}; the old one no longer works.",
        file=sys.stderr,
        flush=True,
    )
    return 0


def _announce_token(token: str | None) -> None:
    if token:
        print(f"Created the admin user admin@localhost. Its API token (shown once): {token}", flush=True)
        print(
            "Sign in to the dashboard by pasting it into the sign-in form's API token field. Set "
            "TRACKER_ADMIN_TOKEN to choose the token yourself; `tracker-jobs token` makes a new one.",
            flush=True,
        )


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    migrate(settings)
    print("database is at the newest schema", flush=True)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from tracker_jobs.worker import parse_queues, run_queues

    redis_url = _require_redis_url(settings, "worker")
    try:
        queues = parse_queues(args.queues)
    except ValueError as error:
        raise StartupError(f"--queues: {error}") from None
    require_redis(redis_url)
    require_current_schema(settings)
    log.info("worker serving queues: %s", ", ".join(queues))
    run_async(run_queues(queues, redis_url))
    return 0


def cmd_admin(settings: Settings, _args: argparse.Namespace) -> int:
    from tracker_jobs.web.app import serve

    redis_url = _require_redis_url(settings, "admin")
    require_redis(redis_url)
    require_current_schema(settings)
    _announce_token(bootstrap_admin(settings))

    async def run() -> None:
        await serve(settings, redis_url, stop_on_signals("admin API"))

    run_async(run())
    return 0


def cmd_listener(settings: Settings, _args: argparse.Namespace) -> int:
    from tracker_jobs.commands.queue import Inbox
    from tracker_jobs.core.db import create_engine, session_factory
    from tracker_jobs.core.redis import connect_redis
    from tracker_jobs.devices.service import DeviceDirectory
    from tracker_jobs.listener.osmand import Ingest
    from tracker_jobs.listener.serve import serve
    from tracker_jobs.positions.acceptor import Acceptor

    redis_url = _require_redis_url(settings, "listener")
    require_redis(redis_url)
    require_current_schema(settings)

    async def run() -> None:
        redis = await connect_redis(redis_url)
        engine = create_engine(settings.database_url)
        ingest = Ingest(
            Acceptor(redis, settings.position_partitions), DeviceDirectory(session_factory(engine)), Inbox(redis)
        )
        try:
            await serve(settings, ingest, stop_on_signals("device listener"))
        finally:
            await redis.aclose()
            await engine.dispose()

    run_async(run())
    return 0


def _open_door_warning(settings: Settings) -> str | None:
    """On every interface with auto-registration on, anyone who can reach the port adds devices: say so."""
    if settings.host not in ("0.0.0.0", "::") or not settings.auto_register:
        return None
    return (
        f"Note: listening on all interfaces with auto-registration on: any device that reaches port "
        f"{settings.osmand_port} is registered. To restrict it: TRACKER_HOST=127.0.0.1 (this machine only) "
        "or TRACKER_AUTO_REGISTER=false (register devices with POST /api/devices)."
    )


def cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    """Everything in one command: migrations, (embedded) Redis, and the worker, admin and listener processes."""
    from tracker_jobs.embedded import EmbeddedRedis
    from tracker_jobs.processes import child_dies_with_parent

    migrate(settings)
    _announce_token(bootstrap_admin(settings))
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        embedded.start()
        redis_url = embedded.url
    env = {**os.environ, "TRACKER_REDIS_URL": redis_url}
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("tracker-jobs stopping on %s", signal.Signals(signum).name)
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(role: str) -> None:
        command = [sys.executable, "-m", "tracker_jobs", role]
        children[role] = subprocess.Popen(command, env=env, preexec_fn=child_dies_with_parent)

    try:
        for role in ("worker", "admin", "listener"):
            start(role)
        where = "localhost" if settings.host == "0.0.0.0" else settings.host
        print(
            f"tracker-jobs is up: dashboard and admin API http://{where}:{settings.admin_port}/ "
            f"(Authorization: Bearer <token>), devices report to http://{where}:{settings.osmand_port}/ "
            f"(OsmAnd), database {_safe_url(settings.database_url)}, Redis "
            f"{'embedded at ' + redis_url if embedded else _safe_url(redis_url)}. Ctrl-C stops it.",
            flush=True,
        )
        if open_door := _open_door_warning(settings):
            print(open_door, flush=True)
        while not stopping:
            for role, child in list(children.items()):
                if child.poll() is not None and not stopping:
                    log.warning("%s exited with %s; starting it again", role, child.returncode)
                    time.sleep(1)
                    start(role)
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if embedded is not None:
            embedded.stop()
    print("tracker-jobs stopped", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracker-jobs", description="GPS fleet-tracking job engine")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run everything (embedded SQLite + Redis unless URLs are set)").set_defaults(
        run=cmd_up
    )
    worker = commands.add_parser("worker", help="run workers (TRACKER_REDIS_URL required)")
    worker.add_argument("--queues", help="comma-separated: positions,reports,cleanup,notifications (default all)")
    worker.set_defaults(run=cmd_worker)
    commands.add_parser("admin", help="run the admin API (TRACKER_REDIS_URL required)").set_defaults(run=cmd_admin)
    commands.add_parser("listener", help="run the device listener (TRACKER_REDIS_URL required)").set_defaults(
        run=cmd_listener
    )
    commands.add_parser("migrate", help="upgrade the database schema").set_defaults(run=cmd_migrate)
    commands.add_parser(
        "token", help="print a new API token for the admin admin@localhost (the old one stops working)"
    ).set_defaults(run=cmd_token)
    tasks_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        result: int = args.run(settings, args)
    except (ConfigError, StartupError, RedisUnavailable, FileNotFoundError) as error:
        print(f"tracker-jobs: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
