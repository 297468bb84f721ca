"""Revision 0009 on a PostgreSQL database that holds events: they move into the partitioned table a week at
a time, with their ids; a week a partition from the oldest (at most 400 days back) to a week ahead, older
events in the default partition; each event is still stored once; new events take ids after the old; and
back again."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from alembic import command
from tests.support.plain_sql import add_device, partition_bounds, partition_ranges, run, sql
from tracker_jobs.cleanup.partitions import EVENTS_BY_WEEK
from tracker_jobs.migrations import alembic_config

NOW = datetime.now(UTC)
# (id, age in days): one event 500 days old, past the oldest week the migration makes.
ROWS = [(1, 0), (2, 3), (40, 10), (41, 10), (7_000, 89), (7_001, 500), (90_000, 1)]
INSERT = (
    "INSERT INTO events (id, type, device_id, event_time, attributes, subject) VALUES ($1, 'deviceOverspeed', 1,"
    " $2, '{}', $3) ON CONFLICT DO NOTHING RETURNING id"
)


def events(url: str) -> list[tuple[int, int]]:
    rows = run(sql(url, "SELECT id, event_time FROM events ORDER BY id"))
    return [(row["id"], (NOW - row["event_time"]).days) for row in rows]


def when(event_id: int, age: int) -> datetime:
    return NOW - timedelta(days=age, milliseconds=event_id)  # each its own time: the unique key holds


def test_0009_moves_every_event_into_week_partitions_keeping_ids(database: str) -> None:
    config = alembic_config(database)
    command.upgrade(config, "0008")
    add_device(database)
    for event_id, age in ROWS:
        run(sql(database, INSERT, event_id, when(event_id, age), event_id))
    run(sql(database, "SELECT setval('events_id_seq', 90000)"))

    day_before = datetime.now(UTC).date()
    command.upgrade(config, "0009")
    day_after = datetime.now(UTC).date()  # the migration's own today: either, when midnight came between

    assert events(database) == ROWS
    partitions = partition_bounds(database, "events")

    def made_on(today: date) -> set[str]:
        # From the week 400 days back (the oldest event is older) to a week ahead, and the default one.
        first = EVENTS_BY_WEEK.start_of(today - timedelta(days=400))
        last = EVENTS_BY_WEEK.start_of(today + timedelta(days=7))
        weeks = [first + timedelta(days=7 * n) for n in range((last - first).days // 7 + 1)]
        return {EVENTS_BY_WEEK.partition_name(week) for week in weeks} | {"events_default"}

    assert set(partitions) in (made_on(day_before), made_on(day_after))
    assert partitions["events_default"] == "DEFAULT"
    ranges = partition_ranges(database, "events")  # as the catalogue holds them
    assert set(ranges) == set(partitions) - {"events_default"}
    for name, (low, high) in ranges.items():
        assert low == datetime.combine(date.fromisoformat(name[-8:]), time(), UTC), name
        assert low.weekday() == 0
        assert high - low == timedelta(days=7)
    in_default = run(sql(database, "SELECT id FROM events_default"))
    assert [row["id"] for row in in_default] == [7_001]  # 500 days old: no week of its own
    assert run(sql(database, INSERT, 5, when(40, 10), 40)) == []  # stored once: the unique key holds
    added = run(
        sql(
            database,
            "INSERT INTO events (type, device_id, event_time, attributes, subject) VALUES ('deviceOffline', 1,"
            " $1, '{}', 0) RETURNING id",
            NOW,
        )
    )
    assert added[0]["id"] == 90_001  # the sequence carried on: no id is used twice

    command.downgrade(config, "0008")

    assert events(database) == [*ROWS, (90_001, 0)]
    assert run(sql(database, "SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'events'::regclass")) == []
    assert run(sql(database, "SELECT to_regclass('events_default') AS t"))[0]["t"] is None
    keys = run(sql(database, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"))
    assert {row["indexname"]: row["indexdef"].split(" USING ")[1] for row in keys} == {
        "pk_events": "btree (id)",
        "ix_events_device_id_event_time": "btree (device_id, event_time)",
        "ix_events_event_time": "btree (event_time)",
        "uq_events_device_id_type_event_time_subject": "btree (device_id, type, event_time, subject)",
    }
    command.upgrade(config, "head")  # and forth again: the names the downgrade freed are free
    assert events(database) == [*ROWS, (90_001, 0)]
