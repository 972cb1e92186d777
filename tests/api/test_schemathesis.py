"""Property-based run of schemathesis against a live server: the operations come from the app's OpenAPI
document (the same one the server publishes at /openapi.json, checked below); every generated request,
positive and negative, goes over HTTP to the running server, and none may cause a server error.

(`schemathesis.pytest.from_fixture` does not work with pytest 9, hence the schema is built from the app
at collection time and the base URL given per call.)
"""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from digitlab.api.main import create_app
from digitlab.core.config import Settings

MAX_EXAMPLES = 50  # per operation: the whole run stays well under a minute on 2 cores

OPENAPI = create_app(Settings(_env_file=None)).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_live_server_publishes_the_same_schema(live_server):
    published = httpx.get(live_server.url + "/openapi.json", timeout=30).json()
    assert published["paths"] == OPENAPI["paths"]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors(case, live_server, admin):
    case.call_and_validate(base_url=live_server.url, headers=admin, checks=[not_a_server_error], timeout=30)


def test_server_healthy_after_fuzzing(live_server):
    assert httpx.get(live_server.url + "/health", timeout=10).json()["status"] == "ok"
    assert "Traceback" not in live_server.log_text(), live_server.log_tail()
