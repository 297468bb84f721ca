"""Hostile values in every parameter and body field of every admin route that takes any, one at a time,
against the real `tracker-jobs admin` process on each database backend: every answer is < 500 and, when
>= 400, a JSON `{"error": {"code", "message"}}`.

The routes, their parameters and body fields come from GET /api/openapi.json, so a new route is fuzzed
without anyone adding it here. Every other parameter keeps a valid value that names a real device, user,
token, report or task (made before fuzzing), so what a handler meets is the one hostile value, not a
missing id it refuses first. The admin sends every value; a plain user (logged in through POST
/api/session) sends a sample. Failures are collected rather than raised, so one run lists all of them,
each with the process's own log of that request (its traceback, for a 5xx).
"""

from __future__ import annotations

import copy
import http.client
import itertools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.client import bearer
from tests.support.processes import AdminProcess, admin_process
from tests.support.services import ADMIN_TOKEN

FROM, TO = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
DEPTH = 300
UNIQUE = "<unique>"  # replaced by a counter in every request body, so each create is a new uniqueId or email
USER_EMAIL, USER_PASSWORD = "fuzz-user@example.com", "fuzz user password"
# A websocket: what it does with hostile input is not a request/answer question.
SKIPPED = {("GET", "/api/socket")}
GENERATED_PER_SLOT = 4
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 2, "DELETE": 3}  # change and delete last: the rest use the objects


@dataclass(frozen=True)
class Hostile:
    label: str  # how a failure names the value: a 100k-character string is not printed
    value: Any
    encoded: bool = False  # for query and path values: already percent-encoded, sent as it is


class NoValue:
    """A query parameter sent as `?name` with no `=`."""


def deep_list(depth: int) -> Any:
    nested: Any = []
    for _ in range(depth - 1):
        nested = [nested]
    return nested


def deep_object(depth: int) -> Any:
    nested: Any = {}
    for _ in range(depth - 1):
        nested = {"a": nested}
    return nested


# Text for path and query parameters, percent-encoded as UTF-8 when sent (so NUL goes as %00).
TEXTS = [
    Hostile("NUL", "\x00"),
    Hostile("NUL inside", "a\x00b"),
    Hostile("100k characters", "x" * 100_000),
    Hostile("99999999999", "99999999999"),
    Hostile("2**63", str(2**63)),
    Hostile("-2**63-1", str(-(2**63) - 1)),
    Hostile("2**31", str(2**31)),
    Hostile("-1", "-1"),
    Hostile("0", "0"),
    Hostile("1e308", "1e308"),
    Hostile("1e400", "1e400"),
    Hostile("-0.0", "-0.0"),
    Hostile("nan", "nan"),
    Hostile("-inf", "-inf"),
    Hostile("max date at -01:00", "9999-12-31T23:59:59-01:00"),
    Hostile("min date at +01:00", "0001-01-01T00:00:00+01:00"),
    Hostile("offset +99:99", "2026-01-01T00:00:00+99:99"),
    Hostile("February 30", "2026-02-30T00:00:00Z"),
    Hostile("year 10000", "10000-01-01T00:00:00Z"),
    Hostile("[[[...]]] 300 deep", json.dumps(deep_list(DEPTH))),
    Hostile('{"a":{"a":...}} 300 deep', json.dumps(deep_object(DEPTH))),
    Hostile("true", "true"),
    Hostile("lone surrogate \\ud800", "\ud800"),
    Hostile("RTL override", "\u202eabc"),
    Hostile("RTL mark", "\u200f"),
    Hostile("U+10FFFF", "\U0010ffff"),
    Hostile("empty", ""),
    Hostile("space", " "),
    Hostile("a/b", "a/b"),
    Hostile("%FF (not UTF-8)", "%FF", encoded=True),
    Hostile("%C0%80 (overlong NUL)", "%C0%80", encoded=True),
]
QUERY_ONLY = [
    Hostile("given twice", ["1", "2"]),  # a list where one value is expected
    Hostile("given 10 000 times", ["1"] * 10_000),
    Hostile("no '=' at all", NoValue()),
]
# Values for body fields, sent as JSON (a lone surrogate as the escape \ud800, everything else as UTF-8).
VALUES = [
    Hostile("NUL", "\x00"),
    Hostile("NUL inside", "a\x00b"),
    Hostile("NUL in an email", "a\x00b@x"),
    Hostile("100k characters", "x" * 100_000),
    Hostile("99999999999", 99999999999),
    Hostile("2**63", 2**63),
    Hostile("2**64", 2**64),
    Hostile("-2**63-1", -(2**63) - 1),
    Hostile("2**31", 2**31),
    Hostile("-1", -1),
    Hostile("0", 0),
    Hostile("1e308", 1e308),
    Hostile("-1e308", -1e308),
    Hostile("-0.0", -0.0),
    Hostile("5e-324", 5e-324),
    Hostile("max date at -01:00", "9999-12-31T23:59:59-01:00"),
    Hostile("min date at +01:00", "0001-01-01T00:00:00+01:00"),
    Hostile("offset +99:99", "2026-01-01T00:00:00+99:99"),
    Hostile("February 30", "2026-02-30T00:00:00Z"),
    Hostile("[[[...]]] 300 deep", deep_list(DEPTH)),
    Hostile('{"a":{"a":...}} 300 deep', deep_object(DEPTH)),
    Hostile("a list (for a string)", ["x"]),
    Hostile("an object (for a number)", {"a": 1}),
    Hostile("true (for a number)", True),
    Hostile("false", False),
    Hostile("null", None),
    Hostile("empty string", ""),
    Hostile("lone surrogate \\ud800", "\ud800"),
    Hostile("lone low surrogate \\udc00", "x\udc00"),
    Hostile("RTL override", "\u202eabc"),
    Hostile("RTL mark", "\u200f"),
    Hostile("U+10FFFF", "\U0010ffff"),
    Hostile("text 1e400", "1e400"),
    Hostile("100k-item list", [0] * 100_000),
]
# What the plain user sends: the values most likely to reach a different code path for a user.
USER_SAMPLE = {
    "NUL",
    "NUL inside",
    "NUL in an email",
    "100k characters",
    "99999999999",
    "2**63",
    "-1",
    "max date at -01:00",
    "min date at +01:00",
    "[[[...]]] 300 deep",
    '{"a":{"a":...}} 300 deep',
    "a list (for a string)",
    "lone surrogate \\ud800",
    "given twice",
}


def _offset(minutes: int) -> str:
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02}:{abs(minutes) % 60:02}"


def _could_be_an_id(text: str) -> bool:
    try:
        return 0 < int(text) < 100_000
    except ValueError:
        return False


# Generated extras (hypothesis, derandomized): dates with any offset near the ends of the calendar, any
# text and numbers. Never a small positive whole number in a path: DELETE must not hit the real objects.
GENERATED_DATES = st.builds(
    lambda moment, minutes: moment.isoformat() + _offset(minutes),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.integers(-1439, 1439),
)
GENERATED_TEXTS = (GENERATED_DATES | st.text(max_size=40) | st.integers().map(str) | st.floats().map(str)).filter(
    lambda text: not _could_be_an_id(text)
)
GENERATED_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | GENERATED_DATES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def whole_bodies(baseline: bytes) -> list[tuple[Hostile, str]]:
    """Bodies that are hostile as a whole, with the Content-Type each is sent with."""
    as_json = "application/json"
    return [
        (Hostile("empty body", b""), as_json),
        (Hostile("null", b"null"), as_json),
        (Hostile("a list", b"[]"), as_json),
        (Hostile("a string", b'"text"'), as_json),
        (Hostile("a number", b"0"), as_json),
        (Hostile("a NUL byte", b"\x00"), as_json),
        (Hostile("not UTF-8", b'{"name": "\xff"}'), as_json),
        (Hostile("a raw lone surrogate", b'{"name": "\xed\xa0\x80"}'), as_json),
        (Hostile("[[[...]]] 300 deep", json.dumps(deep_list(DEPTH)).encode()), as_json),
        (Hostile('{"a":{"a":...}} 300 deep', json.dumps(deep_object(DEPTH)).encode()), as_json),
        (Hostile("100 000 [ unclosed", b"[" * 100_000), as_json),
        (Hostile("8 MiB (the valid body padded)", b" " * (8 * 1024 * 1024) + baseline), as_json),
        (Hostile("17 MiB (over the 16 MiB limit)", b" " * (17 * 1024 * 1024) + baseline), as_json),
        (Hostile("text/plain", baseline), "text/plain"),
    ]


@dataclass(frozen=True)
class Caller:
    """Who sends, and the objects of theirs that the valid part of each request names."""

    name: str
    headers: dict[str, str]
    device: int
    unique_id: str
    report: int
    task: str
    victim: int  # a user of the admin's making, for /api/users/{id}: fuzzing may change or disable it
    victim_token: int


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    log: str  # what the process logged while it answered


class NoAnswer(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection to the admin process; the request target is sent as given."""

    def __init__(self, admin: AdminProcess) -> None:
        self.admin = admin
        self.http: http.client.HTTPConnection | None = None

    def send(
        self, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        error: Exception | None = None
        for _ in range(2):  # once more on a fresh connection: the server may have closed the idle one
            if self.http is None:
                self.http = http.client.HTTPConnection("127.0.0.1", self.admin.port, timeout=30)
            try:
                self.http.request(method, target, body=body, headers=headers or {})
                response = self.http.getresponse()
                answer = response.read()
                if response.will_close:
                    self.close()
                return Answer(response.status, answer, self.admin.new_log())
            except (http.client.HTTPException, OSError) as failed:
                self.close()
                error = failed
        raise NoAnswer(f"{type(error).__name__}: {error}")

    def json(self, method: str, path: str, body: Any, caller_headers: dict[str, str], expect: int) -> Any:
        headers = {**caller_headers, "Content-Type": "application/json"} if body is not None else caller_headers
        answer = self.send(method, path, None if body is None else json.dumps(body).encode(), headers)
        assert answer.status == expect, f"setting up: {method} {path} {answer.status} {answer.body[:500]!r}"
        return json.loads(answer.body)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None


def encode(value: str) -> str:
    # surrogatepass: a lone surrogate goes as its (invalid) UTF-8 bytes, which is the hostile part.
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def encoded(hostile: Hostile) -> str:
    return str(hostile.value) if hostile.encoded else encode(str(hostile.value))


def json_bytes(body: Any) -> bytes:
    # Raw UTF-8 where it can be; a lone surrogate cannot, and backslashreplace writes it as the JSON escape \ud800.
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace")


def replaced(body: Any, slot: tuple[Any, ...], value: Any) -> Any:
    """The body with `value` at `slot` (keys and list indexes), containers made where the baseline has none."""
    changed = copy.deepcopy(body)
    container = changed
    for key, following in itertools.pairwise(slot):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(container, list):
            if not container:
                container.append(empty)
        elif not isinstance(container.get(key), dict | list):
            container[key] = empty
        container = container[key]
    if isinstance(container, list) and not container:
        container.append(value)
    else:
        container[slot[-1]] = value
    return changed


def _variant(schema: dict[str, Any], value: Any) -> dict[str, Any]:
    """The `oneOf`/`anyOf` alternative that describes the baseline value."""
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if not alternatives:
        return schema
    wanted = "array" if isinstance(value, list) else "object"
    return next((choice for choice in alternatives if choice.get("type") == wanted), alternatives[0])


def body_slots(schema: dict[str, Any], baseline: Any) -> list[tuple[Any, ...]]:
    """Every field a hostile value goes into: each property, the first item of each list, a member of each object."""
    schema = _variant(schema, baseline)
    if isinstance(baseline, list):
        return [(0, *slot) for slot in body_slots(schema.get("items", {}), baseline[0] if baseline else {})]
    if not isinstance(baseline, dict):
        return []
    properties: dict[str, Any] = schema.get("properties", {})
    slots: list[tuple[Any, ...]] = []
    for name in dict.fromkeys([*properties, *baseline]):
        slots.append((name,))
        value, described = baseline.get(name), properties.get(name, {})
        if isinstance(value, list) or described.get("type") == "array":
            slots.append((name, 0))
        if isinstance(value, dict) or described.get("type") == "object":
            slots.append((name, "key"))
    return slots


def slot_name(slot: tuple[Any, ...]) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in slot).lstrip(".")


@dataclass
class Target:
    """One operation with valid values everywhere; each call swaps one of them for a hostile one."""

    method: str
    template: str
    public: bool
    path: dict[str, str]  # name: encoded value
    query: dict[str, list[str]]  # name: encoded values
    body: Any = None  # JSON, or None for no body
    body_schema: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what makes this target one of several (the report kind, the job)

    @property
    def route(self) -> str:
        return f"{self.method} {self.template}" + (f" [{self.label}]" if self.label else "")

    def url(self, path: dict[str, str] | None = None, query: dict[str, list[str] | NoValue] | None = None) -> str:
        names = {**self.path, **(path or {})}
        url = re.sub(r"{(\w+)}", lambda match: names[match[1]], self.template)
        pairs = []
        for name, values in {**self.query, **(query or {})}.items():
            if isinstance(values, NoValue):
                pairs.append(encode(name))
            else:
                pairs.extend(f"{encode(name)}={value}" for value in values)
        return url + ("?" + "&".join(pairs) if pairs else "")


@dataclass(frozen=True)
class Sent:
    """One hostile request, as a failure names it."""

    route: str
    slot: str  # "query from", "body field name", "path id", "whole body"
    caller: str
    value: str  # the hostile value's label
    request: str  # method, target and body, shortened


@dataclass(frozen=True)
class Failure:
    sent: Sent
    status: int | None  # None: no answer
    answer: str
    log: str  # the admin process's output while it answered


def excerpt(data: bytes | str, size: int = 200) -> str:
    """The start of a text or body, control characters (NUL) escaped so the message shows them."""
    start = data[: size + 1]
    text = start.decode(errors="replace") if isinstance(start, bytes) else start
    shown = repr(text[:size])[1:-1]
    unit = "bytes" if isinstance(data, bytes) else "characters"
    return shown if len(data) <= size else f"{shown}... ({len(data)} {unit})"


def well_answered(answer: Answer) -> bool:
    """Below 500 and, from 400 on, `{"error": {"code", "message"}}` with both filled in."""
    if answer.status < 400:
        return True
    if answer.status >= 500:
        return False
    try:
        error = json.loads(answer.body)["error"]
        return all(isinstance(error[key], str) and error[key] for key in ("code", "message"))
    except (ValueError, KeyError, TypeError):
        return False


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*$", re.MULTILINE)


def exception_line(log: str) -> str:
    """The last `SomeError: message` line of a log excerpt: what a traceback ended in."""
    found = list(_EXCEPTION_LINE.finditer(log))
    if not found:
        return ""
    line = found[-1][0]
    if "(raised as a result of" in line:  # SQLAlchemy's autoflush note; the cause is on the next line
        line += " " + log[found[-1].end() :].strip().partition("\n")[0]
    return excerpt(line, 300)


class Fuzzer:
    def __init__(self, admin: AdminProcess, connection: Connection) -> None:
        self.admin = admin
        self.connection = connection
        self.failures: list[Failure] = []
        self.sent = 0
        self.counter = 0

    def send(
        self,
        target: Target,
        caller: Caller,
        slot: str,
        hostile: Hostile,
        url: str,
        body: bytes | None,
        content_type: str = "application/json",
        *,
        valid: bool = False,
    ) -> None:
        """Send one request and keep it as a failure if the answer is wrong (or, for the `valid` one, a 400)."""
        headers = {} if target.public else dict(caller.headers)
        if body is not None:
            self.counter += 1
            body = body.replace(UNIQUE.encode(), str(self.counter).encode())
            headers["Content-Type"] = content_type
        request = f"{target.method} {excerpt(url, 160)}" + (f" with body {excerpt(body, 160)}" if body else "")
        sent = Sent(target.route, slot, caller.name, hostile.label, request)
        self.sent += 1
        try:
            answer = self.connection.send(target.method, url, body, headers)
        except NoAnswer as error:
            self.failures.append(Failure(sent, None, str(error), self.admin.new_log()))
            if self.admin.process.poll() is not None:
                raise AssertionError(f"the admin process died on {request}\n{report(self.failures)}") from None
            return
        if not well_answered(answer) or (valid and answer.status == 400):
            self.failures.append(Failure(sent, answer.status, excerpt(answer.body), answer.log))

    def body_bytes(self, target: Target) -> bytes | None:
        return None if target.body is None else json_bytes(target.body)

    def path_value(self, target: Target, caller: Caller, name: str, hostile: Hostile) -> None:
        url = target.url(path={name: encoded(hostile)})
        self.send(target, caller, f"path {name}", hostile, url, self.body_bytes(target))

    def query_value(self, target: Target, caller: Caller, name: str, hostile: Hostile) -> None:
        value = hostile.value
        values: list[str] | NoValue
        if isinstance(value, NoValue):
            values = value
        elif isinstance(value, list):
            values = [encode(item) for item in value]
        else:
            values = [encoded(hostile)]
        self.send(target, caller, f"query {name}", hostile, target.url(query={name: values}), self.body_bytes(target))

    def body_value(self, target: Target, caller: Caller, slot: tuple[Any, ...], hostile: Hostile) -> None:
        body = json_bytes(replaced(target.body, slot, hostile.value))
        self.send(target, caller, f"body field {slot_name(slot)}", hostile, target.url(), body)

    def whole_body(self, target: Target, caller: Caller, hostile: Hostile, content_type: str) -> None:
        self.send(target, caller, "whole body", hostile, target.url(), hostile.value, content_type)

    def baseline(self, target: Target, caller: Caller) -> None:
        """The valid request itself: were it refused as malformed, the hostile values would test nothing."""
        nothing = Hostile("-", None)
        self.send(
            target, caller, "nothing (the valid request)", nothing, target.url(), self.body_bytes(target), valid=True
        )

    def generated(self, send_one: Callable[[Hostile], None], strategy: st.SearchStrategy[Any]) -> None:
        """A few generated values into one slot; hypothesis only draws them, the checks collect failures."""

        @settings(
            max_examples=GENERATED_PER_SLOT,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(value=strategy)
        def run(value: Any) -> None:
            send_one(Hostile(f"generated {excerpt(repr(value), 60)}", value))

        run()

    def fuzz(self, targets: list[Target], caller: Caller, everything: bool) -> None:
        def chosen(hostiles: list[Hostile]) -> list[Hostile]:
            return hostiles if everything else [hostile for hostile in hostiles if hostile.label in USER_SAMPLE]

        texts, queries, values = chosen(TEXTS), chosen(QUERY_ONLY), chosen(VALUES)
        seen: set[str] = set()
        for target in targets:
            if target.method != "DELETE":  # a valid DELETE would remove the objects the hostile calls name
                self.baseline(target, caller)
            # Path values and whole bodies once per operation, not once per report kind or job: a hostile
            # path value replaces the kind or job name, and a whole body replaces the arguments.
            first = f"{target.method} {target.template}" not in seen
            seen.add(f"{target.method} {target.template}")
            if first:
                for name in target.path:
                    for hostile in texts:
                        self.path_value(target, caller, name, hostile)
                    if everything:
                        self.generated(partial(self.path_value, target, caller, name), GENERATED_TEXTS)
            for name in target.query:
                for hostile in texts + queries:
                    self.query_value(target, caller, name, hostile)
                if everything:
                    self.generated(partial(self.query_value, target, caller, name), GENERATED_TEXTS)
            if target.body is None:
                continue
            for slot in body_slots(target.body_schema, target.body):
                for hostile in values:
                    self.body_value(target, caller, slot, hostile)
                if everything:
                    self.generated(partial(self.body_value, target, caller, slot), GENERATED_JSON)
            if everything and first:
                for hostile, content_type in whole_bodies(json_bytes(target.body)):
                    self.whole_body(target, caller, hostile, content_type)


# --- The valid half of every request ---


def make_callers(connection: Connection) -> tuple[Caller, Caller]:
    """A device, a report (and its task) for the admin and for a plain user, and a user to change."""
    admin_headers = bearer(ADMIN_TOKEN)
    user = connection.json(
        "POST", "/api/users", {"email": USER_EMAIL, "password": USER_PASSWORD, "role": "user"}, admin_headers, 201
    )
    assert user["role"] == "user"
    session = connection.json("POST", "/api/session", {"email": USER_EMAIL, "password": USER_PASSWORD}, {}, 200)
    user_headers = bearer(session["token"])
    victim = connection.json(
        "POST", "/api/users", {"email": "fuzz-victim@example.com", "password": "victim password"}, admin_headers, 201
    )["id"]
    victim_token = connection.json("POST", f"/api/users/{victim}/tokens", {"name": "fuzz"}, admin_headers, 201)["id"]
    callers = []
    for name, headers in (("admin", admin_headers), ("user", user_headers)):
        unique_id = f"fuzz-{name}-truck"
        device = connection.json("POST", "/api/devices", {"name": f"Fuzz {name}", "uniqueId": unique_id}, headers, 201)
        position = {"uniqueId": unique_id, "fixTime": "2026-01-01T01:00:00Z", "latitude": 52.5, "longitude": 13.4}
        connection.json("POST", "/api/positions", [position], headers, 202)
        report = connection.json(
            "POST",
            "/api/tasks/report/device",
            {"device_id": device["id"], "start": FROM, "end": TO, "kind": "events"},
            headers,
            202,
        )
        callers.append(
            Caller(name, headers, device["id"], unique_id, report["report_id"], report["task_id"], victim, victim_token)
        )
    return callers[0], callers[1]


def known_bodies(caller: Caller) -> dict[str, Any]:
    """Valid bodies that name the caller's objects (or are new each time); other routes use their example."""
    position = {
        "uniqueId": caller.unique_id,
        "fixTime": "2026-01-01T01:00:00Z",
        "latitude": 52.5,
        "longitude": 13.4,
        "speed": 1.0,
        "course": 90.0,
        "altitude": 30.0,
        "accuracy": 5.0,
        "valid": True,
        "attributes": {},
    }
    report = {"start": FROM, "end": TO, "formats": ["json"]}
    return {
        "POST /api/session": {"email": USER_EMAIL, "password": USER_PASSWORD},
        "POST /api/devices": {
            "name": "Fuzz truck",
            "uniqueId": f"fuzz-{UNIQUE}",
            "speedLimit": 50.0,
            "disabled": False,
            "attributes": {},
        },
        "PUT /api/devices/{id}": {"name": "Fuzz truck", "speedLimit": 50.0, "attributes": {}},
        "POST /api/positions": [position],
        "POST /api/tasks/position/process-batch": [position],
        "POST /api/tasks/position/process-single": position,
        "POST /api/tasks/report/device": {
            **report,
            "device_id": caller.device,
            "kind": "events",
            "daily": False,
            "event_types": ["deviceOnline"],
        },
        "POST /api/tasks/report/fleet": {**report, "device_ids": [caller.device]},
        "POST /api/users": {
            "name": "Fuzz",
            "email": f"fuzz-{UNIQUE}@example.com",
            "password": "fuzz password",
            "role": "user",
            "disabled": False,
        },
        "PUT /api/users/{id}": {
            "name": "Fuzz victim",
            "email": "fuzz-victim@example.com",
            "password": "victim password",
            "role": "user",
            "disabled": False,
        },
        "POST /api/users/{id}/tokens": {"name": "fuzz"},
    }


def job_arguments(caller: Caller) -> dict[str, Any]:
    """Valid arguments of the jobs that may be run by hand, by name; GET /api/tasks/jobs says which each takes."""
    return {
        "device_id": caller.device,
        "device_ids": [caller.device],
        "report_id": caller.report,
        "start": FROM,
        "end": TO,
        "format": "json",
        "formats": ["json"],
        "kind": "summary",
        "daily": False,
        "event_types": ["deviceOnline"],
        "event_type": "enter",
        "position_data": {"latitude": 52.5, "longitude": 13.4},
        "message": "disk almost full",
        "severity": "warning",
        "seconds": 0,
        "steps": 1,
        "dry_run": True,
        "days_to_keep": 30,
        "pattern": "device-stats:*",
        "max_age_hours": 24,
    }


def path_baseline(template: str, name: str, schema: dict[str, Any], caller: Caller) -> list[str]:
    if "enum" in schema:
        return [str(value) for value in schema["enum"]]
    if name == "token_id":
        return [str(caller.victim_token)]
    for prefix, value in (
        ("/api/devices/", caller.device),
        ("/api/reports/", caller.report),
        ("/api/tasks/task/", caller.task),
        ("/api/users/", caller.victim),
    ):
        if template.startswith(prefix):
            return [str(value)]
    return ["1" if schema.get("type") == "integer" else "fuzz"]


def query_baseline(name: str, schema: dict[str, Any], caller: Caller) -> str:
    item = schema.get("items", schema)
    if name == "deviceId":
        return str(caller.device)
    if item.get("format") == "date-time":
        return TO if name == "to" else FROM
    if "enum" in item:
        return str(item["enum"][0])
    if item.get("type") == "integer":
        return str(item.get("minimum", 1))
    if item.get("type") == "boolean":
        return "false"
    return "deviceOnline" if name == "type" else "fuzz"


def targets_for(document: dict[str, Any], caller: Caller, jobs: list[dict[str, Any]]) -> list[Target]:
    """Every operation that takes a path or query parameter or a JSON body, with valid values for all of them."""
    bodies = known_bodies(caller)
    targets: list[Target] = []
    for template, methods in document["paths"].items():
        for method_name, operation in methods.items():
            method = method_name.upper()
            parameters = operation.get("parameters", [])
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if (method, template) in SKIPPED or not (parameters or content):
                continue
            path_choices = {
                p["name"]: path_baseline(template, p["name"], p["schema"], caller)
                for p in parameters
                if p["in"] == "path"
            }
            query = {
                p["name"]: [encode(query_baseline(p["name"], p["schema"], caller))]
                for p in parameters
                if p["in"] == "query"
            }
            body = None
            if content is not None:
                body = bodies.get(f"{method} {template}", content.get("example", {}))
            base = Target(
                method, template, operation.get("security") == [], {}, query, body, content["schema"] if content else {}
            )
            if template == "/api/tasks/run/{job_name}":
                # The body is the job's arguments: one target per runnable job, each argument a field.
                arguments = job_arguments(caller)
                for job in jobs:
                    given = {parameter["name"]: arguments.get(parameter["name"], 1) for parameter in job["parameters"]}
                    targets.append(
                        Target(
                            method,
                            template,
                            base.public,
                            {"job_name": encode(job["name"])},
                            query,
                            given,
                            {},
                            label=job["name"],
                        )
                    )
                continue
            # One target per value of an enum in the path (each report kind), else just one.
            names = list(path_choices)
            combinations = [dict(zip(names, values, strict=True)) for values in _product(path_choices.values())]
            for chosen in combinations:
                label = ", ".join(chosen[name] for name in names if len(path_choices[name]) > 1)
                targets.append(
                    Target(
                        method,
                        template,
                        base.public,
                        {n: encode(v) for n, v in chosen.items()},
                        query,
                        copy.deepcopy(body),
                        base.body_schema,
                        label=label,
                    )
                )
    return sorted(targets, key=lambda target: (METHOD_ORDER.get(target.method, 1), target.template))


def _product(choices: Any) -> Iterator[tuple[str, ...]]:
    result: list[tuple[str, ...]] = [()]
    for values in choices:
        result = [(*done, value) for done in result for value in values]
    return iter(result)


# --- Saying what failed ---


def own_frames(log: str) -> str:
    """A log excerpt without the frames of libraries and the standard library: the project's frames, the SQL
    and the error stay, each line shortened."""
    kept: list[str] = []
    skipping = False
    for line in log.strip().splitlines():
        if line.startswith("  File "):
            skipping = "site-packages" in line or "/lib/python3" in line
        elif not line.startswith("    "):  # a frame's code and ^^^ lines are indented further; anything else ends it
            skipping = False
        if not skipping:
            kept.append(excerpt(line, 300))
    return "\n".join(kept[-50:])


def report(failures: list[Failure]) -> str:
    """Failures grouped by route and parameter, then by status and logged exception; one traceback of each."""
    groups: dict[tuple[str, str], dict[tuple[int | None, str], list[Failure]]] = defaultdict(lambda: defaultdict(list))
    # One traceback per kind of exception: the same error about 99999999999 and 2147483648 is one kind.
    tracebacks: dict[str, tuple[str, str]] = {}
    where: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for failure in failures:
        logged = exception_line(failure.log)
        if logged:
            kind = re.sub(r"\d+", "N", logged)
            tracebacks.setdefault(kind, (logged, own_frames(failure.log)))
            where[kind].add((failure.sent.route, failure.sent.slot))
        groups[(failure.sent.route, failure.sent.slot)][(failure.status, logged)].append(failure)
    lines = [
        f"{len(failures)} hostile requests got a 5xx, no answer or a non-JSON error, "
        f"at {len(groups)} route/parameter pairs:",
        "",
    ]
    for (route, slot), by_outcome in sorted(groups.items()):
        lines.append(f"{route} -- {slot}")
        for (status, logged), found in by_outcome.items():
            callers = " and ".join(dict.fromkeys(failure.sent.caller for failure in found))
            values = ", ".join(dict.fromkeys(failure.sent.value for failure in found))
            lines += [
                f"    {status or 'no answer'} as {callers} for: {values}",
                f"        e.g. {found[0].sent.request}",
                f"        answer: {found[0].answer}",
            ]
            if logged:
                lines.append(f"        logged: {logged}")
        lines.append("")
    if tracebacks:
        lines.append("The admin process's log of the first request that ended in each kind of exception:")
        for number, (kind, (logged, log)) in enumerate(tracebacks.items(), 1):
            lines += ["", f"[{number}] {logged}  (at {len(where[kind])} route/parameter pairs)", log]
    return "\n".join(lines)


@pytest.fixture
def admin(tmp_path: Path, database_url: str, redis_url: str, redis: ArqRedis) -> Iterator[AdminProcess]:
    # No rate limits: thousands of requests a minute from one token and one address are the point here.
    with admin_process(
        tmp_path, database_url, redis_url, TRACKER_API_RATE_LIMIT="0", TRACKER_ANONYMOUS_RATE_LIMIT="0"
    ) as process:
        yield process


@pytest.mark.timeout(600)  # every route with every hostile value: 40 s on a quiet machine, 2 min+ on a busy one
def test_hostile_values_in_every_parameter_and_field_get_no_5xx(admin: AdminProcess) -> None:
    started = time.monotonic()
    connection = Connection(admin)
    admin_caller, user_caller = make_callers(connection)
    document = connection.json("GET", "/api/openapi.json", None, {}, 200)
    jobs = connection.json("GET", "/api/tasks/jobs", None, admin_caller.headers, 200)
    admin.new_log()  # the setup's lines are no request's log
    fuzzer = Fuzzer(admin, connection)
    admin_targets = targets_for(document, admin_caller, jobs)
    assert len({target.template for target in admin_targets}) > 15
    fuzzer.fuzz(admin_targets, admin_caller, everything=True)
    fuzzer.fuzz(targets_for(document, user_caller, jobs), user_caller, everything=False)
    connection.close()
    print(f"{fuzzer.sent} requests in {time.monotonic() - started:.1f} s")
    assert fuzzer.failures == [], report(fuzzer.failures)
