"""Generated hostile input on every ingest route: the answer is a 2xx or a 4xx JSON error that says
what is wrong, never a 5xx. Runs against the real `tracker-jobs admin` process."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import engine_env, running, tracker_jobs_command
from tests.support.services import ADMIN_TOKEN, REDIS_URL
from tracker_jobs.core.redis import connect_redis

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
FIELDS = [
    "id",
    "deviceid",
    "lat",
    "lon",
    "location",
    "timestamp",
    "speed",
    "bearing",
    "altitude",
    "accuracy",
    "hdop",
    "batt",
    "charge",
    "valid",
    "deviceId",
    "uniqueId",
    "fixTime",
    "latitude",
    "longitude",
]
NUMBERISH = st.one_of(
    st.text(max_size=20),
    st.floats().map(str),
    st.integers().map(str),
    st.sampled_from(["nan", "inf", "-0", "1e400", "52.5", "1767225600", ""]),
)
QUERY = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), NUMBERISH, max_size=8)
POSITION_LIKE = st.fixed_dictionaries(
    {},
    optional={
        name: JSON | NUMBERISH | st.floats()
        for name in ["deviceId", "uniqueId", "fixTime", "latitude", "longitude", "speed", "valid", "attributes"]
    },
)
HYPOTHESIS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    directory = tmp_path_factory.mktemp("hostile")
    env = engine_env(
        TRACKER_DATABASE_URL=f"sqlite:///{directory / 'hostile.db'}",
        TRACKER_REDIS_URL=REDIS_URL,
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
        TRACKER_AUTO_REGISTER="true",
    )
    subprocess.run(tracker_jobs_command("migrate"), cwd=directory, env=env, check=True, capture_output=True)
    with (
        running(tracker_jobs_command("admin"), directory, env) as admin,
        running(tracker_jobs_command("listener"), directory, env) as listener,
    ):
        ports = {"admin": int(env["TRACKER_ADMIN_PORT"]), "listener": int(env["TRACKER_OSMAND_PORT"])}
        _wait_for_port(ports["admin"])
        _wait_for_port(ports["listener"])
        yield ports
    assert "Traceback" not in admin.output  # type: ignore[attr-defined]
    assert "Traceback" not in listener.output  # type: ignore[attr-defined]

    async def flush() -> None:
        redis = await connect_redis(REDIS_URL)
        await redis.flushdb()
        await redis.aclose()

    asyncio.run(flush())


def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            request("GET", port, "/health")
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def request(
    method: str, port: int, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_answered(status: int, body: bytes) -> None:
    assert status < 500, body
    if status >= 400:
        error = json.loads(body)["error"]
        assert error["code"]
        assert error["message"]


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}


@HYPOTHESIS
@given(query=QUERY)
def test_osmand_query_strings(engine: dict[str, int], query: dict[str, str]) -> None:
    assert_answered(*request("GET", engine["listener"], "/?" + urlencode(query)))


@HYPOTHESIS
@given(form=QUERY)
def test_osmand_form_posts(engine: dict[str, int], form: dict[str, str]) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_answered(*request("POST", engine["listener"], "/", urlencode(form).encode(), headers))


@HYPOTHESIS
@given(body=JSON | st.fixed_dictionaries({"device_id": JSON, "location": JSON}))
def test_traccar_client_json(engine: dict[str, int], body: Any) -> None:
    headers = {"Content-Type": "application/json"}
    assert_answered(*request("POST", engine["listener"], "/", json.dumps(body).encode(), headers))


@HYPOTHESIS
@given(body=st.lists(POSITION_LIKE | JSON, max_size=8) | JSON)
def test_batch_api(engine: dict[str, int], body: Any) -> None:
    for path in ("/api/positions", "/api/tasks/position/process-batch", "/api/tasks/position/process-single"):
        assert_answered(*request("POST", engine["admin"], path, json.dumps(body).encode(), AUTH))


@HYPOTHESIS
@given(raw=st.binary(max_size=300))
def test_raw_bytes(engine: dict[str, int], raw: bytes) -> None:
    assert_answered(*request("POST", engine["listener"], "/", raw, {"Content-Type": "application/json"}))
    assert_answered(*request("POST", engine["admin"], "/api/positions", raw, AUTH))


@pytest.mark.parametrize(
    ("port_name", "path", "body", "headers"),
    [
        ("admin", "/api/positions", b"[" * 100_000 + b"]" * 100_000, AUTH),  # deep JSON
        ("admin", "/api/positions", b'"' + "\u0000\ud7ff\U0010ffff".encode() * 1000 + b'"', AUTH),
        ("listener", "/", b"x" * (65 * 1024), {"Content-Type": "application/json"}),  # over the listener's limit
        ("admin", "/api/positions", b"[" + b"1," * (9 * 1024 * 1024) + b"1]", AUTH),  # over the admin limit
    ],
)
def test_deep_huge_and_strange_bodies(
    engine: dict[str, int], port_name: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    status, answer = request("POST", engine[port_name], path, body, headers)
    assert 400 <= status < 500
    assert_answered(status, answer)


def test_ten_thousand_devices_in_one_batch(engine: dict[str, int]) -> None:
    body = [
        {"uniqueId": f"fleet-{i}", "fixTime": 1_767_225_600, "latitude": 1.0, "longitude": 2.0} for i in range(10_000)
    ]
    status, answer = request("POST", engine["admin"], "/api/positions", json.dumps(body).encode(), AUTH)
    assert status == 202, answer
    assert json.loads(answer)["accepted"] == 10_000
