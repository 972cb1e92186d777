"""Mutated canvas PNGs and multipart bodies against the predict route's fast paths (one-pass multipart
parser, libspng decoding): every answer is a 200 or a documented 4xx with a JSON error, never a 5xx, and
whenever the fast path takes an input it gives what Starlette's parser and PIL would."""

from __future__ import annotations

import os
import random

import pytest
from fastapi.testclient import TestClient

from digitlab.api.main import create_app
from digitlab.api.multipart import NotText, parse_plain_form
from digitlab.decode import decode_plain_png, open_image, pil_to_rgba

from .conftest import draw_digit
from .test_app import settings_for

CASES = int(os.environ.get("DIGITLAB_FUZZ_CASES", "150"))  # more for a longer hunt


@pytest.fixture(scope="module")
def client(served_model_dir, tmp_path_factory):
    with TestClient(create_app(settings_for(tmp_path_factory.mktemp("fuzz"), served_model_dir))) as c:
        yield c


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:  # cut
        del out[rng.randrange(1, len(out)) :]
    elif kind == 2:  # duplicate a slice
        a = rng.randrange(len(out))
        out[a:a] = out[a : a + rng.randint(1, 40)]
    elif kind == 3:  # delete a slice
        a = rng.randrange(len(out))
        del out[a : a + rng.randint(1, 40)]
    else:  # insert CR/LF/quote/dash noise
        a = rng.randrange(len(out))
        out[a:a] = rng.choice([b"\r\n", b"\n", b'"', b"--", b"\r\n\r\n", b";", b"\\"])
    return bytes(out)


def _assert_answer(response) -> None:
    assert response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        body = response.json()
        assert set(body) >= {"detail", "code"}


def test_mutated_pngs_never_fail_the_server(client):
    rng = random.Random(17)
    png = draw_digit()
    for _ in range(CASES):
        data = _mutate(png, rng)
        fast = decode_plain_png(data, max_side=384)
        if fast is not None:  # the fast path took it: PIL must read the same pixels
            assert (fast == pil_to_rgba(open_image(data, None))).all()
        _assert_answer(client.post("/api/v1/predict", files={"image": ("d.png", data, "image/png")}))


def test_mutated_multipart_bodies_never_fail_the_server(client):
    rng = random.Random(23)
    boundary = "fuzz-boundary-1234"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + draw_digit() + (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ncnn\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="true_digit"\r\n\r\n7\r\n--{boundary}--\r\n'
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    for _ in range(CASES):
        data = _mutate(body, rng)
        try:  # a form, None for Starlette to decide, or NotText: a text field that is not UTF-8 (a 422)
            parse_plain_form(content_type, data)
        except NotText:
            pass
        response = client.post("/api/v1/predict", content=data, headers={"content-type": content_type})
        _assert_answer(response)
