"""What a failed call to the prediction API means to a person: `ApiError`, one sentence (`str(exc)`) with the API's
stable `code`, and `ApiUnavailable`, the service away (refused, timed out, 502/503/504 from a proxy), as opposed to
the service answering "no" to this request. The pages keep an answer met by `ApiUnavailable` and send it again
(`draw.send_unsent` and its kin); `client.py` raises them."""

from __future__ import annotations

import httpx


class ApiError(Exception):
    """A failure a person can read: `str(exc)` is one sentence; `code` is the API's stable code."""

    def __init__(self, message: str, *, code: str = "api_error", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class ApiUnavailable(ApiError):
    """The prediction service could not be reached or did not answer in time."""


def not_understood() -> ApiError:
    """An answer of the API the UI cannot read (a proxy's page, another program on the port)."""
    return ApiError("The prediction service sent an answer the UI does not understand.", code="bad_response")


def from_response(response: httpx.Response, base_url: str) -> ApiError:
    """The error of an HTTP answer of 400 or more: the API's `detail` (first letter upper-case) and `code`."""
    detail, code = None, None
    try:
        body = response.json()
        if isinstance(body, dict):
            detail, code = body.get("detail"), body.get("code")
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    except ValueError:
        pass
    status = response.status_code
    if not code:
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, f"http_{status}")
    if code == "unauthorized":  # (the API's own words ask for a header, which a person in a browser cannot send)
        message = ("Only the prediction service's administrator may see or do this, and this app was not started "
                   "with the administrator's key.")  # (how: common.ADMIN_HOW)
    elif detail:
        message = str(detail).strip()
        message = message[0].upper() + message[1:] if message else message
    elif status in (502, 504):
        message = f"The prediction service at {base_url} is not answering (HTTP {status}) — retrying."
    elif status in (401, 403):
        message = "The prediction service refused access: this app's administrator key is missing or wrong."
    else:
        message = f"The prediction service answered HTTP {status}."
    cls = ApiUnavailable if status in (502, 504) or (status == 503 and not detail) else ApiError
    return cls(message, code=str(code), status=status)


def label_kept(exc: ApiError, *, by_uid: bool) -> ApiUnavailable | None:
    """A label (feedback) the API cannot take yet, though it will: `ApiUnavailable`, so that the page keeps the answer
    and sends it again, or None (`exc` stands).

    * By uid (its server spooled the record), a 404 is another replica's, before the replay (such labels were lost;
      session 31).
    * A 503 `too_many_waiting_labels`: during a database outage too many answers wait already for drawings not
      stored yet, and the API kept none of this one ("send it again once its drawing is stored"): the page said
      "Your answer was not saved" for good, and the answer was lost."""
    if isinstance(exc, ApiUnavailable):
        return None
    if by_uid and exc.status == 404:
        return ApiUnavailable("The drawing is still being saved: your answer is kept and sent again.",
                              code="record_pending", status=404)  # fmt: skip
    if exc.code == "too_many_waiting_labels":
        return ApiUnavailable("Many answers wait for drawings not stored yet: yours is kept here and sent again once "
                              "the database has caught up.", code=exc.code, status=exc.status)  # fmt: skip
    return None
