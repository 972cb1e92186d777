"""Request body size limit, enforced before the body is read (pure ASGI middleware).

A `Content-Length` over the limit is refused at once, without reading a byte of the body. Otherwise
the body is read here, counting bytes as they arrive (chunked uploads have no Content-Length), and
refused as soon as the count passes the limit; an accepted body is handed to the app in one piece, so
no route ever sees more than `max_bytes`. The server discards whatever the client still sends.
"""

from __future__ import annotations

from digitlab.api.errors import error_body

_METHODS_WITHOUT_BODY = frozenset({b"GET", b"HEAD", b"OPTIONS", "GET", "HEAD", "OPTIONS"})


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int, on_refuse=None):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.on_refuse = on_refuse  # called with no argument when a body is refused (metrics)

    async def _refuse(self, send, length: int | None) -> None:
        if self.on_refuse is not None:
            self.on_refuse()
        size = f" ({length:,} bytes)" if length is not None else ""
        detail = (
            f"The request body{size} is larger than the limit of {self.max_bytes:,} bytes: "
            "send a smaller image."
        )
        body = error_body(detail, "payload_too_large")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        if declared == 0 or (declared is None and scope.get("method") in _METHODS_WITHOUT_BODY):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body: nobody to answer
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_bytes:
                    await self._refuse(send, None)
                    return
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, when it comes

        await self.app(scope, replay, send)
