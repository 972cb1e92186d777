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
