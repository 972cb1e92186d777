"""Small things every route uses: the app context, the admin-token check, a fast JSON response, JSON bodies
whose members are named once."""

from __future__ import annotations

import hmac
import json
import re
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

from digitlab.api.context import AppContext
from digitlab.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="Needed only when DIGITLAB_ADMIN_TOKEN is set.")


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


class FastJSONResponse(JSONResponse):
    """JSON via orjson (several times faster for the float lists of a prediction). A JSONResponse, so
    the OpenAPI document shows the route's `response_model` as the body's schema."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """When DIGITLAB_ADMIN_TOKEN is set: `Authorization: Bearer <token>` or 401 `unauthorized`."""
    token = get_ctx(request).settings.admin_token
    if not token:
        return
    if len(request.headers.getlist("authorization")) > 1:  # (the first one was read, whichever was meant)
        raise ApiError("The request has two Authorization headers: send the admin token once.", "unauthorized",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    ):
        raise ApiError(
            "This needs the admin token: send 'Authorization: Bearer <DIGITLAB_ADMIN_TOKEN>'.",
            "unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_admin_token(request: Request, _: Annotated[None, Depends(require_admin)]) -> None:
    """Admin only, always: without DIGITLAB_ADMIN_TOKEN nobody is the admin, so 403 `admin_only` (a server
    open to the network let anyone start minutes of training on its CPU; history and export stay open
    without a token, for a local demo)."""
    if not get_ctx(request).settings.admin_token:
        raise ApiError(
            "Only the admin can start learning: set DIGITLAB_ADMIN_TOKEN on the server and send it as "
            "'Authorization: Bearer <token>', or run `digitlab learn` where the server runs.",
            "admin_only",
        )


def store_or_503(ctx: AppContext):
    if ctx.store is None:
        raise ApiError(
            "The prediction store is not available on this server; see its log.", "database_unavailable"
        )
    return ctx.store


_MEMBER_NAME = re.compile(rb'"\s*:')


class _Repeated(ValueError):
    pass


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise _Repeated(name)
        seen.add(name)
    return dict(pairs)


def utf8_json(body: bytes) -> bytes:
    """A JSON body as UTF-8 without a byte order mark. FastAPI's own parser (the feedback routes) reads UTF-16 and
    UTF-32 as RFC 8259's detection says, while `/predict`, `/read` and `/learn` called them "not valid JSON" (a
    probe, session 30): one rule for every route. Bytes that are none of them are left to the parser to refuse."""
    encoding = json.detect_encoding(body)
    if encoding == "utf-8":
        return body
    try:
        return body.decode(encoding).encode("utf-8")
    except UnicodeError:
        return body


def repeated_member(body: bytes, members: int | None = None) -> str | None:
    """The first member name an object of this JSON body has twice, else None (also for a body that is not
    JSON: its parser says so). A JSON parser keeps the last of two members silently (`{"true_digit": 7,
    "true_digit": 3}` stored 3; a probe, session 27), while a repeated form field is refused. `members`: how many
    the parsed top-level object has; the body is parsed again only when it holds more `"name":` than that."""
    if members is not None and len(_MEMBER_NAME.findall(body)) <= members:
        return None
    try:
        json.loads(body, object_pairs_hook=_once)
    except _Repeated as exc:
        return str(exc)
    except ValueError:
        return None
    return None


def refuse_repeated_members(body: bytes, members: int | None = None) -> None:
    """422 `invalid_fields` for a JSON body naming a member twice (`repeated_member`), or nested deeper than the
    standard parser goes (it was a 500: `[[[...]]]` 1,000 deep passes orjson, then this parse overflowed)."""
    try:
        name = repeated_member(body, members)
    except RecursionError:
        raise ApiError("Invalid request: the JSON body is nested too deeply.", "invalid_fields") from None
    if name is not None:
        raise ApiError(f"Invalid request: '{name[:40]}' was sent more than once: send each member once.", "invalid_fields")


async def json_members_once(request: Request) -> None:
    """`refuse_repeated_members` as a route dependency, for JSON bodies."""
    if "json" in request.headers.get("content-type", "").lower():
        refuse_repeated_members(await request.body())
