"""The request head's deadline (`api.protocol`): a client that sends part of a request line or of its headers,
or nothing at all, loses its connection; a whole request is served as usual, also on a kept-alive connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
import uvicorn

from digitlab.api.protocol import HeadDeadlineProtocol

from .conftest import free_port


class QuickDeadline(HeadDeadlineProtocol):
    head_seconds = 0.5


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(1000)
        assert chunk, data
        data += chunk
    return data


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(100) == b""
    except TimeoutError:
        return False


@contextlib.contextmanager
def serving(protocol, app=hello, loop="asyncio", **options) -> Iterator[int]:
    """`app` (`hello`) under uvicorn with `protocol` (and further `uvicorn.Config` options), in a thread; yields
    its port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, loop=loop,
                            lifespan="off", log_level="warning", **options)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_request_head_that_stops_arriving_closes_the_connection():
    with serving(QuickDeadline) as port:
        half_line = socket.create_connection(("127.0.0.1", port))
        half_line.sendall(b"POST /api/v1/pred")
        half_head = socket.create_connection(("127.0.0.1", port))
        half_head.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")
        silent = socket.create_connection(("127.0.0.1", port))
        whole = socket.create_connection(("127.0.0.1", port))
        whole.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(whole).startswith(b"HTTP/1.1 200")
        time.sleep(0.8)  # past the deadline: a kept-alive connection is not cut for its idle time...
        whole.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(whole).startswith(b"HTTP/1.1 200")
        whole.sendall(b"GET / HTTP/1.1\r\nHo")  # ...but its next request's head has the same deadline
        for sock in (half_line, half_head, silent, whole):
            assert _closed_within(sock, 3.0)
            sock.close()


class SmallHead(HeadDeadlineProtocol):
    max_head_bytes = 4096


class Recorded(HeadDeadlineProtocol):
    made: ClassVar[list[HeadDeadlineProtocol]] = []

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        Recorded.made.append(self)


def _on_loop(protocol: HeadDeadlineProtocol, fn) -> None:
    """`fn()` run on the protocol's event loop; returns once it has run."""
    done = threading.Event()
    protocol.loop.call_soon_threadsafe(lambda: (fn(), done.set()))
    assert done.wait(5)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_idle_timeout_does_not_cut_a_request_waiting_to_be_read(loop):
    """A kept-alive connection's idle timeout that runs before the socket is read, with a request waiting in it:
    after a pause of the worker (SIGSTOP, a frozen container, a starved process) the due timeout runs first,
    and every request sent on a kept-alive connection during a pause over 5 s (uvicorn's timeout) was cut
    with "connection reset" (an API probe, session 50: 4 of 4 with 2 workers; 0 of 5 after). Here the socket is
    left unread while the timeout runs; an idle connection is still closed when it falls due."""
    Recorded.made.clear()
    with serving(Recorded, loop=loop, timeout_keep_alive=0.5) as port:
        kept = socket.create_connection(("127.0.0.1", port))
        kept.settimeout(5)
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(kept).startswith(b"HTTP/1.1 200")
        (protocol,) = Recorded.made
        _on_loop(protocol, protocol.transport.pause_reading)  # the worker "pauses": nothing is read
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)  # (in the socket's buffer now)
        _on_loop(protocol, protocol.timeout_keep_alive_handler)  # the due timeout runs first...
        _on_loop(protocol, protocol.transport.resume_reading)  # ...then the socket is read
        assert _answer(kept).startswith(b"HTTP/1.1 200")
        assert _closed_within(kept, 3.0)  # idle after its answer: closed after the timeout
        kept.close()


def test_a_request_head_over_the_limit_is_answered_431():
    """A header streamed without end is refused at the limit (the worker held all of it: 126 MB in 20 s); a
    head within it, and a large body after a small head, are served as usual."""
    with serving(SmallHead) as port:
        big = socket.create_connection(("127.0.0.1", port))
        big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        answer = b""
        big.settimeout(5)
        try:
            for _ in range(200):  # 200 KB of one header value, 1 KB at a time
                big.sendall(b"a" * 1024)
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server: the answer was sent before
        while chunk := big.recv(1000):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        assert b'"code":"headers_too_large"' in answer
        big.close()
        whole = socket.create_connection(("127.0.0.1", port))  # a large head that arrives in one read
        whole.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n")
        whole.settimeout(5)
        answer = b""
        while chunk := whole.recv(1000):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 431") and answer.count(b"HTTP/1.1") == 1, answer[:200]
        whole.close()
        garbage = socket.create_connection(("127.0.0.1", port))  # no HTTP at all: a JSON error, like any other
        garbage.sendall(b"FOO\x00\xff / HTTP/1.1\r\n\r\n")
        garbage.settimeout(5)
        answer = b""
        while chunk := garbage.recv(1000):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400") and b'"code":"bad_request"' in answer, answer
        assert b"application/json" in answer
        garbage.close()
        fine = socket.create_connection(("127.0.0.1", port))
        fine.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"a" * 3000 + b"\r\n\r\n")
        assert _answer(fine).startswith(b"HTTP/1.1 200")
        body = b"b" * 300_000  # one large chunk with the head: the body does not count
        fine.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert _answer(fine).startswith(b"HTTP/1.1 200")
        fine.close()


async def slow_hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.05)
    await hello(scope, receive, send)


def test_pipelined_requests_of_a_client_that_hung_up_are_dropped_quietly(caplog):
    """Requests queued on a connection (pipelining) whose client then hung up were still run, and wrote to
    the closed connection: a 70-line traceback at ERROR per request (6 KB of log for 34 bytes sent)."""
    uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate to the root logger caplog listens on
    with serving(HeadDeadlineProtocol, app=slow_hello, loop="uvloop") as port:
        uvicorn_log.addHandler(caplog.handler)  # (after uvicorn configured its logging)
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            s.recv(10)
            s.close()
        time.sleep(1.5)  # every queued request would have run by now
        again = socket.create_connection(("127.0.0.1", port))
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(again).startswith(b"HTTP/1.1 200")  # the server serves on
        again.close()
    uvicorn_log.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors][:3]


def test_a_websocket_upgrade_is_answered_as_the_plain_request_it_is(live_server):
    """The API has no WebSocket endpoint (`ws="none"`): an upgrade got an empty 403 from uvicorn's WebSocket
    layer; now the usual JSON answer of the path, and no warning about WebSocket libraries in the log."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    for path, status, code in (("/api/v1/predict", 405, "method_not_allowed"), ("/ws", 404, "not_found")):
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
            data = b""
            while b"}" not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        assert b"application/json" in head and f'"code": "{code}"'.encode() in body, data
    assert "upgrade" not in live_server.log_text().lower(), live_server.log_tail()


def test_requests_the_client_never_read_or_the_protocol_refused_are_counted(monkeypatch):
    """An answer written after its client hung up (a prediction waiting on a frozen database, `curl -m 1`) was
    counted as a 200, and the protocol's own 400 (no HTTP) and 431 in neither counter (an API probe): the first is
    a 499 now, the others count as requests and as errors."""
    from digitlab.api import metrics as metrics_module
    from digitlab.api.metrics import Metrics, MetricsMiddleware

    metrics = Metrics()
    monkeypatch.setattr(metrics_module, "refused_by_protocol", metrics.count_refused)
    served = []

    async def slow(scope, receive, send):
        await asyncio.sleep(0.6)  # the client is gone by now
        await hello(scope, receive, send)
        served.append(scope["path"])

    class SmallHead(HeadDeadlineProtocol):
        max_head_bytes = 4096

    def counted(status: str) -> float:
        return metrics.registry.get_sample_value(
            "digitlab_http_requests_total", {"method": "other", "route": "unmatched", "status": status, "model": ""}
        ) or 0.0

    with serving(SmallHead, app=MetricsMiddleware(slow, metrics)) as port:
        with socket.create_connection(("127.0.0.1", port)) as left:
            left.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as stayed:
            stayed.sendall(b"GET /here HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(stayed).startswith(b"HTTP/1.1 200")
        for head in (b"FOO\x00\xff / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port)) as refused:
                refused.sendall(head)
                refused.settimeout(5)
                while refused.recv(1000):
                    pass
        deadline = time.monotonic() + 5
        while len(served) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(served) == ["/gone", "/here"]
    statuses = {s.labels["status"]: s.value for m in metrics.registry.collect() for s in m.samples
                if s.name == "digitlab_http_requests_total" and s.labels["method"] == "GET"}  # fmt: skip
    assert statuses == {"200": 1.0, "499": 1.0}, statuses
    assert counted("400") == 1.0 and counted("431") == 1.0
    for code in ("bad_request", "headers_too_large"):
        assert metrics.registry.get_sample_value("digitlab_errors_total", {"code": code}) == 1.0
