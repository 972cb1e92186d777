"""Request limits, enforced before the app sees the request (pure ASGI middleware): the body's size, the
bodies held in memory at once, one Content-Type, and each query parameter at most once.

The body is read here, counting bytes as they arrive (chunked uploads have no Content-Length); an
accepted body is handed to the app in one piece, so no route ever sees more than `max_bytes`. All bodies
being read at once hold at most `max_buffered` bytes in a process: 100 connections each sending 4.9 MB
and holding back the last bytes took 430 MB (a probe, session 27); past the bound a request is answered
503 `server_busy` at once, and its connection closed.

A body over the limit gets a JSON 413 that the client can actually read:

- a client that asked `Expect: 100-continue` (curl, requests with large files) has not sent its body
  yet: it is answered at once, and sends nothing more;
- every other client (Python's urllib, browsers' fetch) sends the whole body before it reads any
  answer. Answering and closing while its bytes are still arriving makes the kernel reset the
  connection, and the client sees "connection reset" instead of the 413. So the rest of the body is
  read and thrown away first, up to `drain_bytes` in all (a bounded cost); a body larger than that
  (declared or counted) is answered as soon as that is known.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from digitlab.api.errors import RETRY_AFTER_BUSY_SECONDS, error_body

_PLAIN_CODINGS = frozenset({b"", b"identity", b"chunked"})  #: body codings taken as they are
_METHODS_WITHOUT_BODY = frozenset({b"GET", b"HEAD", b"OPTIONS", "GET", "HEAD", "OPTIONS"})

#: The most bytes of an oversized request read (and discarded) so its client can read the 413.
DRAIN_BYTES = 64 * 1024 * 1024
#: A body that stops arriving for this long (a client that declared more than it sends, a slow-loris) is
#: answered 408 and its connection freed; the server has no such limit of its own.
BODY_IDLE_SECONDS = 20.0
#: ... and a body still arriving this long after it began (a byte every few seconds, a slow-loris that never
#: idles 20 s: such connections were held for good, and enough of them took every file descriptor) too.
#: 5 MB in 120 s is 42 KB/s: a phone's upload on a poor mobile connection still gets through.
BODY_TOTAL_SECONDS = 120.0
#: The most bytes of request bodies a process holds while they arrive (the limit is 5 MB per body, a canvas
#: drawing 3-40 KB: thousands of drawings at once, or 25 of the largest uploads).
BUFFERED_BYTES = 128 * 1024 * 1024


async def answer_error(send, status: int, detail: str, code: str, *, on_error=None, close: bool = False) -> None:
    """The API's JSON error, sent from a pure ASGI middleware. `on_error(code)` counts it (metrics). `close`: the
    connection is closed after the answer (its body was not read: a client that asked `Expect: 100-continue` and
    was refused kept the connection open and its next request was read as the refused body, and never answered)."""
    if on_error is not None:  # (a 408 or a 415 given here was missing from digitlab_errors_total)
        on_error(code)
    body = error_body(detail, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", str(RETRY_AFTER_BUSY_SECONDS).encode()))
    if close or status in (408, 503):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(
        self, app, max_bytes: int, on_error=None, drain_bytes: int = DRAIN_BYTES,
        idle_seconds: float = BODY_IDLE_SECONDS, total_seconds: float = BODY_TOTAL_SECONDS,
        max_buffered: int = BUFFERED_BYTES,
    ):  # fmt: skip
        self.app = app
        self.max_buffered = max(int(max_buffered), int(max_bytes))
        self.buffered = 0  # bytes of the bodies being read now, in this process
        self.idle_seconds = float(idle_seconds)
        self.total_seconds = float(total_seconds)
        self.max_bytes = int(max_bytes)
        self.drain_bytes = max(int(drain_bytes), self.max_bytes)
        self.on_error = on_error  # called with the error code of every answer given here (metrics)

    def _next_deadline(self, deadline: float) -> float:
        """When the next piece of the body must have come: `idle_seconds` from now, never past `deadline`."""
        return min(asyncio.get_running_loop().time() + self.idle_seconds, deadline)

    async def _drain(self, receive, size: int, deadline: float) -> None:
        """Read and discard the rest of the body (`size` bytes read so far) while it stays within
        `drain_bytes`; returns at its end, at a disconnect, past the bound or the deadline."""
        while size <= self.drain_bytes:
            try:
                async with asyncio.timeout_at(self._next_deadline(deadline)):  # stopped or too slow: the 413 now
                    message = await receive()
            except TimeoutError:
                return
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send, length: int | None, path: str, *, close: bool = False) -> None:
        size = f" ({length:,} bytes)" if length is not None else ""
        what = "image" if path.endswith(("/predict", "/read")) else "request"  # (/learn said "a smaller image")
        detail = f"The request body{size} is larger than the limit of {self.max_bytes:,} bytes: send a smaller {what}."
        await self._answer(send, 413, detail, "payload_too_large", close=close)

    async def _answer(self, send, status: int, detail: str, code: str, *, close: bool = False) -> None:
        await answer_error(send, status, detail, code, on_error=self.on_error, close=close)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.total_seconds
        declared = None
        expects_continue = False
        codings: list[tuple[bytes, bytes]] = []  # (coding, the header that named it)
        media_types = 0
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                media_types += 1
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
            elif name in (b"content-encoding", b"transfer-encoding"):
                codings += [(c.strip(), name) for c in value.lower().split(b",")]
        if media_types > 1 and scope.get("method") not in _METHODS_WITHOUT_BODY:
            # the routes read the first one, the body might be the other's: which was meant cannot be known
            if not expects_continue and (declared or 0) <= self.drain_bytes:
                await self._drain(receive, 0, deadline)
            await self._answer(send, 400, f"The request has {media_types} Content-Type headers: send one.",
                               "malformed_body", close=expects_continue)  # fmt: skip
            return
        coded = [n for c, n in codings if c not in _PLAIN_CODINGS]
        if coded and scope.get("method") not in _METHODS_WITHOUT_BODY:
            # a compressed body reached the parsers as it was: "cut-off upload?", "not valid JSON"
            if not expects_continue and (declared or 0) <= self.drain_bytes:
                await self._drain(receive, 0, deadline)
            header = "Transfer-Encoding" if coded[0] == b"transfer-encoding" else "Content-Encoding"  # (it said
            await self._answer(send, 415, f"Compressed request bodies ({header}) are not accepted: send the "  # the
                               "body uncompressed.", "unsupported_media_type", close=expects_continue)  # other)
            return
        if declared is not None and declared > self.max_bytes:
            if not expects_continue and declared <= self.drain_bytes:
                await self._drain(receive, 0, deadline)
            await self._refuse(send, declared, scope.get("path", ""), close=expects_continue)
            return
        if declared == 0 or (declared is None and scope.get("method") in _METHODS_WITHOUT_BODY):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive, send, scope.get("path", ""), deadline)
        if body is None:
            return
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, when it comes

        await self.app(scope, replay, send)

    async def _read_body(self, receive, send, path: str, deadline: float) -> bytes | None:
        """The whole body, or None once it has been answered here (too large, too slow, the process holding
        too many bodies) or its client went away."""
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self._next_deadline(deadline)):
                        message = await receive()
                except TimeoutError:
                    await self._answer(send, 408, "The request body stopped arriving, or came too slowly: send the "
                                       "whole request again.", "request_timeout")  # fmt: skip
                    return None
                if message["type"] == "http.disconnect":
                    return None  # the client went away before sending its body: nobody to answer
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > self.max_bytes:
                        self.buffered -= sum(len(c) for c in chunks)
                        chunks.clear()  # (nothing left for `finally` to release)
                        if message.get("more_body", False):
                            await self._drain(receive, size, deadline)
                        await self._refuse(send, None, path)
                        return None
                    self.buffered += len(chunk)
                    chunks.append(chunk)
                    if self.buffered > self.max_buffered:
                        await self._answer(send, 503, "The server is receiving too many uploads at once: send it "
                                           "again in a moment.", "server_busy")  # fmt: skip
                        return None
                if not message.get("more_body", False):
                    break
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            self.buffered -= sum(len(c) for c in chunks)


def query_names(openapi: dict) -> set[str]:
    """Every query parameter name the API's routes read, from its OpenAPI document."""
    operations = [op for path in openapi.get("paths", {}).values() for op in path.values() if isinstance(op, dict)]
    return {p["name"] for op in operations for p in op.get("parameters", ()) if p.get("in") == "query"}


class OneValuePerQueryKey:
    """A query parameter sent twice is refused (422 `invalid_fields`): `?page=1&page=2` answered page 2 and
    `?kind=input&kind=processed` the processed image (a probe, session 27), as a repeated form field is
    refused; so is one whose value is not UTF-8. No route takes a list in its query. `read()`: the names the routes read (None: every name). A
    name no route reads is ignored, repeated or not: `/health?_=1&_=2` (a monitor's cache-buster) was a 422."""

    def __init__(self, app, on_error=None, read=None):
        self.app = app
        self.on_error = on_error
        self.read = read
        self._names: frozenset[str] | None = None

    def _checked(self, name: str) -> bool:
        if self.read is None:
            return True
        if self._names is None:  # (the routes are all there by the first request)
            self._names = frozenset(self.read())
        return name in self._names

    async def __call__(self, scope, receive, send):
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if query and b"%" in query:  # `?model=%FF` was read as "\ufffd": a 200 with nothing, where a form field is a 422
            for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
                try:
                    value.encode("latin-1").decode("utf-8")
                except UnicodeDecodeError:
                    if self._checked(name):
                        await answer_error(send, 422, f"Invalid request: the query parameter '{name[:40]}' is not UTF-8 "
                                           "text (a percent-encoded byte that is no character).", "invalid_fields",
                                           on_error=self.on_error)  # fmt: skip
                        return
        if query and b"&" in query:
            seen: set[str] = set()
            for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if name in seen and self._checked(name):
                    await answer_error(send, 422, f"Invalid request: the query parameter '{name[:40]}' was sent more "
                                       "than once: send each once.", "invalid_fields", on_error=self.on_error)  # fmt: skip
                    return
                seen.add(name)
        await self.app(scope, receive, send)
