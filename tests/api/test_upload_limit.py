"""A body over the upload limit gets a JSON 413 whatever the client (issue 13.8): Python's urllib sends
no `Expect: 100-continue` and writes the whole body before it reads the answer, so the server must read
(and discard) the rest before it answers, or the client sees a connection reset instead."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

BODY_BYTES = 12_000_000  # over the default limit of 5,000,000 bytes


def _post(url: str, data, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _chunks():
    piece = b"\0" * 1_000_000
    for _ in range(BODY_BYTES // len(piece)):
        yield piece


@pytest.mark.parametrize(
    "body",
    [lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * BODY_BYTES, _chunks],
    ids=["content-length", "chunked"],
)
def test_urllib_upload_over_the_limit_reads_a_json_413(live_server, body):
    status, answer = _post(
        f"{live_server.url}/api/v1/predict", body(), {"Content-Type": "application/octet-stream"}
    )
    assert status == 413
    assert answer["code"] == "payload_too_large" and "5,000,000 bytes" in answer["detail"]
    assert answer["detail"].endswith("send a smaller image.")
    # the connection was left in order: the server answers the next request normally
    with urllib.request.urlopen(f"{live_server.url}/health", timeout=10) as health:
        assert health.status == 200
    # a body that carries no image is not told to send a smaller one (POST /learn said so)
    status, answer = _post(f"{live_server.url}/api/v1/learn", body(), {"Content-Type": "application/json"})
    assert status == 413 and answer["detail"].endswith("send a smaller request."), answer


def _asgi(middleware, messages, scope_extra=None):
    """Run a pure ASGI middleware over `messages` (what the client sends): (status, headers, body) answered
    by it, or None when it handed the request to the app."""
    import asyncio

    sent: list[dict] = []
    reached: list[bytes] = []

    async def app(scope, receive, send):
        message = await receive() if scope["method"] == "POST" else {"body": b""}
        reached.append(message.get("body", b""))

    async def run():
        queue = list(messages)

        async def receive():
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)

        scope = {"type": "http", "method": "POST", "path": "/api/v1/predict", "headers": [], "query_string": b""}
        scope.update(scope_extra or {})
        async def send(message):
            sent.append(message)

        await middleware(app)(scope, receive, send)

    asyncio.run(run())
    if reached:
        return None
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_bodies_held_at_once_are_bounded():
    """100 connections each sending 4.9 MB and holding back the last bytes took 430 MB of two workers (a
    probe, session 27): past `max_buffered` bytes of bodies being read in a process, 503 `server_busy`."""
    import asyncio

    from digitlab.api.limits import BodyLimitMiddleware

    limit = BodyLimitMiddleware(None, max_bytes=1000, max_buffered=2500)
    answers: list = []

    async def one(first: bytes, hold: asyncio.Event):
        sent: list[dict] = []

        async def send(message):
            sent.append(message)
        steps = [{"type": "http.request", "body": first, "more_body": True}]

        async def receive():
            if steps:
                return steps.pop(0)
            await hold.wait()
            return {"type": "http.request", "body": b"", "more_body": False}

        async def app(scope, receive, send):
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})

        limit.app = app
        scope = {"type": "http", "method": "POST", "path": "/api/v1/predict", "headers": [], "query_string": b""}
        await limit(scope, receive, send)
        answers.append(sent[0]["status"])

    async def run():
        hold = asyncio.Event()
        tasks = [asyncio.create_task(one(b"x" * 900, hold)) for _ in range(3)]  # 2,700 bytes held: one too many
        await asyncio.sleep(0.05)
        assert limit.buffered <= 2500
        hold.set()
        await asyncio.gather(*tasks)
        assert limit.buffered == 0  # every body released
        await one(b"x" * 900, hold)  # room again

    asyncio.run(run())
    assert sorted(answers) == [200, 200, 200, 503]


def test_a_refused_expect_continue_request_closes_its_connection():
    """Answered 413 before its body came, the connection stayed open and the client's next request was read
    as the refused body, never answered (a probe, session 27)."""
    from digitlab.api.limits import BodyLimitMiddleware

    status, headers, _ = _asgi(
        lambda app: BodyLimitMiddleware(app, max_bytes=1000),
        [],
        {"headers": [(b"content-length", b"5000"), (b"expect", b"100-continue")]},
    )
    assert status == 413 and headers.get(b"connection") == b"close"
    status, headers, _ = _asgi(
        lambda app: BodyLimitMiddleware(app, max_bytes=1000),
        [{"type": "http.request", "body": b"x" * 5000, "more_body": False}],
        {"headers": [(b"content-length", b"5000")]},
    )
    assert status == 413 and b"connection" not in headers  # its body was read: the connection is usable


@pytest.mark.parametrize(
    "query,refused",
    [(b"page=1&page=2", True), (b"kind=input&kind=processed", True), (b"page=1&page_size=2", False),
     (b"model=svm", False), (b"", False), (b"a&a", True)],
)
def test_a_query_parameter_sent_twice_is_refused(query, refused):
    """`?page=1&page=2` answered page 2 and `?kind=input&kind=processed` the processed image."""
    from digitlab.api.limits import OneValuePerQueryKey

    answer = _asgi(lambda app: OneValuePerQueryKey(app), [], {"method": "GET", "query_string": query})
    if refused:
        status, _, body = answer
        assert status == 422 and json.loads(body)["code"] == "invalid_fields" and b"more than once" in body
    else:
        assert answer is None


@pytest.mark.parametrize(
    "query,refused",
    [(b"model=%FF", True), (b"since=2026%E2", True), (b"model=caf%C3%A9", False), (b"model=%41", False), (b"page=1", False)],
)
def test_a_query_parameter_that_is_not_utf8_is_refused(query, refused):
    """`?model=%FF` was read as "\ufffd" (a 200 with no rows) where the same bytes in a form field are a 422."""
    from digitlab.api.limits import OneValuePerQueryKey

    answer = _asgi(lambda app: OneValuePerQueryKey(app), [], {"method": "GET", "query_string": query})
    if refused:
        status, _, body = answer
        assert status == 422 and json.loads(body)["code"] == "invalid_fields" and b"is not UTF-8 text" in body, body
    else:
        assert answer is None


def test_repeated_query_parameters_and_json_members_on_the_live_server(api):
    from .conftest import draw_digit

    r = api.get("/api/v1/predictions?page=1&page=2", headers={"Authorization": "Bearer x"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_fields", r.text
    # a name no route reads is ignored, repeated or not: a monitor's cache-buster made /health a 422 (a probe)
    for path in ("/health?_=1&_=2", "/api/v1/models?a=1&a=1", "/metrics?a=1&a=1", "/health?_=%FF"):
        assert api.get(path).status_code == 200, path
    r = api.get("/api/v1/predictions?model=%FF", headers={"Authorization": "Bearer x"})
    assert r.status_code == 422 and "'model' is not UTF-8 text" in r.json()["detail"], r.text
    r = api.post("/api/v1/predict?a=1&a=1", files={"image": ("d.png", draw_digit(), "image/png")})
    assert r.status_code == 200, r.text
    import base64

    image = base64.b64encode(draw_digit()).decode()
    body = '{"image": "' + image + '", "model": "svm", "true_digit": 7, "true_digit" : 3}'
    r = api.post("/api/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "'true_digit' was sent more than once" in r.json()["detail"], r.text
    body = '{"image": "' + image + '", "model": "svm", "session_id": "a\\":b\\":c", "true_digit": 7}'
    r = api.post("/api/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    uid = r.json()["uid"]
    for path in (f"/api/v1/predictions/uid/{uid}/feedback", "/api/v1/numbers/uid/" + "0" * 32 + "/feedback"):
        r = api.post(path, content=b'{"true_digit": 7, "true_digit": 3, "true_text": "1", "true_text": "2"}',
                     headers={"content-type": "application/json"})
        assert r.status_code == 422 and "was sent more than once" in r.json()["detail"], (path, r.text)
    r = api.post(f"/api/v1/predictions/uid/{uid}/feedback", json={"true_digit": 3})
    assert r.status_code == 200, r.text
    deep = '{"image": "' + image + '", "x": ' + "[" * 1000 + '{"a": 1}' + "]" * 1000 + "}"  # (a 500: RecursionError)
    for path in ("/api/v1/predict", "/api/v1/read"):
        r = api.post(path, content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["code"] == "invalid_fields", (path, r.text)


@pytest.mark.parametrize(("header", "value"), [(b"transfer-encoding", b"gzip, chunked"), (b"content-encoding", b"gzip")])
def test_a_compressed_body_is_refused_naming_the_header_that_said_so(header, value):
    """`Transfer-Encoding: gzip, chunked` was refused with a message about Content-Encoding (a probe, session 31)."""
    from digitlab.api.limits import BodyLimitMiddleware

    messages = [{"type": "http.request", "body": b"x", "more_body": False}]
    status, _, body = _asgi(lambda app: BodyLimitMiddleware(app, max_bytes=1000), messages,
                            {"headers": [(header, value)]})  # fmt: skip
    detail = json.loads(body)["detail"]
    named = "Transfer-Encoding" if header == b"transfer-encoding" else "Content-Encoding"
    assert status == 415 and f"({named})" in detail, detail
