"""The one-pass multipart parser agrees with Starlette's on plain forms and declines everything else."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from digitlab.api.multipart import NotText, Part, boundary_of, parse_plain_form


def _starlette(content_type: str, body: bytes) -> dict[str, Part]:
    async def parse():
        async def stream():
            yield body

        form = await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()
        out = {}
        for name, value in form.items():
            out[name] = Part(True, await value.read()) if isinstance(value, UploadFile) else Part(False, value)
        await form.close()
        return out

    return asyncio.run(parse())


def _httpx_form(files, data) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


PNGISH = bytes(range(256)) * 20 + b"\r\n--not-the-boundary\r\n" + b"\r\n\r\n"

FORMS = [
    ({"image": ("d.png", PNGISH, "image/png")}, {}),
    ({"image": ("d.png", PNGISH, "image/png")}, {"model": "cnn", "true_digit": "7", "session_id": "s-1"}),
    ({"image": ("", b"", "application/octet-stream")}, {"model": "all"}),
    ({"image": ("ünïcode name.png", b"\x89PNG", "image/png")}, {"source": "ui", "pen_color": "#ff0000"}),
    ({"image": ("d.png", PNGISH, "image/png"), "model": ("m.txt", b"cnn", "text/plain")}, {}),
    ({"f": ("f.txt", b"1", "text/plain")}, {"image": "not a file", "model": "svm"}),
    ({"f": ("f.txt", b"1", "text/plain")}, {"true_digit": "  ", "model": "é"}),
]


@pytest.mark.parametrize("files,data", FORMS)
def test_plain_forms_parse_like_starlette(files, data):
    content_type, body = _httpx_form(files, data)
    fast = parse_plain_form(content_type, body)
    assert fast is not None
    assert fast == _starlette(content_type, body)


def test_hand_written_bodies():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\nPNGDATA\r\n"
        b'--XyZ\r\ncontent-disposition: FORM-DATA; name="model"\r\n\r\ncnn\r\n--XyZ--\r\n'
    )
    for content_type in ("multipart/form-data; boundary=XyZ", 'Multipart/Form-Data; boundary="XyZ"; charset=utf-8'):
        fast = parse_plain_form(content_type, body)
        assert fast == {"image": Part(True, b"PNGDATA"), "model": Part(False, "cnn")}
        assert fast == _starlette(content_type, body)


DECLINED = {
    "no end": b'--B\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nx',
    "no headers end": b'--B\r\nContent-Disposition: form-data; name="image"',
    "no disposition": b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--",
    "not form-data": b'--B\r\nContent-Disposition: attachment; name="m"\r\n\r\nx\r\n--B--',
    "no name": b'--B\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n--B--',
    "escaped quote": b'--B\r\nContent-Disposition: form-data; name="m\\"x"\r\n\r\nx\r\n--B--',
    "filename*": b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename*=UTF-8''a.png\r\n\r\nx\r\n--B--",
    "repeated name": b'--B\r\nContent-Disposition: form-data; name="m"\r\n\r\n1\r\n--B\r\nContent-Disposition: form-data; name="m"\r\n\r\n2\r\n--B--',
    "LF only": b'--B\nContent-Disposition: form-data; name="m"\n\nx\n--B--',
    "too many files": b"".join(
        b'--B\r\nContent-Disposition: form-data; name="f%d"; filename="a"\r\n\r\nx\r\n' % i for i in range(5)
    )
    + b"--B--",
}


@pytest.mark.parametrize("name", list(DECLINED))
def test_unusual_bodies_are_left_to_starlette(name):
    assert parse_plain_form("multipart/form-data; boundary=B", DECLINED[name]) is None


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/mixed; boundary=B",
     'multipart/form-data; boundary="B"; charset=latin-1', "multipart/form-data; boundary=B; boundary=C",
     "multipart/form-data; boundary=" + "b" * 71, "multipart/form-data; flag"],
)
def test_unusual_content_types_are_declined(content_type):
    assert boundary_of(content_type) is None


PLAIN = b'--B\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name="m"\r\n\r\nsvm\r\n--B--'


def test_a_preamble_is_skipped():
    """RFC 2046 lets a body begin with a preamble before the first delimiter line; Starlette's parser refused
    such a body as "could not be parsed" (a probe, session 27)."""
    expected = {"image": Part(True, b"x"), "m": Part(False, "svm")}
    assert parse_plain_form("multipart/form-data; boundary=B", PLAIN) == expected
    for preamble in (b"preamble\r\n", b"This is a multi-part message.\r\n--C\r\n\r\n", b"\r\n"):
        assert parse_plain_form("multipart/form-data; boundary=B", preamble + PLAIN) == expected


def test_an_epilogue_and_padded_delimiters_are_read():
    """RFC 2046: what follows the close delimiter is an epilogue, and spaces or tabs may pad a delimiter line. Left
    to Starlette, a preamble with an epilogue was a 400 (its parser refuses preambles), and so was padding (a probe,
    session 46). An epilogue alone reads as Starlette reads it."""
    part = b'Content-Disposition: form-data; name="image"; filename="a"\r\n\r\nx\r\n'
    expected = {"image": Part(True, b"x")}
    epilogue = b"--B\r\n" + part + b"--B--\r\nmore"
    assert parse_plain_form("multipart/form-data; boundary=B", epilogue) == expected
    assert _starlette("multipart/form-data; boundary=B", epilogue) == expected
    for body in (b"preamble\r\n" + epilogue, b"--B \t\r\n" + part + b"--B--", b"pre\r\n--B  \r\n" + part + b"--B--x"):
        assert parse_plain_form("multipart/form-data; boundary=B", body) == expected, body
    padded = b"--B\r\n" + part + b'--B \r\nContent-Disposition: form-data; name="m"\r\n\r\n7\r\n--B--'
    assert parse_plain_form("multipart/form-data; boundary=B", padded) == {**expected, "m": Part(False, "7")}


def test_a_text_field_that_is_not_utf8_is_refused():
    body = b'--B\r\nContent-Disposition: form-data; name="session_id"\r\n\r\n\xff\xfe\r\n--B--'
    with pytest.raises(NotText, match="session_id"):
        parse_plain_form("multipart/form-data; boundary=B", body)


@pytest.mark.parametrize("disposition", [b'form-data; name="session_id"\r\nX-A: b', b"form-data; name=session_id",
                                         b'form-data; name="session_id"\r\nContent-Transfer-Encoding: 8bit'])
def test_other_part_headers_and_unquoted_names_parse_like_starlette_and_refuse_latin1(disposition):
    """Left to Starlette's parser, such a part's text was taken as Latin-1 when it was not UTF-8 ("ÿþ" stored; a
    probe, session 29): the plain parser takes them, as Starlette does, and refuses what is not UTF-8."""
    def body(text: bytes) -> bytes:
        return (b'--B\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nx\r\n'
                b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + text + b"\r\n--B--")  # fmt: skip

    content_type = "multipart/form-data; boundary=B"
    fast = parse_plain_form(content_type, body("s-1 é".encode()))
    assert fast == {"image": Part(True, b"x"), "session_id": Part(False, "s-1 é")} == _starlette(content_type, body("s-1 é".encode()))
    with pytest.raises(NotText, match="session_id"):
        parse_plain_form(content_type, body(b"\xff\xfe"))


def test_the_api_refuses_latin1_fields_and_reads_a_preamble(api):
    from .conftest import draw_digit

    png = draw_digit()
    head = b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'

    def form(session: bytes) -> bytes:
        return head + png + b'\r\n--B\r\nContent-Disposition: form-data; name="session_id"\r\n\r\n' + session + b"\r\n--B--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=B"}
    r = api.post("/api/v1/predict", content=form(b"\xff\xfe"), headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_fields" and "UTF-8" in r.json()["detail"]
    r = api.post("/api/v1/predict", content=b"a preamble\r\n" + form(b"s-1"), headers=headers)
    assert r.status_code == 200, r.text


def test_an_image_sent_as_a_text_field_is_told_to_be_a_file(api):
    """A PNG in a part without a file name was "the field 'image' is not UTF-8 text" (a probe, session 31), where
    a text there was told the part must be a file field. Both are told that now."""
    from .conftest import draw_digit

    headers = {"content-type": "multipart/form-data; boundary=B"}
    for payload in (draw_digit(), b"some text"):
        body = b'--B\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + payload + b"\r\n--B--\r\n"
        r = api.post("/api/v1/predict", content=body, headers=headers)
        assert r.status_code == 422 and "'image' must be a file field" in r.json()["detail"], r.text
