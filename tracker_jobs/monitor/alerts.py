"""System alerts: conditions of the engine itself that an admin should hear of, each raised once when it
opens and once when it resolves, never again while it stays open.

Kinds: `workerLost` (a worker stopped beating, or a queue with jobs has no live worker), `queueBacklog`
(a queue's oldest waiting job is older than TRACKER_BACKLOG_AGE_LIMIT), `jobFailures` (a job's tries
failed above a rate over the last minutes), `positionsSetAside` (batches the database refused wait in
the set-aside stream), `redisMemory` (Redis near its maxmemory) and `deadDeliveries` (notifications
that died piling up).

`evaluate(facts)` is pure: the facts in, the alerts open now out. `check_alerts` gathers the facts,
compares them with the open alerts kept in the Redis hash `tracker:alerts` (kind -> JSON `{kind,
severity, message, since}`) in one atomic script, so two checks at once never both report one change,
and returns the transitions. The notifications queue's `check_system_alerts` job (cron, every minute)
writes them as `systemAlert` deliveries to the admins (`plan_alert_deliveries`) and sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from tracker_jobs.core.config import Settings
from tracker_jobs.core.principal import Role
from tracker_jobs.events.models import Delivery, Notification, UserNotification
from tracker_jobs.events.outbox import channels_of, plan_message
from tracker_jobs.jobs.heartbeat import live_workers
from tracker_jobs.jobs.models import job_stat_minutes
from tracker_jobs.jobs.records import minute_of
from tracker_jobs.monitor.backlog import queue_backlogs
from tracker_jobs.monitor.service import serving_workers
from tracker_jobs.monitor.stats import summed_rollups
from tracker_jobs.users.models import User

ALERTS_KEY = "tracker:alerts"
SYSTEM_ALERT = "systemAlert"
KINDS = ("workerLost", "queueBacklog", "jobFailures", "positionsSetAside", "redisMemory", "deadDeliveries")
SEVERITIES = ("info", "warning", "critical")
DEAD = "dead"  # a delivery's final state (notifications/outbox_state.py, which monitor may not import)
State = Literal["opened", "resolved"]


@dataclass(frozen=True)
class Thresholds:
    """When an alert opens (the backlog's age limit is TRACKER_BACKLOG_AGE_LIMIT, a setting). THRESHOLDS
    holds the engine's; a function given none reads it when called."""

    failure_window: timedelta = timedelta(minutes=15)
    failure_rate: float = 0.2  # more than this share of a job's tries failed in the window ...
    failure_min_tries: int = 20  # ... of at least this many
    redis_memory_share: float = 0.9  # used_memory above this share of maxmemory (no maxmemory: no alert)
    dead_window: timedelta = timedelta(hours=24)
    dead_deliveries: int = 100  # more deliveries than this died in the window


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Facts:
    """What the alerts are judged on, gathered at one moment."""

    lost_workers: Sequence[str] = ()  # host:pid of workers silent for three heartbeats
    unserved_queues: Mapping[str, int] = field(default_factory=dict)  # queue -> jobs, with no live worker
    backlog_ages: Mapping[str, float | None] = field(default_factory=dict)  # queue -> oldest waiting job (s)
    backlog_age_limit_s: float = 300.0
    job_tries: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # job -> (ended, failed) in the window
    set_aside: int = 0  # entries (batches) in the set-aside stream
    redis_used_bytes: int = 0
    redis_max_bytes: int = 0  # 0: no limit
    dead_deliveries: int = 0  # in the window


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str
    message: str
    since: str | None = None  # ISO-8601 UTC, when it opened (set once stored)

    def as_api(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "since": self.since}


@dataclass(frozen=True)
class Transition:
    state: State
    alert: Alert

    def attributes(self) -> dict[str, Any]:
        """What a systemAlert delivery says (the shape notifications/messages.py documents)."""
        return {
            "kind": self.alert.kind,
            "message": self.alert.message,
            "severity": self.alert.severity,
            "state": self.state,
        }


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MiB"


def evaluate(facts: Facts, thresholds: Thresholds | None = None) -> dict[str, Alert]:
    """The alerts the facts open, by kind (a kind that is not in the answer is not open)."""
    thresholds = thresholds or THRESHOLDS
    alerts: dict[str, Alert] = {}
    if facts.lost_workers or facts.unserved_queues:
        parts = []
        if facts.lost_workers:
            parts.append(f"no heartbeat from worker {', '.join(sorted(facts.lost_workers))}")
        for queue, waiting in sorted(facts.unserved_queues.items()):
            parts.append(f"{queue}: {waiting} job{'' if waiting == 1 else 's'} and no live worker serves the queue")
        severity = "critical" if facts.unserved_queues else "warning"
        alerts["workerLost"] = Alert("workerLost", severity, "; ".join(parts))
    late = {
        queue: age
        for queue, age in sorted(facts.backlog_ages.items())
        if age is not None and age > facts.backlog_age_limit_s
    }
    if late:
        ages = "; ".join(f"{queue}: the oldest waiting job is {age:.0f} s old" for queue, age in late.items())
        alerts["queueBacklog"] = Alert("queueBacklog", "warning", f"{ages} (limit {facts.backlog_age_limit_s:.0f} s)")
    failing = {
        name: (ended, failed)
        for name, (ended, failed) in sorted(facts.job_tries.items())
        if ended >= thresholds.failure_min_tries and failed > thresholds.failure_rate * ended
    }
    if failing:
        minutes = thresholds.failure_window.total_seconds() / 60
        rates = "; ".join(
            f"{name}: {failed} of {ended} tries failed ({failed / ended:.0%})"
            for name, (ended, failed) in failing.items()
        )
        alerts["jobFailures"] = Alert("jobFailures", "warning", f"{rates} in the last {minutes:.0f} min")
    if facts.set_aside > 0:
        batches = f"{facts.set_aside} batch{'' if facts.set_aside == 1 else 'es'}"
        alerts["positionsSetAside"] = Alert(
            "positionsSetAside",
            "critical",
            f"{batches} of positions the database refused wait in the set-aside stream",
        )
    if facts.redis_max_bytes > 0 and facts.redis_used_bytes > thresholds.redis_memory_share * facts.redis_max_bytes:
        share = facts.redis_used_bytes / facts.redis_max_bytes
        alerts["redisMemory"] = Alert(
            "redisMemory",
            "critical",
            f"Redis uses {share:.0%} of its maxmemory "
            f"({_mib(facts.redis_used_bytes)} of {_mib(facts.redis_max_bytes)})",
        )
    if facts.dead_deliveries > thresholds.dead_deliveries:
        hours = thresholds.dead_window.total_seconds() / 3600
        alerts["deadDeliveries"] = Alert(
            "deadDeliveries",
            "warning",
            f"{facts.dead_deliveries} notification deliveries died in the last {hours:.0f} h "
            f"(limit {thresholds.dead_deliveries})",
        )
    return alerts


async def gather_facts(
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime,
    *,
    set_aside_key: str | None = None,
    thresholds: Thresholds | None = None,
) -> Facts:
    """The facts as they are now. Any source that cannot be read fails the check (an alert must never
    resolve because its fact could not be read). `set_aside_key` is the positions' set-aside stream
    (positions/stream.py: the positions domain uses monitor, so the caller names it)."""
    thresholds = thresholds or THRESHOLDS
    workers = await live_workers(redis)
    backlogs = await queue_backlogs(redis)
    unserved = {
        backlog.name: backlog.waiting + backlog.deferred + backlog.running
        for backlog in backlogs
        if backlog.waiting + backlog.deferred + backlog.running and not serving_workers(backlog.name, workers)
    }
    memory: dict[str, Any] = await redis.info("memory")
    set_aside = int(await redis.xlen(set_aside_key)) if set_aside_key else 0
    async with sessions() as session:
        rollups = await summed_rollups(session, job_stat_minutes, minute_of(now - thresholds.failure_window))
        dead = await session.scalar(
            sa.select(sa.func.count())
            .select_from(Delivery)
            .where(col(Delivery.state) == DEAD, col(Delivery.next_attempt_at) >= now - thresholds.dead_window)
        )
    tries: dict[str, tuple[int, int]] = {}
    for rollup in rollups:
        ended, failed = tries.get(rollup.name, (0, 0))
        done = rollup.counts["complete"] + rollup.counts["failed"]
        tries[rollup.name] = (ended + done, failed + rollup.counts["failed"])
    return Facts(
        lost_workers=[f"{worker['host']}:{worker['pid']}" for worker in workers if worker["state"] == "lost"],
        unserved_queues=unserved,
        backlog_ages={backlog.name: backlog.oldest_waiting_age_s for backlog in backlogs},
        backlog_age_limit_s=float(settings.backlog_age_limit_s),
        job_tries=tries,
        set_aside=set_aside,
        redis_used_bytes=int(memory.get("used_memory", 0)),
        redis_max_bytes=int(memory.get("maxmemory", 0)),
        dead_deliveries=int(dead or 0),
    )


# KEYS[1]: the alerts hash. ARGV[1]: the alerts open now, {kind: {kind, severity, message}}; ARGV[2]: now.
# An alert no longer open is removed (resolved); a new one is stored with `since` = now (opened); one that
# stays open keeps its `since` and takes the new message and severity (no transition); an unreadable
# entry counts as not open. Returns the opened and the resolved alerts as stored.
_APPLY_SCRIPT = """
local wanted = cjson.decode(ARGV[1])
local opened, resolved = {}, {}
local current = redis.call('HGETALL', KEYS[1])
for i = 1, #current, 2 do
  if wanted[current[i]] == nil then
    redis.call('HDEL', KEYS[1], current[i])
    resolved[#resolved + 1] = current[i + 1]
  end
end
for kind, alert in pairs(wanted) do
  local stored = redis.call('HGET', KEYS[1], kind)
  local ok, previous = false, nil
  if stored then ok, previous = pcall(cjson.decode, stored) end
  if ok and type(previous) == 'table' and previous['since'] then
    alert['since'] = previous['since']
    redis.call('HSET', KEYS[1], kind, cjson.encode(alert))
  else
    alert['since'] = ARGV[2]
    local encoded = cjson.encode(alert)
    redis.call('HSET', KEYS[1], kind, encoded)
    opened[#opened + 1] = encoded
  end
end
return {opened, resolved}
"""


def _alert(raw: bytes | str) -> Alert | None:
    """A stored alert, or None for an entry that is not one (never written by this module)."""
    try:
        data = orjson.loads(raw)
        return Alert(str(data["kind"]), str(data["severity"]), str(data["message"]), data.get("since"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _resolved(alert: Alert, now: datetime) -> Alert:
    """The resolved alert as its message says it: how long it was open and what it was."""
    took = ""
    if alert.since is not None:
        seconds = max((now - datetime.fromisoformat(alert.since)).total_seconds(), 0.0)
        took = f" after {seconds / 60:.0f} min" if seconds >= 60 else f" after {seconds:.0f} s"
    return Alert(alert.kind, alert.severity, f"cleared{took} (was: {alert.message})", alert.since)


async def record_alerts(redis: Redis, alerts: Mapping[str, Alert], now: datetime) -> list[Transition]:
    """Store the alerts open now in place of those open before, atomically; the transitions, opened first."""
    wanted = {
        kind: {"kind": kind, "severity": alert.severity, "message": alert.message} for kind, alert in alerts.items()
    }
    opened, resolved = await redis.eval(_APPLY_SCRIPT, 1, ALERTS_KEY, orjson.dumps(wanted).decode(), now.isoformat())  # type: ignore[misc]
    return [Transition("opened", alert) for raw in opened if (alert := _alert(raw))] + [
        Transition("resolved", _resolved(alert, now)) for raw in resolved if (alert := _alert(raw))
    ]


async def check_alerts(
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime,
    *,
    set_aside_key: str | None = None,
    thresholds: Thresholds | None = None,
) -> list[Transition]:
    """Gather the facts, judge them, record the change: the alerts that opened or resolved since the last check."""
    thresholds = thresholds or THRESHOLDS
    facts = await gather_facts(redis, sessions, settings, now, set_aside_key=set_aside_key, thresholds=thresholds)
    return await record_alerts(redis, evaluate(facts, thresholds), now)


async def open_alerts(redis: Redis) -> list[dict[str, Any]]:
    """The alerts open now, oldest first (/health's `systemAlerts`)."""
    stored: dict[bytes, bytes] = await redis.hgetall(ALERTS_KEY)  # type: ignore[misc]
    found = [alert for raw in stored.values() if (alert := _alert(raw)) is not None]
    return [alert.as_api() for alert in sorted(found, key=lambda alert: (alert.since or "", alert.kind))]


async def alert_recipients(session: AsyncSession) -> list[tuple[int | None, int, str]]:
    """(notification, admin, channel) for each channel of each systemAlert notification linked to an
    enabled admin."""
    query = (
        sa.select(col(Notification.id), col(Notification.notificators), col(UserNotification.user_id))
        .join(UserNotification, col(UserNotification.notification_id) == col(Notification.id))
        .join(User, col(User.id) == col(UserNotification.user_id))
        .where(col(Notification.type) == SYSTEM_ALERT, col(User.role) == Role.ADMIN, col(User.disabled).is_(False))
        .order_by(col(Notification.id), col(UserNotification.user_id))
    )
    return [
        (notification, user, channel)
        for notification, channels, user in (await session.execute(query)).all()
        for channel in channels_of(channels)
    ]


async def plan_alert_deliveries(
    session: AsyncSession, messages: Sequence[Mapping[str, Any]], now: datetime
) -> list[int]:
    """Write a systemAlert delivery of each message (`{kind, message, severity, state}`) to every admin
    who has a systemAlert notification; the delivery ids, to send once this commits."""
    recipients = await alert_recipients(session)
    ids: list[int] = []
    for attributes in messages:
        ids += await plan_message(session, recipients, SYSTEM_ALERT, {"attributes": dict(attributes)}, now)
    return ids
