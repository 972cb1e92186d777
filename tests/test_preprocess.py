"""digitlab.preprocess: every kind of user image -> the MNIST convention, checked against real MNIST.

Drawings are made the way the canvas makes them: round-capped pen strokes (anti-aliased by 4x
supersampling) on a 280x280 canvas, in the four colour schemes a user can pick.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.errors import DigitlabError
from digitlab.preprocess import (
    EmptyImageError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedImageError,
    decode_image,
    to_mnist,
    to_png,
)

# --------------------------------------------------------------------------------------------------
# drawing helpers


def _arc(cx, cy, rx, ry, a0=0.0, a1=360.0, n=48):
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


# digit -> strokes, each a polyline in unit coordinates (x right, y down) of the digit's box
STROKES = {
    "0": [_arc(0.5, 0.5, 0.32, 0.45)],
    "1": [[(0.35, 0.22), (0.55, 0.05), (0.55, 0.95)]],
    "2": [_arc(0.5, 0.3, 0.3, 0.25, 200, 385, 24) + [(0.15, 0.95), (0.88, 0.95)]],
    "3": [_arc(0.48, 0.28, 0.3, 0.23, 210, 450, 24), _arc(0.48, 0.72, 0.33, 0.23, 270, 510, 24)],
    "4": [[(0.62, 0.95), (0.62, 0.05), (0.1, 0.66), (0.9, 0.66)]],
    "7": [[(0.12, 0.08), (0.88, 0.08), (0.4, 0.95)]],
}
FULL = (0.15, 0.1, 0.85, 0.9)  # a digit drawn big, in the middle of the canvas
CORNER = (0.03, 0.04, 0.28, 0.34)  # small, top-left corner


def coverage(digit="7", *, size=280, width=12.0, box=FULL, ss=4) -> np.ndarray:
    """Anti-aliased ink coverage (float32 0..1) of `digit` drawn with a round pen `width` px wide."""
    im = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = box
    r = width * ss / 2
    for stroke in STROKES[digit]:
        pts = [((x0 + px * (x1 - x0)) * size * ss, (y0 + py * (y1 - y0)) * size * ss) for px, py in stroke]
        draw.line(pts, fill=255, width=round(width * ss), joint="curve")
        for px, py in (pts[0], pts[-1]):
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return np.asarray(im.resize((size, size), Image.BOX), np.float32) / 255.0


SCHEMES = {  # name -> (pen, background); None background = transparent canvas
    "black_on_white": ((0, 0, 0), (255, 255, 255)),
    "white_on_black": ((255, 255, 255), (0, 0, 0)),
    "colour_on_colour": ((200, 30, 120), (250, 235, 140)),
    "transparent": ((20, 20, 20), None),
    "white_on_transparent": ((255, 255, 255), None),
}


def compose(cov: np.ndarray, scheme: str = "black_on_white") -> np.ndarray:
    """RGBA uint8 canvas image like streamlit-drawable-canvas returns."""
    pen, bg = SCHEMES[scheme]
    c = cov[..., None]
    out = np.empty(cov.shape + (4,), np.uint8)
    if bg is None:  # undrawn pixels are (0, 0, 0, 0); strokes carry the pen colour and coverage alpha
        out[..., :3] = np.where(c > 0, np.array(pen, np.uint8), 0)
        out[..., 3] = np.rint(cov * 255)
        return out
    out[..., :3] = np.rint(np.array(bg) * (1 - c) + np.array(pen) * c)
    out[..., 3] = 255
    return out


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# MNIST-style measurements


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    rows, cols = np.mgrid[: img.shape[0], : img.shape[1]]
    total = img.sum()
    return float((img * rows).sum() / total), float((img * cols).sum() / total)


def bbox_size(img: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(img.any(axis=1))
    cols = np.flatnonzero(img.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def stroke_width(img: np.ndarray) -> float:
    """Mean stroke width in px: 2 * ink area / outline length (co-area formula on the grey image)."""
    gy, gx = np.gradient(img.astype(np.float64))
    return float(2 * img.sum() / np.hypot(gx, gy).sum())


def ink_stats(img: np.ndarray) -> tuple[float, int]:
    """(mean intensity, pixels > 0.5): the two numbers stroke width shows up in."""
    return float(img.mean()), int((img > 0.5).sum())


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


@pytest.fixture(scope="module")
def mnist_ranges(mnist_test):
    """Per digit: the 5th..95th percentile of real MNIST's mean intensity and of pixels > 0.5."""
    images, labels = mnist_test
    x = images.astype(np.float32) / 255.0
    mean = x.mean(axis=(1, 2))
    count = (x > 0.5).sum(axis=(1, 2))
    ranges = {}
    for d in range(10):
        sel = labels == d
        ranges[str(d)] = (np.percentile(mean[sel], [5, 95]), np.percentile(count[sel], [5, 95]))
    return ranges


def assert_mnist_like(out: np.ndarray, digit: str, ranges) -> None:
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() >= 0.99, "the stroke core should be full-intensity ink"
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14.0) <= 0.5 and abs(cx - 14.0) <= 0.5, (cy, cx)
    assert max(bbox_size(out)) in (20, 21), bbox_size(out)
    (mlo, mhi), (clo, chi) = ranges[digit]
    mean, count = ink_stats(out)
    assert mlo <= mean <= mhi, f"mean intensity {mean:.3f} outside MNIST's {digit}: [{mlo:.3f}, {mhi:.3f}]"
    assert clo <= count <= chi, f"{count} pixels > 0.5, MNIST's {digit}: [{clo:.0f}, {chi:.0f}]"


def close(a: np.ndarray, b: np.ndarray, *, mean_tol=0.01, max_tol=0.35) -> None:
    """Same picture, allowing a sub-pixel shift (a 0.3 px move changes a steep edge pixel by ~0.3)."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    assert diff.mean() <= mean_tol and diff.max() <= max_tol, (diff.mean(), diff.max())
    ca, cb = centre_of_mass(a), centre_of_mass(b)
    assert abs(ca[0] - cb[0]) <= 0.15 and abs(ca[1] - cb[1]) <= 0.15, (ca, cb)


# --------------------------------------------------------------------------------------------------
# output contract and MNIST likeness


def test_output_contract():
    out = to_mnist(compose(coverage("0")))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out[:3].max() == 0 and out[:, :3].max() == 0 and out[-3:].max() == 0 and out[:, -3:].max() == 0
    # grey levels are kept (anti-aliased edges), and they sit on the uint8 / 255 grid like MNIST
    assert ((out > 0.05) & (out < 0.95)).sum() >= 20
    np.testing.assert_array_equal(out, np.rint(out * 255) / np.float32(255))


@pytest.mark.parametrize("digit", sorted(STROKES))
@pytest.mark.parametrize("width", [8, 16, 25])
def test_drawn_digits_look_like_mnist(digit, width, mnist_ranges):
    assert_mnist_like(to_mnist(compose(coverage(digit, width=width))), digit, mnist_ranges)


@pytest.mark.parametrize("digit", ["0", "3", "7"])
def test_thin_and_thick_pens_end_up_alike(digit, mnist_ranges):
    """Stroke width is normalised: an 8 px and a 25 px pen give the same ink mass (not 3x apart)."""
    thin = to_mnist(compose(coverage(digit, width=8)))
    thick = to_mnist(compose(coverage(digit, width=25)))
    (m_thin, c_thin), (m_thick, c_thick) = ink_stats(thin), ink_stats(thick)
    assert 0.8 <= m_thick / m_thin <= 1.25, (m_thin, m_thick)
    assert 0.8 <= c_thick / c_thin <= 1.25, (c_thin, c_thick)
    # the raw canvases differ by ~3x in ink: the normalisation did the work
    raw_ratio = coverage(digit, width=25).sum() / coverage(digit, width=8).sum()
    assert raw_ratio > 2.5
    # and the stroke is MNIST-wide (MNIST's 5th..95th percentile of this measure: 1.95..3.6 px)
    for out in (thin, thick):
        assert 2.0 <= stroke_width(out) <= 3.3, stroke_width(out)


def test_hairline_pen_still_becomes_a_full_stroke(mnist_ranges):
    out = to_mnist(compose(coverage("3", width=2)))
    assert_mnist_like(out, "3", mnist_ranges)


@pytest.mark.parametrize("box", [CORNER, (0.7, 0.65, 0.95, 0.97), (0.4, 0.05, 0.6, 0.25)])
def test_small_digit_anywhere_is_centred_and_scaled(box, mnist_ranges):
    big = to_mnist(compose(coverage("2", width=12)))
    small = to_mnist(compose(coverage("2", width=6, box=box)))
    assert_mnist_like(small, "2", mnist_ranges)
    diff = np.abs(big - small)
    assert diff.mean() < 0.05  # same digit, same place, same size


def test_aspect_ratio_is_kept_for_a_one():
    out = to_mnist(compose(coverage("1", width=14)))
    height, width = bbox_size(out)
    assert height in (20, 21)
    assert width <= 10  # a "1" stays thin; it is not stretched into a box


def test_mnist_digits_survive_the_round_trip(mnist_test):
    """An MNIST image given back to to_mnist comes out nearly the same (width-normalised)."""
    images, labels = mnist_test
    for i in range(20):
        src = images[i].astype(np.float32) / 255.0
        out = to_mnist(images[i])
        corr = np.corrcoef(src.ravel(), out.ravel())[0, 1]
        assert corr > 0.75, (i, labels[i], corr)
        cy, cx = centre_of_mass(out)
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


# --------------------------------------------------------------------------------------------------
# colour schemes and hints


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "black_on_white"])
def test_colour_schemes_give_the_same_input(scheme):
    cov = coverage("4", width=14)
    reference = to_mnist(compose(cov, "black_on_white"))
    close(to_mnist(compose(cov, scheme)), reference)


def test_rgb_grey_and_pil_inputs_agree():
    cov = coverage("2", width=12)
    rgba = compose(cov, "black_on_white")
    reference = to_mnist(rgba)
    close(to_mnist(rgba[..., :3].copy()), reference)
    grey = np.rint(255 - cov * 255).astype(np.uint8)
    close(to_mnist(grey), reference)
    close(to_mnist(grey[..., None]), reference)
    close(to_mnist(Image.fromarray(grey)), reference)
    close(to_mnist(Image.fromarray(rgba)), reference)
    close(to_mnist(1.0 - cov), reference)  # float in [0, 1]
    close(to_mnist(cov < 0.5), reference, mean_tol=0.03, max_tol=0.6)  # bool: hard edges, same digit


def test_hints_agree_with_inference():
    cov = coverage("3", width=10)
    reference = to_mnist(compose(cov, "black_on_white"))
    close(
        to_mnist(compose(cov, "colour_on_colour"), pen_color="#c81e78", background_color="#faeb8c"), reference
    )
    close(to_mnist(compose(cov, "transparent"), pen_color="#141414", background_color="#ffffff"), reference)
    close(to_mnist(compose(cov, "transparent"), pen_color="#ffffff", background_color="#000000"), reference)
    close(to_mnist(compose(cov, "white_on_black"), background_color="rgba(0, 0, 0, 0)"), reference)


def test_wrong_hints_are_ignored():
    """An uploaded file is not the canvas: hints that do not match the image must not break it."""
    cov = coverage("3", width=10)
    reference = to_mnist(compose(cov, "black_on_white"))
    close(
        to_mnist(compose(cov, "black_on_white"), pen_color="#ffffff", background_color="#000000"), reference
    )
    close(
        to_mnist(compose(cov, "black_on_white"), pen_color="#ffffff", background_color="#ffffff"), reference
    )


def test_pen_hint_suppresses_other_colours():
    """With a pen colour, marks of another colour (e.g. a blue ruling) weigh less than the pen."""
    cov = coverage("7", width=12)
    img = compose(cov, "black_on_white")
    img[200:204, :, :3] = (180, 200, 255)  # a light-blue line across the page
    out = to_mnist(img, pen_color="#000000", background_color="#ffffff")
    close(out, to_mnist(compose(cov, "black_on_white")), mean_tol=0.02, max_tol=0.5)


def test_invalid_colour_hint_is_a_value_error():
    with pytest.raises(ValueError, match="pen_color"):
        to_mnist(compose(coverage("7")), pen_color="not a colour")


# --------------------------------------------------------------------------------------------------
# nothing drawn


def _assert_empty(exc_info) -> None:
    err = exc_info.value
    assert isinstance(err, DigitlabError) and err.code == "empty_image"
    assert str(err).startswith("Nothing drawn")
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "image",
    [
        np.full((280, 280, 4), 255, np.uint8),  # white canvas
        np.zeros((280, 280, 4), np.uint8),  # transparent canvas
        np.zeros((280, 280), np.uint8),  # black greyscale
        np.full((280, 280, 3), (250, 235, 140), np.uint8),  # coloured background
        np.full((1, 1), 7, np.uint8),
    ],
    ids=["white", "transparent", "black", "colour", "one-pixel"],
)
def test_blank_images_are_empty(image):
    with pytest.raises(EmptyImageError) as exc_info:
        to_mnist(image)
    _assert_empty(exc_info)


def test_noise_everywhere_is_busy_not_blank():
    """A picture of random noise was "Nothing drawn: the image is blank"; a blank one still is."""
    noise = np.random.default_rng(0).integers(0, 256, (280, 280, 3), dtype=np.uint8)
    with pytest.raises(EmptyImageError, match="busy all over"):
        to_mnist(noise)
    with pytest.raises(EmptyImageError, match="the image is blank"):
        to_mnist(np.full((280, 280, 3), 255, np.uint8))


def test_near_blank_images_are_empty():
    # a few isolated specks
    img = np.full((280, 280), 255, np.uint8)
    img[100, 100] = img[200, 50] = 0
    img[30, 250:252] = 0
    with pytest.raises(EmptyImageError) as exc_info:
        to_mnist(img)
    _assert_empty(exc_info)
    # a very faint smudge (contrast 20 of 255)
    img = np.full((280, 280), 255, np.uint8)
    img[100:160, 100:160] = 235
    with pytest.raises(EmptyImageError):
        to_mnist(img)


def test_jpeg_noise_on_a_blank_photo_is_not_a_digit():
    rng = np.random.default_rng(0)
    _, xx = np.mgrid[:480, :640]
    paper = (180 + 30 * xx / 640 + rng.normal(0, 4, (480, 640)))[..., None] * np.array([1.0, 0.95, 0.85])
    data = encode(np.clip(paper, 0, 255).astype(np.uint8), "JPEG", quality=60)
    with pytest.raises(EmptyImageError):
        to_mnist(data)


@pytest.mark.parametrize("radius", [4, 12.5, 20])
def test_a_single_dot_is_not_a_digit(radius):
    im = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(im).ellipse((140 - radius, 100 - radius, 140 + radius, 100 + radius), fill=0)
    with pytest.raises(EmptyImageError) as exc_info:
        to_mnist(np.asarray(im))
    assert exc_info.value.code == "empty_image"
    assert "dot" in str(exc_info.value)


def _pen_drawing(strokes, pen: int = 18) -> np.ndarray:
    """Strokes as the canvas draws them: round caps and joints, its default 18 px pen, on white."""
    im = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    draw = ImageDraw.Draw(im)
    for line in strokes:
        draw.line(line, fill=(31, 35, 64, 255), width=pen, joint="curve")
        for x, y in (line[0], line[-1]):
            draw.ellipse([x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2], fill=(31, 35, 64, 255))
    return np.asarray(im)


@pytest.mark.parametrize("strokes", [
    [[(122, 120), (114, 142), (146, 142)], [(138, 120), (138, 150)]],  # a 4, 50 px
    [[(118, 126), (130, 118), (142, 126), (120, 150), (146, 150)]],  # a 2, 50 px
], ids=["4", "2"])  # fmt: skip
def test_a_digit_drawn_small_with_the_thick_default_pen_is_read_not_called_a_dot(strokes):
    """A probe drew real handwriting 40-53 px high in the canvas's 18 px pen: 53-93 % were refused as "Nothing
    drawn but a dot" (short for their mean stroke width), where the CNN reads most of them. A dot is round too."""
    out = to_mnist(_pen_drawing(strokes), pen_color="#1f2340", background_color="#ffffff")
    assert out.shape == (28, 28) and out.max() > 0.5


@pytest.mark.parametrize("drag", [0, 4])  # a tap, and one dragged a quarter of the pen's width
def test_a_tap_of_the_pen_is_still_a_dot(drag):
    with pytest.raises(EmptyImageError, match="dot"):
        to_mnist(_pen_drawing([[(140, 140), (140 + drag, 140)]]), pen_color="#1f2340", background_color="#ffffff")


def test_a_speck_beside_the_digit_is_ignored():
    cov = coverage("7", width=12)
    clean = to_mnist(compose(cov))
    dirty = compose(cov)
    dirty[270:273, 5:8, :3] = 0  # a 3x3 speck far from the digit, in the corner
    close(to_mnist(dirty), clean)


def test_a_thin_frame_around_the_picture_is_not_the_digit():
    cov = coverage("3", width=12)
    framed = compose(cov)
    framed[0, :, :3] = framed[-1, :, :3] = framed[:, 0, :3] = framed[:, -1, :3] = 0
    close(to_mnist(framed), to_mnist(compose(cov)))


def test_photo_with_uneven_light():
    """Dark pen on paper lit from one side (230 -> 130 grey), noisy, JPEG: still the same digit."""
    cov = coverage("3", width=12)
    rng = np.random.default_rng(1)
    _, xx = np.mgrid[:280, :280]
    paper = 130 + 100 * xx / 280
    grey = paper * (1 - cov) + 50 * cov + rng.normal(0, 3, cov.shape)
    rgb = np.clip(grey[..., None] * np.array([1.0, 0.97, 0.9]), 0, 255).astype(np.uint8)
    out = to_mnist(encode(rgb, "JPEG", quality=75))
    close(out, to_mnist(compose(cov)), mean_tol=0.015, max_tol=0.4)


# --------------------------------------------------------------------------------------------------
# encoded images


@pytest.mark.parametrize(
    "fmt,kw,mean_tol,max_tol",
    [
        ("PNG", {}, 1e-6, 1e-6),
        ("BMP", {}, 1e-6, 1e-6),
        ("WEBP", {"lossless": True}, 1e-6, 1e-6),
        ("JPEG", {"quality": 90}, 0.015, 0.35),
        ("WEBP", {"quality": 85}, 0.015, 0.35),
    ],
)
def test_encoded_bytes_match_the_array(fmt, kw, mean_tol, max_tol):
    rgb = compose(coverage("2", width=12))[..., :3].copy()
    reference = to_mnist(rgb)
    data = encode(rgb, fmt, **kw)
    decoded = decode_image(data)
    assert decoded.shape == (280, 280, 4) and decoded.dtype == np.uint8
    assert (decoded[..., 3] == 255).all()
    out = to_mnist(data)
    diff = np.abs(out - reference)
    assert diff.mean() <= mean_tol and diff.max() <= max_tol, (diff.mean(), diff.max())


def test_transparent_png_like_the_canvas_sends():
    rgba = compose(coverage("0", width=20), "transparent")
    decoded = decode_image(encode(rgba, "PNG"))
    np.testing.assert_array_equal(decoded, rgba)
    close(to_mnist(encode(rgba, "PNG")), to_mnist(compose(coverage("0", width=20))))


def test_a_digit_cut_out_of_an_opaque_picture_is_read_as_a_page_shows_it():
    """Transparent strokes on an opaque black or blue picture show white on a page: they are the digit (it was
    "nothing drawn", a probe, session 34). On an opaque white picture (an eraser's strokes) nothing shows:
    blank, as before."""
    ink = coverage("7", width=20) > 0.5
    white_on_black = np.zeros((280, 280, 4), np.uint8)
    white_on_black[..., 3] = 255
    white_on_black[ink, :3] = 255
    for background in ((0, 0, 0), (20, 40, 160)):
        cut = np.zeros((280, 280, 4), np.uint8)
        cut[..., :3] = background
        cut[..., 3] = np.where(ink, 0, 255)
        np.testing.assert_array_equal(to_mnist(encode(cut, "PNG")), to_mnist(encode(white_on_black, "PNG")))
    erased = np.full((280, 280, 4), 255, np.uint8)
    erased[ink, 3] = 0
    with pytest.raises(DigitlabError, match="Nothing drawn"):
        to_mnist(encode(erased, "PNG"))


def test_transparent_bmp_keeps_its_alpha():
    """A 32-bit BMP saved from a transparent canvas: its fourth byte is alpha (as browsers read it); PIL
    dropped it, and the black strokes on transparent black were "nothing drawn"."""
    rgba = compose(coverage("0", width=20), "transparent")
    data = encode(rgba, "BMP")
    assert data[28] == 32  # (PIL writes RGBA as a 32-bit bitmap, bottom row first)
    np.testing.assert_array_equal(decode_image(data), rgba)
    close(to_mnist(data), to_mnist(compose(coverage("0", width=20))))
    opaque = bytearray(data)  # every fourth byte 0: an opaque bitmap, as before
    offset = int.from_bytes(opaque[10:14], "little")
    opaque[offset + 3 :: 4] = bytes(len(opaque[offset + 3 :: 4]))
    assert (decode_image(bytes(opaque))[..., 3] == 255).all()


@pytest.mark.parametrize("mode", ["I;16", "P", "LA", "1", "CMYK", "L"])
def test_image_modes_decode_to_rgba(mode):
    cov = coverage("7", width=12)
    reference = to_mnist(compose(cov))
    if mode == "I;16":
        im = Image.fromarray(np.rint(65535 - cov * 65535).astype(np.uint16))
        fmt = "PNG"
    elif mode == "CMYK":
        im = Image.fromarray(compose(cov)[..., :3]).convert("CMYK")
        fmt = "JPEG"
    elif mode == "1":
        im = Image.fromarray(cov < 0.5).convert("1")
        fmt = "BMP"
    else:
        im = Image.fromarray(
            compose(cov, "transparent" if mode in ("P", "LA") else "black_on_white")
        ).convert(mode)
        fmt = "PNG"
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    decoded = decode_image(buf.getvalue())
    assert decoded.dtype == np.uint8 and decoded.shape == (280, 280, 4)
    out = to_mnist(buf.getvalue())
    tol = 0.03 if mode in ("1", "CMYK") else 0.01
    assert np.abs(out - reference).mean() <= tol


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey16 = np.full((10, 20), 40000, np.uint16)
    decoded = decode_image(encode(grey16, "PNG"))
    assert decoded[0, 0, 0] == round(40000 * 255 / 65535)


def test_exif_orientation_is_applied():
    rgb = compose(coverage("7", width=12))[..., :3].copy()
    stored = Image.fromarray(rgb).rotate(90, expand=True)  # the camera stored it sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and says "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    assert np.abs(to_mnist(buf.getvalue()) - to_mnist(rgb)).mean() < 0.015


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world" * 10, b"\x89PNG\r\n\x1a\n" + b"\0" * 40, bytes(range(256)) * 4],
    ids=["empty", "text", "png-magic-only", "binary"],
)
def test_unreadable_bytes(data):
    with pytest.raises(UnreadableImageError) as exc_info:
        decode_image(data)
    assert exc_info.value.code == "unreadable_image"
    with pytest.raises(UnreadableImageError):
        to_mnist(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_unreadable(fmt):
    data = encode(compose(coverage("7"))[..., :3].copy(), fmt)
    with pytest.raises(UnreadableImageError):
        decode_image(data[: len(data) // 2])


def test_unsupported_formats():
    tiny = compose(coverage("7", size=64, width=4))
    cases = {
        "PDF": b"%PDF-1.4\n1 0 obj\n<< >>\nendobj\n",
        "SVG": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "TIFF": encode(tiny, "TIFF"),
        "ICO": encode(tiny, "ICO"),
        "PPM": encode(tiny[..., :3].copy(), "PPM"),
        "TGA": encode(tiny[..., :3].copy(), "TGA"),  # (it starts as a CUR file does, and was called one)
    }
    for name, data in cases.items():
        with pytest.raises(UnsupportedImageError) as exc_info:
            decode_image(data)
        assert exc_info.value.code == "unsupported_media_type"
        assert name in str(exc_info.value)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height but carries (almost) no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [6000, 100_000])
def test_decompression_bombs_are_refused_from_the_header(side, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    data = _png_header_only(side, side)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # refused before decoding anything
    with pytest.raises(ImageTooLargeError) as exc_info:
        decode_image(data)
    assert exc_info.value.code == "image_too_large"
    monkeypatch.undo()
    with pytest.raises(ImageTooLargeError):
        to_mnist(data)


def test_max_pixels_is_honoured():
    data = encode(compose(coverage("7", size=100, width=5)), "PNG")
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 4)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=9_999)
    with pytest.raises(ImageTooLargeError):
        to_mnist(data, max_pixels=9_999)


def test_errors_are_digitlab_errors_with_stable_codes():
    codes = {
        UnreadableImageError: "unreadable_image",
        UnsupportedImageError: "unsupported_media_type",
        ImageTooLargeError: "image_too_large",
        EmptyImageError: "empty_image",
    }
    for cls, code in codes.items():
        err = cls()
        assert isinstance(err, DigitlabError) and err.code == code
        assert str(err) and "\n" not in str(err)


def test_wrong_input_types():
    with pytest.raises(TypeError):
        to_mnist("a path is not an image")
    with pytest.raises(UnreadableImageError):
        to_mnist(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(UnreadableImageError):
        to_mnist(np.zeros((0, 10), np.uint8))


# --------------------------------------------------------------------------------------------------
# size, speed, determinism


def test_huge_image_gives_the_same_digit():
    """(Its speed is measured in bench/preprocess_bench.py.)"""
    rgba = compose(coverage("4", width=12))
    huge = np.asarray(Image.fromarray(rgba).resize((4000, 4000), Image.BILINEAR))
    close(to_mnist(huge), to_mnist(rgba), mean_tol=0.02, max_tol=0.4)
    data = encode(huge[..., :3].copy(), "JPEG", quality=90)  # decoded at reduced scale (JPEG draft)
    close(to_mnist(data), to_mnist(rgba), mean_tol=0.02, max_tol=0.4)


def test_deterministic():
    rgba = compose(coverage("4", width=17), "colour_on_colour")
    data = encode(rgba, "PNG")
    first = to_mnist(rgba)
    for _ in range(3):
        np.testing.assert_array_equal(to_mnist(rgba.copy()), first)
        np.testing.assert_array_equal(to_mnist(data), first)


def test_input_is_not_modified():
    rgba = compose(coverage("4", width=17), "transparent")
    before = rgba.copy()
    to_mnist(rgba)
    np.testing.assert_array_equal(rgba, before)


# --------------------------------------------------------------------------------------------------
# to_png


def test_to_png_round_trip():
    out = to_mnist(compose(coverage("0", width=12)))
    data = to_png(out)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (28, 28)
        pixels = np.asarray(im)
    np.testing.assert_array_equal(pixels, np.rint(out * 255).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(to_png(out.ravel())))), pixels)


def test_to_png_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        to_png(np.zeros((20, 20), np.float32))


@pytest.mark.parametrize("shape", [(1, 300), (2, 300), (300, 1), (300, 2), (3, 300)])
def test_a_line_on_a_strip_one_or_two_pixels_thin_is_read_not_refused(shape):
    """A valid image 1-2 px thin with ink: a 28x28 answer (it was 'could not be processed', from np.gradient)."""
    a = np.full(shape, 255, np.uint8)
    if shape[0] >= shape[1]:
        a[5:-5, :] = 0
    else:
        a[:, 5:-5] = 0
    x = to_mnist(a)
    assert x.shape == (28, 28) and x.max() > 0


def test_a_frame_a_little_inside_the_picture_is_not_the_digit():
    """A photo of a card: a thin frame a few pixels in from the edge was the largest stroke, and the 7
    inside it was read as a 0."""
    cov = coverage("7", width=12)
    framed = compose(cov)
    for inset in (5, 14):  # 2 % and 5 % of the 280 px side
        im = Image.fromarray(framed.copy())
        ImageDraw.Draw(im).rectangle((inset, inset, 279 - inset, 279 - inset), outline=(0, 0, 0), width=4)
        close(to_mnist(np.asarray(im)), to_mnist(compose(cov)))


@pytest.mark.parametrize("pad", [0, 161])  # 280 x 280, and 441 x 441 (odd: read at half resolution)
@pytest.mark.parametrize("width", [1, 3, 8])
def test_a_frame_along_the_very_edges_is_not_the_background(pad, width):
    """A frame drawn on the picture's edges made the border black: a 7 inside it was a sure 0 (3-8 px), or
    "busy all over" (1 px), and a 1-px frame's last column, left out at half resolution, stayed a "1"."""
    plain = np.pad(compose(coverage("7", width=12)), ((0, pad), (0, pad), (0, 0)), constant_values=255)
    im = Image.fromarray(plain.copy())
    ImageDraw.Draw(im).rectangle((0, 0, im.width - 1, im.height - 1), outline=(0, 0, 0), width=width)
    close(to_mnist(np.asarray(im)), to_mnist(plain))


def test_a_box_drawn_around_the_digit_is_not_the_digit():
    """A digit in a square drawn well inside the picture (a form's box, a probe in session 34): the box was
    the largest stroke, and every digit a sure 0. A box around the digit is left out at any inset."""
    cov = coverage("7", width=12, box=(0.3, 0.25, 0.7, 0.75))
    for inset in (30, 50):
        im = Image.fromarray(compose(cov).copy())
        ImageDraw.Draw(im).rectangle((inset, inset, 279 - inset, 279 - inset), outline=(0, 0, 0), width=4)
        close(to_mnist(np.asarray(im)), to_mnist(compose(cov)))


def test_a_square_around_a_dot_is_still_drawn_ink():
    """Only a box around a stroke of some size is a frame: a square with a dot inside stays the drawing."""
    im = Image.new("L", (280, 280), 255)
    pen = ImageDraw.Draw(im)
    pen.rectangle((60, 60, 220, 220), outline=0, width=14)
    pen.ellipse((134, 134, 146, 146), fill=0)
    out = to_mnist(np.asarray(im))
    assert out[:, :6].sum() > 5 and out[:, 22:].sum() > 5  # the square's sides are there


def test_a_big_slashed_zero_is_not_a_frame():
    """A 0 drawn to the canvas's edges with a slash through it: round sides, so it stays the digit."""
    im = Image.new("L", (280, 280), 255)
    pen = ImageDraw.Draw(im)
    pen.ellipse((8, 6, 272, 274), outline=0, width=16)
    pen.line((70, 230, 210, 50), fill=0, width=16)
    out = to_mnist(np.asarray(im))
    assert out[:, :8].sum() > 5 and out[:, 20:].sum() > 5  # the ring's left and right sides are there


def test_a_jpeg_repeating_one_scan_is_refused_before_its_scans_are_decoded():
    """A progressive JPEG's every scan is decoded, whatever the draft size: 10,000 copies of one 39-byte
    scan (574 KB) cost 45 s of a worker's CPU. A photo's JPEG has about ten; more than 100 are refused."""
    from digitlab.decode import MAX_JPEG_SCANS

    im = Image.new("L", (600, 600), 255)
    ImageDraw.Draw(im).line([(180, 120), (420, 120), (260, 480)], fill=0, width=40)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, progressive=True)
    data = buf.getvalue()
    last = data[data.rfind(b"\xff\xda") : -2]  # the last scan (up to the end-of-image marker)
    scans = data.count(b"\xff\xda")
    assert 2 < scans < 20
    fine = data[:-2] + last * (MAX_JPEG_SCANS - scans) + b"\xff\xd9"  # as many as allowed: decoded
    assert decode_image(fine).shape == (600, 600, 4) and to_mnist(fine).shape == (28, 28)
    with pytest.raises(UnreadableImageError, match="scans"):
        to_mnist(fine[:-2] + last * 5000 + b"\xff\xd9")


@pytest.mark.parametrize("mode", ["I;16", "P", "P-transparent", "1"])
def test_large_images_of_other_modes_are_reduced_first_to_the_same_pixels(mode):
    """A large 16-bit, palette or 1-bit image is reduced after a cheap 8-bit conversion instead of being
    converted to RGBA whole (a 70 KB 16-bit PNG of 5000x5000 took 1.7 s and 620 MB): the same pixels."""
    from digitlab.decode import pil_to_rgba
    from digitlab.preprocess import WORK_MAX, _small_rgba

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1000, 0:900]
    grey = ((xx * 0.2 + yy * 0.05) % 256).astype(np.uint8)
    grey[200:800, 400:480] = rng.integers(0, 40, (600, 80))  # a dark stroke on a gradient
    if mode == "I;16":
        wide = grey.astype("<u2") * 257 + rng.integers(0, 257, grey.shape).astype("<u2")
        im = Image.frombytes("I;16", (900, 1000), wide.tobytes())
    elif mode == "1":
        im = Image.fromarray(grey, "L").convert("1")
    else:
        im = Image.fromarray(np.stack([grey, 255 - grey, grey // 2], -1), "RGB").quantize(64)
        if mode == "P-transparent":
            im.info["transparency"] = 3
    assert im.mode == mode.split("-")[0]
    full = pil_to_rgba(im)  # the straightforward way: the whole image to RGBA, then reduced
    expected = np.asarray(Image.fromarray(full, "RGBA").reduce(math.ceil(1000 / WORK_MAX)))
    assert np.array_equal(_small_rgba(im), expected)


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_holds_is_unreadable():
    """A 280x280 JPEG whose header was changed to say 4900x5000 was decoded without an error (the missing
    part grey) and read as a number, "000000000" (an API probe): its bytes cannot hold a picture that size.
    The same picture as it was is read; a large blank JPEG (2-6 bits per 8x8 block: the fewest a JPEG has) too."""
    im = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(im).line([(80, 60), (200, 60), (120, 230)], fill=0, width=20)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    sof = data.index(b"\xff\xc0")
    claims = data[: sof + 5] + (5000).to_bytes(2, "big") + (4900).to_bytes(2, "big") + data[sof + 9 :]
    with pytest.raises(UnreadableImageError, match="4900x5000"):
        decode_image(claims)
    assert to_mnist(data).shape == (28, 28)
    plain = io.BytesIO()
    Image.new("L", (4000, 3000), 255).save(plain, "JPEG", quality=75)  # a blank sheet: the fewest bits a JPEG has
    assert decode_image(plain.getvalue(), max_pixels=20_000_000).shape == (3000, 4000, 4)
