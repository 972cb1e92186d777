"""uvicorn's HTTP protocol with a deadline for the request head: a client that sends part of a request line
or of its headers and then nothing held its connection (a file descriptor, some memory) for as long as it
liked; 300 such connections were still open after 120 s. The body has its own deadline (`limits`)."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitlab.api.limits import BODY_IDLE_SECONDS

#: a request head (request line and headers) must be complete this long after the connection opened or the
#: request began; otherwise the connection is closed
HEAD_SECONDS = BODY_IDLE_SECONDS


class HeadDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose request head is not complete within HEAD_SECONDS
    (from the connection's start, and from the first byte of each later request on it)."""

    head_seconds = HEAD_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._start_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
