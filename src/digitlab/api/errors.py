"""Every error the API answers is JSON `{"detail": "<one sentence>", "code": "<snake_case>"}`.

`ApiError` is raised by the routes; `DigitlabError`s from the rest of the package (preprocessing, the
store, the models) are mapped by their `code`; FastAPI's validation errors become 422 `invalid_fields`
with a readable sentence; anything unexpected becomes 500 `internal_error` with a generic sentence (the
traceback goes to the log only).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from digitlab.errors import DigitlabError

log = logging.getLogger("digitlab.api")

#: HTTP status of every error code the API can answer (docs/api.md lists them with their meaning).
STATUS_BY_CODE: dict[str, int] = {
    "malformed_body": 400,
    "unreadable_image": 400,
    "empty_image": 400,
    "not_a_number": 400,
    "unauthorized": 401,
    "admin_only": 403,
    "not_found": 404,
    "unknown_model": 404,
    "prediction_not_found": 404,
    "image_not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "learning_busy": 409,
    "busy": 409,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_fields": 422,
    "internal_error": 500,
    "model_not_ready": 503,
    "server_busy": 503,
    "model_artifact_invalid": 503,
    "database_unavailable": 503,
    "too_many_waiting_labels": 503,
}

_CODE_BY_STATUS = {
    400: "malformed_body",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_fields",
    500: "internal_error",
    503: "service_unavailable",
}

INTERNAL_ERROR_MESSAGE = "Something went wrong on the server; the error was logged. Please try again."


class ApiError(DigitlabError):
    """An error with a status and code; `headers` go into the response (e.g. WWW-Authenticate)."""

    def __init__(
        self, message: str, code: str, status: int | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message, code=code)
        self.status = status or STATUS_BY_CODE.get(code, 400)
        self.headers = headers


def status_for(exc: DigitlabError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    return STATUS_BY_CODE.get(exc.code, 400)


def error_body(detail: str, code: str) -> bytes:
    import json

    return json.dumps({"detail": detail, "code": code}, ensure_ascii=False).encode()


#: Seconds a client is told to wait before trying a 503 again (`Retry-After`): the store probes the database
#: and a worker reloads its models every 5 s; a busy server's slot frees in about a second (api/limits.py).
RETRY_AFTER_SECONDS = 5
RETRY_AFTER_BUSY_SECONDS = 1


def error_response(status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> Response:
    if status == 503 and not any(name.lower() == "retry-after" for name in headers or {}):
        seconds = RETRY_AFTER_BUSY_SECONDS if code == "server_busy" else RETRY_AFTER_SECONDS
        headers = {**(headers or {}), "Retry-After": str(seconds)}
    return Response(
        error_body(detail, code), status_code=status, media_type="application/json", headers=headers
    )


def _count(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def describe_validation_errors(errors: list[dict[str, Any]] | tuple) -> str:
    """FastAPI/pydantic errors -> one sentence naming the fields, never echoing the submitted values."""
    parts = []
    for err in list(errors)[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
        where = ".".join(loc) or "request body"
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")  # pydantic's prefix says nothing
        if err.get("type") == "missing":
            parts.append(f"'{where}' is required")
        elif err.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
        else:
            parts.append(f"'{where}': {msg[0].lower() + msg[1:] if msg else 'is invalid'}")
    more = len(errors) - len(parts)
    if more > 0:
        parts.append(f"{more} more")
    return _sentence("Invalid request: " + "; ".join(parts))


#: A 5xx code is logged at most once in this many seconds, with how many more were answered since: a 17 s
#: database outage under load logged a line per 503 (1,525; an API probe, session 50). digitlab_errors_total
#: counts every one.
LOG_EVERY_SECONDS = 10.0
_clock = time.monotonic  # (a test moves it)


class ThrottledLog:
    """One WARNING line per error code per `every` seconds, naming how many were not logged in between."""

    def __init__(self, every: float = LOG_EVERY_SECONDS):
        self.every = every
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warning(self, code: str, message: str, *args: Any) -> None:
        now = _clock()
        last = self._last.get(code)
        if last is not None and now - last < self.every:
            self._quiet[code] = self._quiet.get(code, 0) + 1
            return
        self._last[code] = now
        quiet = self._quiet.pop(code, 0)
        suffix = f" ({quiet} more {code} answered in the last {now - last:.0f} s)" if quiet else ""
        log.warning(message + suffix, *args)


def install_error_handlers(app: FastAPI) -> None:
    throttled = ThrottledLog()

    async def digitlab_error(request: Request, exc: DigitlabError) -> Response:
        status = status_for(exc)
        _count(request, exc.code)
        if status >= 500:
            throttled.warning(exc.code, "%s %s -> %s %s: %s", request.method, request.url.path, status, exc.code, exc)
        return error_response(status, _sentence(str(exc)), exc.code, getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        body_errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[:1] == ("body",)]
        sent = media or request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
        if body_errors and sent and media != "application/json" and not media.endswith("+json"):
            _count(request, "unsupported_media_type")  # a JSON body sent as text/plain, a form or untyped (it was
            return error_response(  # "input should be a valid dictionary"): say what to send
                415, f"Send the body as JSON (Content-Type: application/json), not {media[:60] or 'without a type'}.",
                "unsupported_media_type",
            )
        _count(request, "invalid_fields")
        return error_response(422, describe_validation_errors(exc.errors()), "invalid_fields")

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's JSON bodies (feedback, learn) that json.loads cannot take (not UTF-8, nested past its
            # limit): invalid JSON is 422 everywhere else, as documented (these were 400 malformed_body)
            _count(request, "invalid_fields")
            return error_response(422, "Invalid request: the body is not valid JSON (UTF-8).", "invalid_fields")
        code = _CODE_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
        _count(request, code)
        if exc.status_code == 404:
            path = request.url.path[:100]
            detail = f"There is no {path!r} here: see /docs for the API's paths."
            if len(path) > 1 and path.endswith("/"):
                detail += f" Without the trailing slash: {path.rstrip('/')!r}."
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on this path: see /docs."
            allowed = _allowed_methods(request)  # Starlette names only the first route's (GET, not DELETE)
            if allowed:
                return error_response(405, detail, code, {"Allow": ", ".join(allowed)})
        else:
            detail = exc.detail if isinstance(exc.detail, str) else "The request was refused."
        return error_response(exc.status_code, _sentence(detail), code, getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> Response:
        _count(request, "internal_error")
        # Starlette re-raises after this response, so the server logs the traceback once.
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, INTERNAL_ERROR_MESSAGE, "internal_error")

    app.add_exception_handler(DigitlabError, digitlab_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def methods_by_path(routes) -> list[tuple[Any, frozenset[str]]]:
    """(path regex, methods) of every route: a 405's `Allow` names them all (Starlette named only the first
    route of a path: GET, not the DELETE of another route on the same path)."""
    from starlette.routing import compile_path

    table: dict[str, set[str]] = {}
    for route in routes:
        if getattr(route, "methods", None):
            table.setdefault(route.path, set()).update(route.methods)
    return [(compile_path(path)[0], frozenset(methods)) for path, methods in table.items()]


def _allowed_methods(request: Request) -> list[str]:
    table = getattr(request.app.state, "methods_by_path", ())
    allowed = {m for regex, methods in table if regex.match(request.url.path) for m in methods}
    return sorted(allowed | ({"HEAD"} if "GET" in allowed else set()))  # (api/head.py)


#: OpenAPI description of the error body, for `responses=` on routes.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    from digitlab.api.schemas import ErrorResponse

    descriptions = {
        400: "Unreadable image, nothing drawn, or a malformed body",
        401: "Missing or wrong admin token",
        403: "Only for the admin, and no admin token is set on this server",
        404: "Unknown model or prediction",
        413: "Body or image too large",
        415: "Unsupported media type",
        409: "A learning run is going on already",
        422: "Invalid fields",
        503: "Model not ready or database unavailable",
    }
    return {s: {"model": ErrorResponse, "description": descriptions.get(s, "Error")} for s in statuses}


#: What the server answers on any route, before the route is reached (api/protocol.py, api/limits.py).
TRANSPORT_ERRORS = {
    431: "Request head (request line and headers) too large",
}
#: ... and on any route that takes a body.
BODY_TRANSPORT_ERRORS = {
    408: "The request body stopped arriving, or came too slowly",
    413: "Body or image too large",
}


def with_transport_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """The document with the answers the server gives before a route runs listed on every operation they
    can reach (a client generated from it would otherwise treat a 431 or a 408 as undocumented)."""
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    for operations in openapi.get("paths", {}).values():
        for op in operations.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            extra = TRANSPORT_ERRORS | (BODY_TRANSPORT_ERRORS if "requestBody" in op else {})
            for status, description in extra.items():
                op["responses"].setdefault(str(status), {
                    "description": description, "content": {"application/json": {"schema": schema}},
                })
    return openapi


def answer_not_stored() -> ApiError:
    """503 for an answer neither the database nor the outage spool could take."""
    return ApiError(
        "Your answer could not be stored right now (the database could not take it and the server's local "
        "queue could not be written either): try again shortly.",
        "database_unavailable",
    )
