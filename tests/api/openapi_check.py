"""Every answer a test receives is checked against the app's OpenAPI document: the status code is
documented for that operation, and a JSON body matches the schema declared for that status.

Installed as an httpx response hook on the contract tests' client, so success and error bodies of real
requests (real models, real database) are validated, not only the ones schemathesis generates.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from digitlab.api.main import create_app
from digitlab.core.config import Settings


@cache
def openapi() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()


@cache
def _operations() -> list[tuple[re.Pattern, str, dict]]:
    out = []
    for path, methods in openapi()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for method, op in methods.items():
            out.append((pattern, method.upper(), op))
    return out


def _validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": openapi().get("components", {})})


def _error_schema() -> dict:
    return {"$ref": "#/components/schemas/ErrorResponse"}


class ConformanceError(AssertionError):
    pass


def check_response(response: httpx.Response) -> None:
    """Raise ConformanceError when `response` does not match the document."""
    response.read()
    request = response.request
    path, method, status = request.url.path, request.method, response.status_code
    if method == "HEAD":  # the GET's headers without a body: nothing to check against a schema
        assert not response.content, f"HEAD {path} sent a body"
        return
    ctype = response.headers.get("content-type", "").split(";")[0].strip()
    op = next((op for pattern, m, op in _operations() if m == method and pattern.match(path)), None)
    if op is None:  # a path or method the document does not have: still the one error shape
        if status >= 400 and ctype == "application/json":
            _assert_valid(_error_schema(), response, f"{method} {path}")
        return
    spec = op["responses"].get(str(status)) or op["responses"].get(f"{str(status)[0]}XX")
    if spec is None:
        raise ConformanceError(f"{method} {path} answered {status}, which the document does not list")
    content = spec.get("content")
    if not content:
        return
    if ctype not in content:
        raise ConformanceError(f"{method} {path} {status}: content type {ctype!r}, documented {sorted(content)}")
    schema = content[ctype].get("schema")
    if ctype == "application/json" and schema:
        _assert_valid(schema, response, f"{method} {path} {status}")


def _assert_valid(schema: dict, response: httpx.Response, where: str) -> None:
    errors = sorted(_validator(schema).iter_errors(response.json()), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        raise ConformanceError(f"{where}: body does not match the schema at {list(first.path)}: {first.message[:300]}")
