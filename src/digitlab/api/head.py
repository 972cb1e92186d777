"""HEAD answered like GET without a body (RFC 9110: a server that takes GET on a path takes HEAD too).

FastAPI routes take only the methods they declare, so a monitoring probe's or a link checker's HEAD got 405
on every GET route. Pure ASGI: the app sees a GET; its status and headers go out, its body does not.
"""

from __future__ import annotations

#: set in the scope of a HEAD request the app sees as a GET
HEAD_FLAG = "digitlab.head"


class HeadAsGetMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message):
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # (a streamed file or export: none of it is sent)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # HEAD_FLAG: a route whose body costs much (the export) can answer with its headers only
        inner = {**scope, "method": "GET", HEAD_FLAG: True}
        try:
            await self.app(inner, receive, without_body)
        finally:
            if "route" in inner:  # the route that answered, for the metrics outside (else "unmatched")
                scope["route"] = inner["route"]
