"""uvicorn's HTTP protocol with a deadline and a size limit for the request head: a client that sends part of
a request line or of its headers and then nothing held its connection (a file descriptor, some memory) for
as long as it liked (300 such connections were still open after 120 s); one that streamed a header without
end made its worker hold it all (session 15's probe: 126 MB in 20 s, 6 connections +445 MB). The body has
its own deadline and limit (`limits`)."""

from __future__ import annotations

import asyncio
import select

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitlab.api import metrics
from digitlab.api.limits import BODY_IDLE_SECONDS

#: a request head (request line and headers) must be complete this long after the connection opened or the
#: request began; otherwise the connection is closed
HEAD_SECONDS = BODY_IDLE_SECONDS
#: a request head (request line and headers) larger than this is answered 431 and the connection closed
#: (browsers send 1-4 KB; nginx's default buffers take 4 x 8 KB; uvicorn's h11 refuses beyond 16 KB)
MAX_HEAD_BYTES = 64 * 1024


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head that was answered 431."""


class HeadDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose request head is not complete within HEAD_SECONDS
    (from the connection's start, and from the first byte of each later request on it), and answers 431 to
    a head over MAX_HEAD_BYTES."""

    head_seconds = HEAD_SECONDS
    max_head_bytes = MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._running_cycle = None
        self._head_bytes = 0
        self._answered_431 = False
        super().connection_made(transport)
        self._start_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        timer = self._head_timer
        super().data_received(data)
        if timer is not None and self._head_timer is timer:  # a head incomplete before and after: all head
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._head_too_large()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > self.max_head_bytes:
            self._head_too_large()  # a head that arrived whole, in one read
            raise HeadTooLarge  # stops the parser; uvicorn's 400 for it is not sent (`send_400_response`)
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser cannot read (a method like FOO, bytes that are no HTTP) is answered like
        every other error, JSON with a code (uvicorn's own answer is plain text); not after a 431."""
        if not self._answered_431:
            self._answer_and_close(b"400 Bad Request", b'{"detail":"This is not a valid HTTP request.","code":"bad_request"}')
            _count_refused(400, "bad_request")

    def _unsupported_upgrade_warning(self) -> None:
        """A WebSocket upgrade (`ws="none"`: the API has no WebSocket endpoint) is answered as the plain
        request it is; uvicorn's two warnings per upgrade said to install a WebSocket library."""

    def _start_asgi_task(self, cycle, app) -> None:  # type: ignore[no-untyped-def]
        self._running_cycle = cycle
        cycle.scope[metrics.CLIENT_GONE_KEY] = lambda: cycle.disconnected  # (metrics: 499, not the unread 200)
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn marks only the last request *parsed* as disconnected. With pipelining, the one running is
        an earlier one, and the ones queued behind it start later: they all wrote to the closed connection
        (a 70-line traceback at ERROR each). The one running is told too, and the queue is dropped."""
        self._cancel_head_timer()
        running = self._running_cycle
        if running is not None and running is not self.cycle and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        for cycle, _app in self.pipeline:
            cycle.disconnected = True
        self.pipeline.clear()
        super().connection_lost(exc)

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn closes a kept-alive connection idle for `timeout_keep_alive` (5 s); not one whose next request
        waits unread: after a pause (SIGSTOP, a frozen container, a starved process) the timeout runs before the
        socket is read, and a request sent meanwhile was cut with "connection reset" (an API probe, session 50:
        every request sent on a kept-alive connection during a pause over 5 s). The timeout is armed again: the bytes
        are read next, which ends it (a client's hang-up too); an idle connection is closed as before."""
        if _readable(self.transport):
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_large(self) -> None:
        self._cancel_head_timer()
        self._answered_431 = True
        self._answer_and_close(b"431 Request Header Fields Too Large",
                               b'{"detail":"The request\'s headers are larger than %d KB.","code":"headers_too_large"}'
                               % (self.max_head_bytes // 1024))  # fmt: skip
        _count_refused(431, "headers_too_large")

    def _answer_and_close(self, status: bytes, body: bytes) -> None:
        """A JSON error written straight to the connection (no request reached the app), then closed."""
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _readable(transport: asyncio.Transport) -> bool:
    """Bytes (or the client's end) wait unread on the transport's socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


def _count_refused(status: int, code: str) -> None:
    count = metrics.refused_by_protocol
    if count is not None:
        count(status, code)
