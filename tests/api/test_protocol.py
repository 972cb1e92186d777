"""The request head's deadline (`api.protocol`): a client that sends part of a request line or of its headers,
or nothing at all, loses its connection; a whole request is served as usual, also on a kept-alive connection."""

from __future__ import annotations

import socket
import threading
import time

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


def test_a_request_head_that_stops_arriving_closes_the_connection():
    port = free_port()
    config = uvicorn.Config(hello, host="127.0.0.1", port=port, http=QuickDeadline, loop="asyncio",
                            lifespan="off", log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
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
    finally:
        server.should_exit = True
        thread.join(10)
