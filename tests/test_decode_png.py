"""The libspng fast path for plain PNGs gives exactly PIL's pixels, and leaves everything else to PIL."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from digitlab.decode import decode_plain_png, open_image, pil_to_rgba
from digitlab.preprocess import to_mnist


def _png(arr: np.ndarray, mode: str | None, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr, mode).save(out, format="PNG", **save)
    return out.getvalue()


def _pil_rgba(data: bytes) -> np.ndarray:
    return pil_to_rgba(open_image(data, None))


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_plain_png_pixels_equal_pil(mode, channels):
    rng = np.random.default_rng(channels)
    shape = (57, 83) if channels == 1 else (57, 83, channels)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a canvas")
    for data in (_png(arr, mode), _png(arr, mode, pnginfo=info, dpi=(72, 72))):
        fast = decode_plain_png(data, max_side=384)
        assert fast is not None and fast.dtype == np.uint8
        np.testing.assert_array_equal(fast, _pil_rgba(data))


def _with_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return data[:33] + chunk + data[33:]  # right after IHDR


def test_everything_else_goes_to_pil():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    plain = _png(rgb, "RGB")
    assert decode_plain_png(plain, max_side=384) is not None
    refused = {
        "palette": _png(rgb[..., 0] // 16, "P"),
        "16-bit": _png(rng.integers(0, 65535, (40, 40), dtype=np.uint16), None),
        "interlaced": _png(rgb, "RGB").replace(b"\x08\x02\x00\x00\x00", b"\x08\x02\x00\x00\x01", 1),
        "tRNS": _with_chunk(plain, b"tRNS", b"\x00\x00\x00\x00\x00\x00"),
        "eXIf": _with_chunk(plain, b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00"),
        "bad CRC": plain[:29] + b"\x00\x00\x00\x00" + plain[33:],
        "truncated": plain[:-12],
        "too wide": _png(np.zeros((10, 400, 3), np.uint8), "RGB"),
        "not a PNG": b"\xff\xd8\xff" + plain[3:],
    }
    for name, data in refused.items():
        assert decode_plain_png(data, max_side=384) is None, name
    assert decode_plain_png(plain, max_pixels=1000, max_side=384) is None  # 1,600 px: PIL says why


def test_xmp_orientation_is_applied_and_stored_as_seen():
    """An XMP orientation turns the picture on PIL's path; the fast path left it unturned, and the store kept
    it unturned (without its XMP) while the model saw it turned."""
    from digitlab.api.prediction import stored_input_png

    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:, :5] = 0  # a bar at the left: at the top once turned
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    for mode in ("RGB", "P"):
        im = Image.fromarray(arr).convert(mode)
        out = io.BytesIO()
        im.save(out, format="PNG", pnginfo=info)
        data = out.getvalue()
        assert decode_plain_png(data, max_side=384) is None, mode
        seen = _pil_rgba(data)
        assert seen.shape == (40, 20, 4) and (seen[:5, :, 0] == 0).all(), mode
        with Image.open(io.BytesIO(stored_input_png(data, "png"))) as stored:
            np.testing.assert_array_equal(pil_to_rgba(stored), seen)


def test_damaged_idat_falls_back_to_pils_error():
    rng = np.random.default_rng(1)
    data = bytearray(_png(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8), "RGB"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 30] = b"\x00" * 20  # the IDAT CRC no longer matches
    assert decode_plain_png(bytes(data), max_side=384) is None
    with pytest.raises(Exception) as caught:
        to_mnist(bytes(data))
    assert getattr(caught.value, "code", None) == "unreadable_image"


def test_a_picture_chunk_with_a_wrong_crc_is_refused_by_name():
    """PIL reads a PNG whose IDAT or IEND CRC is wrong (it checks the others); libpng refuses it: so do we, by name.
    The same file with the right CRCs decodes."""
    from digitlab.decode import UnreadableImageError, decode_image, png_bad_checksum

    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    plain = _png(rgb, "RGB")
    assert png_bad_checksum(plain) is None
    np.testing.assert_array_equal(decode_image(plain), _pil_rgba(plain))
    for kind in (b"IDAT", b"IEND"):
        bad = bytearray(plain)
        pos = bad.index(kind) - 4
        (length,) = struct.unpack(">I", bad[pos : pos + 4])
        bad[pos + 8 + length] ^= 0x01
        assert png_bad_checksum(bytes(bad)) == kind.decode()
        with pytest.raises(UnreadableImageError, match=f"its {kind.decode()} chunk fails its checksum"):
            decode_image(bytes(bad))
