"""Job arguments checked against the job's signature, and `--arg key=value` typed for the CLI."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from tracker_jobs.core.errors import FieldError
from tracker_jobs.job_catalog import job_specs
from tracker_jobs.monitor.arguments import check_arguments, fits, type_name
from tracker_jobs.tasks_cli import TasksCommandFailed, parse_arguments


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (1, int, True),
        (1.5, int, False),
        (True, int, False),
        (1, float, True),
        (True, float, False),
        ("x", str, True),
        (None, str | None, True),
        (None, str, False),
        ([1, 2], list[int], True),
        ([1, "2"], list[int], False),
        ({"a": 1}, dict[str, int], True),
        ({"a": "b"}, dict[str, int], False),
        ("kmh", Literal["kn", "kmh"], True),
        ("mph", Literal["kn", "kmh"], False),
        (object(), Any, True),
    ],
)
def test_json_values_fit_declared_types(value: Any, annotation: Any, expected: bool) -> None:
    assert fits(value, annotation) is expected


def test_type_names_as_the_api_shows_them() -> None:
    assert type_name(int | None) == "integer | null"
    assert type_name(list[str]) == "array of string"
    assert type_name(dict[str, Any]) == "object"


def test_arguments_are_checked_against_the_signature() -> None:
    ping = job_specs()["ping"]
    assert check_arguments(ping, {"seconds": 2, "steps": 4}) == {"seconds": 2, "steps": 4}
    with pytest.raises(FieldError, match=r"^steps: must be integer$"):
        check_arguments(ping, {"steps": "4"})
    with pytest.raises(FieldError, match=r"^minutes: ping takes no such argument"):
        check_arguments(ping, {"minutes": 2})
    with pytest.raises(FieldError, match=r"^url: is required$"):
        check_arguments(job_specs()["send_webhook"], {"payload": {}})


def test_cli_arguments_take_the_declared_types() -> None:
    types = {
        "seconds": "number",
        "steps": "integer",
        "label": "string",
        "flag": "boolean",
        "ids": "array of integer",
        "limit": "integer | null",
    }
    pairs = ["seconds=1.5", "steps=3", "label=123", "flag=true", "ids=[1,2]", "limit=null", 'other={"a": 1}']
    assert parse_arguments(pairs, types) == {
        "seconds": 1.5,
        "steps": 3,
        "label": "123",
        "flag": True,
        "ids": [1, 2],
        "limit": None,
        "other": {"a": 1},
    }
    assert parse_arguments(["steps=many"], types) == {"steps": "many"}  # the API answers 400 naming it
    with pytest.raises(TasksCommandFailed, match="expected KEY=VALUE"):
        parse_arguments(["steps"], types)
