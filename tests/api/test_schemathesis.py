"""Property-based run of schemathesis against a live server: the operations come from the app's OpenAPI
document (the same one the server publishes at /openapi.json, checked below); every generated request,
positive and negative, goes over HTTP to the running server. None may cause a server error, and every
answer (success or error body) must conform to the document: its status code is documented, its
content type and body match the schema declared for that status.

(`schemathesis.pytest.from_fixture` does not work with pytest 9, hence the schema is built from the app
at collection time and the base URL given per call.)
"""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from digitlab.api.main import create_app
from digitlab.core.config import Settings

MAX_EXAMPLES = 50  # per operation: the whole run stays well under a minute on 2 cores

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

OPENAPI = create_app(Settings(_env_file=None)).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_live_server_publishes_the_same_schema(live_server):
    published = httpx.get(live_server.url + "/openapi.json", timeout=30).json()
    assert published["paths"] == OPENAPI["paths"]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_answers_conform_to_the_schema(case, live_server, admin):
    case.call_and_validate(base_url=live_server.url, headers=admin, checks=CHECKS, timeout=30)


def test_server_healthy_after_fuzzing(live_server):
    assert httpx.get(live_server.url + "/health", timeout=10).json()["status"] == "ok"
    assert "Traceback" not in live_server.log_text(), live_server.log_tail()


def test_conformance_check_catches_a_wrong_body_and_an_undocumented_status():
    from .openapi_check import ConformanceError, check_response

    def answer(status: int, body: dict, path: str = "/health") -> httpx.Response:
        return httpx.Response(status, json=body, request=httpx.Request("GET", "http://x" + path))

    good = {"status": "ok", "models": {"cnn": "ready"}, "database": "ok", "spool": 0,
            "components": {"detector": "ready", "segment_verifier": "ready"}}
    check_response(answer(200, good))
    with pytest.raises(ConformanceError, match="spool"):
        check_response(answer(200, {**good, "spool": "none"}))
    with pytest.raises(ConformanceError, match="does not list"):
        check_response(answer(418, good))
    with pytest.raises(ConformanceError, match="code"):
        check_response(answer(404, {"detail": "No."}, path="/nowhere"))
