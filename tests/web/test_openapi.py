"""GET /api/openapi.json describes every route of the admin app, and schemathesis, run against the
real `tracker-jobs admin` process (`admin_url`, from conftest.py), finds no 5xx and no answer that the
document does not describe."""

from __future__ import annotations

import itertools
from pathlib import Path

import requests
import schemathesis
from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.services import ADMIN_TOKEN, make_settings
from tracker_jobs.api.openapi import openapi_document, undocumented_routes
from tracker_jobs.core.db import create_engine
from tracker_jobs.web.app import create_admin_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 10


async def test_every_route_is_in_the_document(tmp_path: Path, redis_url: str, redis: ArqRedis) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'unused.db'}", redis_url)
    engine = create_engine(settings.database_url)
    app = create_admin_app(settings, redis, engine)
    assert undocumented_routes(app) == []
    document = openapi_document(app)
    assert document["paths"]["/api/tasks/task/{id}"]["delete"]["responses"].keys() >= {"200", "401", "404", "409"}
    assert document["paths"]["/api/tasks/status"]["get"]["responses"].keys() >= {"200", "401", "403", "429"}
    assert document["paths"]["/health"]["get"]["security"] == []
    await engine.dispose()


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(admin_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{admin_url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    failures: list[str] = []
    with requests.Session() as http:
        for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=admin_url, session=http, headers=headers, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:  # no invalid input exists for it (GET /health takes nothing)
                continue
            except (Exception, FailureGroup) as error:  # every operation is checked; all failures are listed
                failures.append(f"{operation.label} ({mode.value}): {str(error).strip().splitlines()[:16]}")
    assert failures == [], "\n".join(failures)
