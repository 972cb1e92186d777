"""Any image a person can give -> the 28x28 MNIST convention the models were trained on.

MNIST convention (what `to_mnist` produces): float32 (28, 28) in [0, 1], ink bright (1.0) on black,
grey levels kept, the digit's longer side 20 px, its centre of mass at (14, 14), strokes about as wide
as MNIST's (the median MNIST digit: ~100 pixels above 0.5, mean intensity ~0.13).

Pipeline (see docs/preprocessing.md for the reasoning and the measured numbers):

1. Normalise the input to RGBA uint8 (bytes are decoded with `decode_image`'s checks; JPEGs are
   decoded at a reduced scale when large) and area-average it down to <= 384 px on the long side.
2. Background: a transparent border means "ink = opacity"; otherwise the background colour is the median
   border colour (or the `background_color` hint). Ink strength = colour distance to the background
   (projection onto pen - background with a `pen_color` hint), so dark-on-light, light-on-dark and
   coloured pens all work. A noise floor (from the border's own variation) and the stroke core level
   (90th percentile of the ink) map it to [0, 1]; grey levels survive, nothing is binarised.
3. Specks (connected components < 3 % of the largest) are dropped; blank / faint / dot-only images
   raise `EmptyImageError`.
4. Crop to the ink, estimate the stroke width (2 * area / perimeter, co-area formula), resample to a
   mid resolution (~80 px long side, i.e. 4x the final 20 px), and redraw the ink at the target stroke
   width with a signed distance field (dilate thin pens, erode thick ones).
5. Area-average it into the 28x28 field so that the longer side is 20 px and the centre of mass lands
   exactly on (14, 14) (sub-pixel placement, no extra blur).

Kept as one piece (a little over 500 lines): the five steps share their intermediate arrays and the
tuning constants below, measured together. Decoding bytes lives in `digitlab.decode`.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageColor
from scipy import ndimage as ndi

from digitlab.decode import (
    NOTHING_DRAWN,
    SIXTEEN_BIT_MODES,
    SUPPORTED_FORMATS,
    EmptyImageError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedImageError,
    decode_image,
    decode_plain_png,
    open_image,
    pil_to_rgba,
    sixteen_to_grey,
    sniff_format,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "EmptyImageError",
    "ImageTooLargeError",
    "UnreadableImageError",
    "UnsupportedImageError",
    "decode_image",
    "sniff_format",
    "to_mnist",
    "to_png",
]


# --------------------------------------------------------------------------------------------------
# errors


# --------------------------------------------------------------------------------------------------
# tuning constants (measured against the MNIST test set; see docs/preprocessing.md)


WORK_MAX = 384  # long side of the working image (inputs are area-averaged down to this first)
MID_LONG = 80  # nominal long side of the mid-resolution crop: 4x the final 20 px box
MID_MAX = 240  # never work above this at mid resolution (speed bound for hair-thin pens)
MIN_MID_WIDTH = 2.0  # strokes must be at least this wide (px) at mid resolution to be redrawn
BOX = 20.0  # the digit's longer side in the output, like MNIST
SIZE = 28
CENTRE = 14.0  # MNIST's mean centre of mass (row, col) in pixel-index coordinates
TARGET_WIDTH = 2.45  # stroke width (px, 28x28 scale) of the redrawn ink; tuned to MNIST statistics
MAX_ERODE = 0.35  # never erode more than this fraction of the estimated stroke width per side

FLOOR_MIN = 12.0  # absolute colour-distance noise floor (RGB euclidean, 0..441; alpha 0..255)
FLOOR_REL = 0.08  # ...and relative to the ink core, so every colour scheme maps to the same grey levels
MIN_CONTRAST = 40.0  # ink core must differ at least this much from the background
SPECK_REL = 0.03  # components smaller than this fraction of the largest one are specks
#: a component within this share of the image's side from all four edges, straight on all four sides
#: (`_is_frame`), is a frame around the picture, not ink (a photo of a card: its 7 was read as a 0)
FRAME_MARGIN = 0.06
FRAME_STRAIGHT = 0.8
MIN_EXTENT_REL = 0.02  # ink whose extent is below 2 % of the image's long side is a speck, not a digit
DOT_RATIO = 3.0  # ink no longer than 3 stroke widths is a dot...
DOT_MAX_REL = 0.2  # ...unless it spans more than 20 % of the image (then it is a big blob: let it through)
#: ...and it is round: no longer than this many times its widest point (a tap, or one dragged half the
#: pen's width). A digit drawn small with a thick pen is as short for its mean width (an 18 px pen's 40-50 px
#: digits: 70-93 % were refused as a dot) but longer than its widest point: it is read (`is_dot`)
DOT_ROUND = 1.3

BUSY_MSG = ("No digit found: the picture is busy all over (noise or texture), nothing stands out from it. "
            "Use a plain background, the digit large and dark.")
BUSY_NOISE = 40.0  # border variation (colour distance) above which an image without ink is "busy", not blank
_DOT_MSG = "Nothing drawn but a dot: draw a whole digit and try again."
_TINY_MSG = "Nothing drawn but a speck: draw a bigger digit and try again."


# --------------------------------------------------------------------------------------------------
# decoding


# --------------------------------------------------------------------------------------------------
# input normalisation


def _array_to_rgba(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        a8 = arr
    elif arr.dtype == np.bool_:
        a8 = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        a8 = (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        scale = 255.0 if finite.size and float(finite.max()) <= 1.0 else 1.0
        a8 = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        a8 = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise UnreadableImageError(f"The image array has an unusable data type ({arr.dtype}).")
    if a8.ndim == 3 and a8.shape[2] == 1:
        a8 = a8[..., 0]
    if a8.ndim == 2:
        out = np.empty(a8.shape + (4,), np.uint8)
        out[..., :3] = a8[..., None]
        out[..., 3] = 255
        return out
    if a8.ndim == 3 and a8.shape[2] == 2:  # grey + alpha
        out = np.empty(a8.shape[:2] + (4,), np.uint8)
        out[..., :3] = a8[..., :1]
        out[..., 3] = a8[..., 1]
        return out
    if a8.ndim == 3 and a8.shape[2] == 3:
        out = np.empty(a8.shape[:2] + (4,), np.uint8)
        out[..., :3] = a8
        out[..., 3] = 255
        return out
    if a8.ndim == 3 and a8.shape[2] == 4:
        return a8
    raise UnreadableImageError(
        f"The image array has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)."
    )


def _working_rgba(image: Any, max_pixels: int | None) -> np.ndarray:
    """Input -> RGBA uint8 with long side <= WORK_MAX (area-averaged, alpha premultiplied)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        rgba = decode_plain_png(image, max_pixels, max_side=WORK_MAX)  # a canvas drawing: the fast path
        if rgba is None:
            rgba = _small_rgba(open_image(bytes(image), max_pixels, draft_to=WORK_MAX))
    elif isinstance(image, Image.Image):
        rgba = _small_rgba(image)
    elif isinstance(image, np.ndarray):
        rgba = _array_to_rgba(image)
    else:
        raise TypeError(f"to_mnist expects bytes, a numpy array or a PIL image, not {type(image).__name__}")
    if rgba.shape[0] == 0 or rgba.shape[1] == 0:
        raise UnreadableImageError("The image has no pixels: upload a PNG, JPEG, WebP or BMP image.")
    long_side = max(rgba.shape[:2])
    if long_side > WORK_MAX:
        factor = math.ceil(long_side / WORK_MAX)
        rgba = np.asarray(Image.fromarray(np.ascontiguousarray(rgba), "RGBA").reduce(factor))
    return rgba


def working_rgba(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes -> the RGBA uint8 `to_mnist` works on (decoded once: `to_mnist` takes this array as is)."""
    return _working_rgba(data, max_pixels)


#: an opaque picture at least this big may show a scene (`shows_a_scene`): a photo is; a picture cropped to its digit
#: often is not (a 1 cropped to 254 x 66 px: its ink's soft rim all along both long sides was "a shadow")
SCENE_MIN_SIDE = 128
#: the share of the picture's edge, in one stretch, that shows the scene (a shadow; a desk is none, see below)
SCENE_RUN = 0.2
#: how far (grey levels) a scene's tone is from the paper's (and a shadow's from the ink's)
SCENE_TONE = 40.0
#: how far in (share of the short side) a scene is looked at: its tone half as far, and no ink in it
SCENE_DEPTH = 0.05


def shows_a_scene(rgba: np.ndarray) -> bool:
    """Whether an opaque picture shows a shadow over part of a photo of paper, whatever its format: SCENE_RUN of its
    1-px edge, in one stretch, is in a tone SCENE_TONE grey levels darker than the edge's paper (its 90th
    percentile) and lighter than the picture's ink (its 0.05th), as far as SCENE_DEPTH in, with no ink there. The
    colour distance takes the border for the paper: a PNG photo of a 0 beside a phone's shadow was a sure 1 (the
    shadow's edge its ink), of a 1 "Nothing drawn". A canvas, a noisy or unevenly lit scan and a drawing cropped
    to or through its ink (its soft rim along the edge) are no scenes: `to_mnist` reads them as before. A desk is
    no scene here (as dark as ink, it cannot be told from a digit cropped through); send such photos as uploads."""
    h, w = rgba.shape[:2]
    if min(h, w) < SCENE_MIN_SIDE:
        return False
    ring = _border(rgba)
    packed = np.ascontiguousarray(ring).view(np.uint32).reshape(-1)
    if (packed == packed[0]).all() or not (ring[:, 3] == 255).all():  # a canvas: one colour, or transparent
        return False
    grey = rgba[..., :3].mean(axis=2, dtype=np.float32)
    ys, xs = _edge_coordinates(h, w)
    reach = max(2, round(SCENE_DEPTH * min(h, w)))
    tones = np.stack([grey[np.clip(ys, k, h - 1 - k), np.clip(xs, k, w - 1 - k)] for k in range(reach + 1)])
    paper, ink = float(np.percentile(tones[0], 90)), float(np.percentile(grey, 0.05))
    between = (tones < paper - SCENE_TONE) & (tones > ink + SCENE_TONE)
    # a shadow is a band of that tone with no ink in it; an ink stroke's soft rim at the edge has its ink beside it
    scene = between[0] & between[reach // 2] & ~(tones <= ink + SCENE_TONE).any(axis=0)
    return _longest_stretch(scene) >= SCENE_RUN


def _edge_coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of a picture's 1-px edge, clockwise from the top left corner."""
    top, right = np.arange(w), np.arange(1, h)
    bottom, left = np.arange(w - 2, -1, -1), np.arange(h - 2, 0, -1)
    ys = np.concatenate([np.zeros(w, int), right, np.full(w - 1, h - 1), left])
    xs = np.concatenate([top, np.full(h - 1, w - 1), bottom, np.zeros(h - 2, int)])
    return ys, xs


def _longest_stretch(along_edge: np.ndarray) -> float:
    """The longest run of True in a circular boolean array, as a share of its length."""
    if along_edge.all():
        return 1.0
    run = np.roll(along_edge, -int(np.argmin(along_edge)))  # starts outside a stretch: none wraps around
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], run.view(np.int8), [0]])))
    return float((bounds[1::2] - bounds[::2]).max()) / len(run) if len(bounds) else 0.0


def _reduce_pil(im: Image.Image) -> Image.Image:
    long_side = max(im.size)
    if long_side > WORK_MAX:
        im = im.reduce(math.ceil(long_side / WORK_MAX))
    return im


def _small_rgba(im: Image.Image) -> np.ndarray:
    """A decoded image -> RGBA uint8, reduced to WORK_MAX first. A large 16-bit, palette or 1-bit image is
    first made 8-bit grey, RGB or RGBA, which PIL reduces: converted whole at full size it took 70 KB of
    16-bit PNG to 1.7 s of CPU and 620 MB (palette and 1-bit images 0.3 s and 310 MB)."""
    if max(im.size) > WORK_MAX:
        if im.mode in SIXTEEN_BIT_MODES:
            im = Image.fromarray(sixteen_to_grey(im), "L")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    return pil_to_rgba(_reduce_pil(im) if im.mode in ("RGB", "RGBA", "L", "LA") else im)


def _parse_colour(value: str | None, name: str) -> np.ndarray | None:
    """'#rrggbb' (also '#rgb', 'rgb(...)', 'rgba(...)', CSS names) -> float32 RGB, or None.

    A fully transparent colour (e.g. 'rgba(0,0,0,0)', 'transparent') means "no colour": None.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.lower() == "transparent":
        return None
    try:
        rgb = ImageColor.getrgb(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be a colour like '#rrggbb', got {value!r}") from exc
    if len(rgb) == 4 and rgb[3] == 0:
        return None
    return np.array(rgb[:3], np.float32)


# --------------------------------------------------------------------------------------------------
# ink extraction


def _ring_thickness(a: np.ndarray) -> int:
    """`_border`'s ring: 1.5 % of the image's short side, 1..4 px."""
    return max(1, min(4, round(0.015 * min(a.shape[:2]))))


def _border(a: np.ndarray, inset: int = 0) -> np.ndarray:
    """The outer ring of an (H, W, 4) image, as (n, 4): 1.5 % of the short side thick (1..4 px); `inset`
    pixels in from the edges if given.

    A ring rather than the 1-px edge, so that a thin frame line around a picture is not taken for
    its background.
    """
    h, w = a.shape[:2]
    t = _ring_thickness(a)
    if inset:
        a = a[inset : h - inset, inset : w - inset]
        h, w = a.shape[:2]
    if h <= 2 * t or w <= 2 * t:
        return a.reshape(-1, a.shape[-1])
    return np.concatenate(
        [
            a[:t].reshape(-1, a.shape[-1]),
            a[-t:].reshape(-1, a.shape[-1]),
            a[t:-t, :t].reshape(-1, a.shape[-1]),
            a[t:-t, -t:].reshape(-1, a.shape[-1]),
        ]
    )


#: how many rings (each `_border`'s thickness) inside the edge `_background_border` looks for plain background
FRAME_RINGS = 4
#: a picture smaller than this is a scan of the digit alone (USPS's 16 x 16: its ink reaches the edges), no frame
FRAME_MIN_SIDE = 64


def _background_border(a: np.ndarray) -> np.ndarray:
    """The ring the background is read from: `_border`, unless a frame is drawn along the picture's very edges
    (3-16 px of black around a 7: the border was black, the 7 a sure 0). Then it is the innermost plain ring
    (one colour, give or take FLOOR_MIN) of FRAME_RINGS inside, if that colour is unlike the edge's."""
    outer = _border(a)
    if (outer[:, 3] < 128).any() or min(a.shape[:2]) < FRAME_MIN_SIDE:  # transparency: the alpha decides
        return outer
    t = _ring_thickness(a)
    edge, plain = _plain_colour(outer), None
    for k in range(FRAME_RINGS, 0, -1):  # innermost first
        if min(a.shape[:2]) > 2 * k * t + 4 * t:
            ring = _border(a, k * t)
            plain = _plain_colour(ring)
            if plain is not None:
                break
    if plain is None or (edge is not None and float(np.linalg.norm(plain - edge)) <= MIN_CONTRAST):
        return outer
    unlike = edge is not None or float(np.median(np.linalg.norm(outer[:, :3] - plain, axis=1))) > MIN_CONTRAST
    return ring if unlike else outer  # (an edge of no one colour is a frame if it is mostly unlike the ring)


def _plain_colour(ring: np.ndarray) -> np.ndarray | None:
    """The colour of a ring of pixels that is one colour (give or take FLOOR_MIN for 80 % of them), else None."""
    packed = np.ascontiguousarray(ring).view(np.uint32).reshape(-1)
    if (packed == packed[0]).all():  # (a canvas: no median)
        return ring[0, :3].astype(np.float32)
    colour = np.median(ring[:, :3].astype(np.float32), axis=0)
    return colour if float(np.percentile(np.linalg.norm(ring[:, :3] - colour, axis=1), 80)) < FLOOR_MIN else None


def _median_colour(rgb: np.ndarray, uniform: bool = False) -> np.ndarray:
    """Per-channel median of (n, 3) uint8 colours as float32; a canvas' border is one colour (10x faster;
    `uniform`: the caller already knows it is)."""
    if len(rgb) and (uniform or (rgb == rgb[0]).all()):
        return rgb[0].astype(np.float32)
    return np.median(rgb.astype(np.float32), axis=0)


def _distance(px: np.ndarray, bg: np.ndarray | None, pen: np.ndarray | None) -> np.ndarray:
    """Ink evidence of RGBA pixels (n, 4) as float32 (n,).

    No background colour (transparent background): the opacity (0..255). Otherwise the euclidean RGB
    distance (0..441) of the pixel, alpha-composited over the background, to the background; with a
    pen colour, the projection onto (pen - bg) instead, so colours unlike the pen count less.
    """
    if bg is None:
        return _LEVELS[px[:, 3]]
    see_through = bool(px.size) and int(px[:, 3].min()) < 255
    if see_through and not _white(bg):
        px, see_through = _over_white(px), False
    luts = _distance_luts(bg.dtype.str, bg.tobytes(), None if pen is None else (pen.dtype.str, pen.tobytes()))
    d = luts[0][px[:, 0]]
    d += luts[1][px[:, 1]]
    d += luts[2][px[:, 2]]
    if pen is not None:
        np.maximum(d, 0.0, out=d)
    else:
        np.sqrt(d, out=d)
    if see_through:  # over a white background: composited over it, as `_over_white` would
        d *= _OPACITY[px[:, 3]]
    return d


def _white(bg: np.ndarray) -> bool:
    """Is the background colour white (what a transparent pixel shows on a page)?"""
    return float(bg.min()) >= 254.5


def _over_white(px: np.ndarray) -> np.ndarray:
    """RGBA pixels (n, 4) composited over white, as a page shows them: a digit cut out of a black picture
    (transparent on opaque black) is a white digit, not blank ("nothing drawn", a probe, session 34)."""
    a = px[:, 3:4].astype(np.float32) * (1.0 / 255.0)
    out = np.full_like(px, 255)
    out[:, :3] = np.rint(px[:, :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return out


_LEVELS = np.arange(256, dtype=np.float32)
_OPACITY = _LEVELS / 255.0
_LEVELS.flags.writeable = _OPACITY.flags.writeable = False


@functools.lru_cache(maxsize=64)
def _distance_luts(bg_dtype: str, bg_bytes: bytes, pen_key: tuple[str, bytes] | None) -> tuple[np.ndarray, ...]:
    """`_distance`'s per-channel tables for one (background, pen) pair: a canvas sends the same colours
    every time, and building them cost more than using them."""
    bg = np.frombuffer(bg_bytes, bg_dtype)
    if pen_key is not None:
        pen = np.frombuffer(pen_key[1], pen_key[0])
        u = (pen - bg) / float(np.linalg.norm(pen - bg))
        luts = tuple((_LEVELS - bg[c]) * u[c] for c in range(3))
    else:
        luts = tuple((_LEVELS - bg[c]) ** 2 for c in range(3))
    for lut in luts:
        lut.flags.writeable = False
    return luts


def _candidates(rgba: np.ndarray, bg: np.ndarray | None) -> np.ndarray | None:
    """Flat indices of pixels that can carry ink (not exactly the background, not transparent).

    Drawn canvases are mostly exact background: skipping it makes the colour maths ~5x cheaper.
    None means "all pixels" (photos, where nearly every pixel differs a little).
    """
    flat = rgba.reshape(-1, 4)
    if bg is None:
        differs = flat[:, 3] > 0
        if np.count_nonzero(differs) > 0.6 * differs.size:
            return None
        return np.flatnonzero(differs)
    bg8 = np.rint(bg)
    if not rgba.flags.c_contiguous or float(np.abs(bg - bg8).max()) > 1e-6:  # (allclose: 10x slower)
        return None
    key = np.array([bg8[0], bg8[1], bg8[2], 255], np.uint8).view(np.uint32)[0]
    differs = rgba.view(np.uint32).reshape(-1) != key
    if np.count_nonzero(differs) > 0.6 * differs.size:
        return None
    sel = np.flatnonzero(differs)
    return sel[flat[sel, 3] > 0] if _white(bg) else sel  # (elsewhere transparent is white: `_over_white`)


def _gather(rgba: np.ndarray, sel: np.ndarray | None) -> np.ndarray:
    """RGBA pixels (n, 4) at flat indices `sel` (all when None)."""
    if sel is None:
        return rgba.reshape(-1, 4)
    if rgba.flags.c_contiguous:
        return rgba.view(np.uint32).reshape(-1)[sel].view(np.uint8).reshape(-1, 4)
    return rgba.reshape(-1, 4)[sel]


def _ink_values(rgba: np.ndarray, pen: np.ndarray | None, bg: np.ndarray | None):
    """(flat indices of the candidate pixels or None for all, their ink strength in [0, 1])."""
    border = _background_border(rgba)
    packed = np.ascontiguousarray(border).view(np.uint32).reshape(-1)
    uniform = bool((packed == packed[0]).all())  # one colour all round: a canvas
    if uniform:
        opaque = border[:1, 3] >= 128
        transparent_bg = not opaque[0]
        opaque_rgb = border[:, :3] if opaque[0] else border[:0, :3]
    else:
        opaque = border[:, 3] >= 128
        transparent_bg = opaque.mean() < 0.5
        opaque_rgb = border[:, :3] if opaque.all() else border[opaque, :3]  # (a view for an opaque canvas)
    if transparent_bg:  # opacity is the exact ink of a transparent canvas, whatever the colours say
        bg = pen = None
    if bg is not None:
        seen = _median_colour(opaque_rgb, uniform)
        if float(np.linalg.norm(seen - bg)) > 3 * FLOOR_MIN:
            bg = pen = None  # the hints do not describe this image (e.g. an uploaded file): infer instead
    if bg is None and not transparent_bg:
        bg = _median_colour(opaque_rgb, uniform)
    if pen is not None and (bg is None or float(np.linalg.norm(pen - bg)) < MIN_CONTRAST):
        pen = None  # a pen hint only means something relative to a known background
    # bg None now means: transparent background, ink = opacity

    if uniform:  # one colour all round (a canvas): its distance is the median
        noise = float(_distance(border[:1], bg, pen)[0])
    else:
        edge = _distance(border, bg, pen)
        noise = float(np.partition(edge, edge.size // 2)[edge.size // 2])  # median: a frame line is ignored
    floor = max(FLOOR_MIN, 3.0 * noise)

    sel = _candidates(rgba, bg)
    d = _distance(_gather(rgba, sel), bg, pen)
    cand = d[d > floor]
    empty = BUSY_MSG if noise >= BUSY_NOISE else NOTHING_DRAWN  # noise everywhere is not "blank"
    if cand.size < 3:
        raise EmptyImageError(empty)
    k = int(0.9 * (cand.size - 1))
    core = float(np.partition(cand, k)[k])
    if core < MIN_CONTRAST:
        raise EmptyImageError(empty)
    floor = min(max(floor, FLOOR_REL * core), 0.5 * core)
    d -= floor
    d *= 1.0 / (core - floor)
    np.clip(d, 0.0, 1.0, out=d)
    return sel, d


def _ink(rgba: np.ndarray, pen: np.ndarray | None, bg: np.ndarray | None) -> np.ndarray:
    """Ink strength in [0, 1] (float32 (H, W), stroke core ~1) from colour distance to the background."""
    sel, d = _ink_values(rgba, pen, bg)
    if sel is None:
        return d.reshape(rgba.shape[:2])
    s = np.zeros(rgba.shape[0] * rgba.shape[1], np.float32)
    s[sel] = d
    return s.reshape(rgba.shape[:2])


#: The window `_ink_window` keeps around the ink: wider than every neighbourhood the later steps look
#: at (speck dilation 2 px at half resolution, the crop's 2-px margin), so they see what they would
#: see on the whole image.
WINDOW_MARGIN = 8


def _ink_window(rgba: np.ndarray, pen: np.ndarray | None, bg: np.ndarray | None) -> tuple[np.ndarray, int, int]:
    """`_ink` cut to a window around the pixels that can carry ink: (ink, top, left).

    A drawing covers a fraction of its canvas; every later step works on the window instead of the
    whole image, with the same result. The window starts on even coordinates and has an even size
    unless it ends at the image's edge, so that `_drop_specks`' 2x2 pooling sees the same blocks.
    """
    sel, d = _ink_values(rgba, pen, bg)
    h, w = rgba.shape[:2]
    if sel is None:
        return d.reshape(h, w), 0, 0
    rows, cols = np.divmod(sel, w)
    top = max(int(rows.min()) - WINDOW_MARGIN, 0) // 2 * 2
    left = max(int(cols.min()) - WINDOW_MARGIN, 0) // 2 * 2
    bottom = min(top + (int(rows.max()) + 1 + WINDOW_MARGIN - top + 1) // 2 * 2, h)
    right = min(left + (int(cols.max()) + 1 + WINDOW_MARGIN - left + 1) // 2 * 2, w)
    s = np.zeros((bottom - top, right - left), np.float32)
    s[rows - top, cols - left] = d
    return s, top, left


def _drop_specks(
    mask: np.ndarray, s: np.ndarray, image_shape: tuple[int, int] | None = None, origin: tuple[int, int] = (0, 0)
) -> int:
    """Remove connected ink components smaller than SPECK_REL of the largest one (in place).

    `mask` and `s` may be a window of the image (`_ink_window`: even `origin`, all ink inside) of
    `image_shape`; the result is the same as on the whole image. Returns the extent (longer bbox side,
    px) of the largest remaining component: a real digit has at least one stroke of some size, a
    sprinkle of specks does not.
    """
    image_h, image_w = image_shape if image_shape is not None else mask.shape
    pooled = mask
    step = 1
    if max(image_h, image_w) > 160:  # label at half resolution (OR-pooled): 4x cheaper, same components
        step = 2  # (an odd last row or column is pooled too: a 1-px frame's right side there stayed a "1")
        even = np.pad(mask, ((0, mask.shape[0] % 2), (0, mask.shape[1] % 2)))
        pooled = even[0::2, 0::2] | even[1::2, 0::2] | even[0::2, 1::2] | even[1::2, 1::2]
    labels, n = ndi.label(pooled, structure=_EIGHT)
    if n <= 1:
        y0, y1, x0, x1 = _bbox(mask)
        return max(y1 - y0, x1 - x0)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    boxes = ndi.find_objects(labels)
    # the whole image's pooled size, and where the window sits in it
    ph, pw = (-(-image_h // 2), -(-image_w // 2)) if step == 2 else (image_h, image_w)
    oy, ox = origin[0] // step, origin[1] // step
    near = max(1, round(FRAME_MARGIN * max(ph, pw)))
    for i, b in enumerate(boxes, start=1):  # a frame line around the picture (or around the digit) is not ink
        gaps = (b[0].start + oy, b[1].start + ox, ph - b[0].stop - oy, pw - b[1].stop - ox)
        if sizes[i] >= 0.25 * ph * pw or sizes.sum() <= sizes[i]:
            continue
        if max(gaps) > near and not _around_the_rest(boxes, i):
            continue
        if max(gaps) <= 1 or _is_frame(labels[b] == i):  # at the edge, or straight on all four sides
            sizes[i] = 0
    small = sizes < SPECK_REL * sizes.max()
    small[0] = False
    largest = max(
        max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b, tiny in zip(boxes, small[1:]) if not tiny
    )
    if small.any():
        drop = small[labels]
        if step == 2:
            drop = np.repeat(np.repeat(drop, 2, axis=0), 2, axis=1)[: mask.shape[0], : mask.shape[1]]
        drop = ndi.binary_dilation(drop, iterations=2) & ~(mask & ~drop)
        mask[drop] = False
        s[drop] = 0.0
    return largest * step


_EIGHT = np.ones((3, 3), bool)


def _around_the_rest(boxes: list, i: int) -> bool:
    """Component `i` (1-based) holds every other one inside its box, and one of them is a stroke of some size:
    a box drawn around the digit, however far in (a 7 in a square drawn 30 px in from the edge was a sure 0)."""
    outer = boxes[i - 1]
    inner = [b for k, b in enumerate(boxes, start=1) if k != i]
    inside = all(outer[0].start < b[0].start and b[0].stop < outer[0].stop and outer[1].start < b[1].start
                 and b[1].stop < outer[1].stop for b in inner)  # fmt: skip
    short_side = min(outer[0].stop - outer[0].start, outer[1].stop - outer[1].start)
    return inside and max(max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in inner) >= 0.3 * short_side


def _is_frame(component: np.ndarray) -> bool:
    """A component whose outermost two rows and columns are each inked over most of its extent: the
    straight sides of a frame (a card's border, a box drawn around the digit), never a round 0."""
    sides = (component[:2].any(axis=0), component[-2:].any(axis=0), component[:, :2].any(axis=1),
             component[:, -2:].any(axis=1))  # fmt: skip
    return min(float(side.mean()) for side in sides) > FRAME_STRAIGHT


def is_dot(mask: np.ndarray, extent: float, width: float, long_side: int) -> bool:
    """Is this ink (a boolean mask around it) a dot: short for its stroke width, small in the image, and round
    (its extent within DOT_ROUND of its widest point, twice the largest distance to its edge)?"""
    if not (extent < DOT_RATIO * width and extent < DOT_MAX_REL * long_side):
        return False
    widest = 2.0 * float(ndi.distance_transform_edt(np.pad(mask, 1)).max())  # (small: only short ink comes here)
    return extent < DOT_ROUND * widest


def _stroke_width(s: np.ndarray) -> float:
    """Mean stroke width (px) of a soft ink map: 2 * area / perimeter (perimeter by the co-area formula)."""
    gy, gx = _gradient(s)
    np.multiply(gx, gx, out=gx)  # (in place: the same numbers as sqrt(gx * gx + gy * gy), fewer arrays)
    np.multiply(gy, gy, out=gy)
    gx += gy
    perimeter = float(np.sqrt(gx, out=gx).sum())
    area = float(s.sum())
    return 2.0 * area / perimeter if perimeter > 0 else 1.0


def _gradient(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.gradient(s)` of a 2-D float32 array (central differences, one-sided at the edges), the same
    numbers without its general-case overhead."""
    if min(s.shape) < 2:  # an image 1 px thin (a line drawn on a 1-px strip): no change measurable across it
        return tuple(
            np.gradient(s, axis=axis) if s.shape[axis] >= 2 else np.zeros_like(s) for axis in (0, 1)
        )
    gy = np.empty_like(s)
    gx = np.empty_like(s)
    np.subtract(s[2:], s[:-2], out=gy[1:-1])
    gy[1:-1] /= 2.0
    gy[0] = s[1] - s[0]
    gy[-1] = s[-1] - s[-2]
    np.subtract(s[:, 2:], s[:, :-2], out=gx[:, 1:-1])
    gx[:, 1:-1] /= 2.0
    gx[:, 0] = s[:, 1] - s[:, 0]
    gx[:, -1] = s[:, -1] - s[:, -2]
    return gy, gx


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _resample(s: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Area-average (downscale) or bilinear (upscale) `box` (x0, y0, x1, y1) of `s` to `size` (w, h)."""
    s = np.ascontiguousarray(s, np.float32)  # (a crop: PIL would copy it row by row)
    im = Image.frombuffer("F", (s.shape[1], s.shape[0]), s, "raw", "F", 0, 1)
    up = size[0] > (box[2] - box[0]) or size[1] > (box[3] - box[1])
    return np.asarray(im.resize(size, Image.BILINEAR if up else Image.BOX, box=box))


def ink_map(
    rgba: np.ndarray, *, pen_color: str | None = None, background_color: str | None = None
) -> np.ndarray:
    """RGBA uint8 (H, W, 4) -> ink strength (H, W) float32 in [0, 1] (step 2; `digitlab.segment` shares it).

    Raises EmptyImageError when nothing differs from the background.
    """
    return _with_hints(_ink, rgba, pen_color, background_color)


def _with_hints(ink, rgba: np.ndarray, pen_color: str | None, background_color: str | None):
    pen = _parse_colour(pen_color, "pen_color")
    bg = _parse_colour(background_color, "background_color")
    try:
        return ink(rgba, pen, bg)
    except EmptyImageError:
        if pen is None and bg is None:
            raise
        return ink(rgba, None, None)  # hints that hide all ink describe another image: infer instead


# --------------------------------------------------------------------------------------------------
# the public transform


def to_mnist(
    image: Any,
    *,
    pen_color: str | None = None,
    background_color: str | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Any digit image -> MNIST-like (28, 28) float32 in [0, 1], ink = 1, centred by centre of mass.

    `image`: encoded bytes (PNG, JPEG, WebP, BMP, GIF), a numpy array (H, W) grey, (H, W, 3) RGB or
    (H, W, 4) RGBA -- uint8 preferred; bool, uint16 and float ([0, 1]) are accepted -- or a PIL image.
    `pen_color` / `background_color` ('#rrggbb') are optional hints; without them the background is
    the border colour (or transparency) and ink is whatever differs from it, in either polarity.
    `max_pixels` (bytes only) defaults to `DEFAULT_MAX_PIXELS`.

    Raises EmptyImageError when nothing (or only a dot or a speck) was drawn, and the decoding errors
    of `decode_image` for bytes.
    """
    rgba = _working_rgba(image, max_pixels)
    s, top, left = _with_hints(_ink_window, rgba, pen_color, background_color)

    # --- specks and empties ------------------------------------------------------------------------
    mask = s >= 0.5
    if not mask.any():
        raise EmptyImageError(NOTHING_DRAWN)
    largest = _drop_specks(mask, s, rgba.shape[:2], (top, left))
    y0, y1, x0, x1 = _bbox(mask)
    extent = max(y1 - y0, x1 - x0)
    long_side = max(rgba.shape[:2])
    if largest < max(2.0, MIN_EXTENT_REL * long_side):
        raise EmptyImageError(_TINY_MSG)

    # --- stroke width at working resolution ----------------------------------------------------------
    h, w = s.shape
    cy0, cy1, cx0, cx1 = max(y0 - 2, 0), min(y1 + 2, h), max(x0 - 2, 0), min(x1 + 2, w)
    crop = s[cy0:cy1, cx0:cx1]
    step = max(1, int(max(crop.shape) // 96))  # the estimate does not need more than ~100 px
    width = _stroke_width(crop if step == 1 else _block_mean(crop, step)) * step
    width = min(width, float(extent))
    if is_dot(mask[cy0:cy1, cx0:cx1], extent, width, long_side):
        raise EmptyImageError(_DOT_MSG)

    # --- mid resolution crop -------------------------------------------------------------------------
    k = MID_LONG / extent
    if k * width < MIN_MID_WIDTH:  # hair-thin pen: keep enough resolution for the stroke to survive
        k = min(MIN_MID_WIDTH / width, max(1.0, k), MID_MAX / extent)
    size = (max(1, round((cx1 - cx0) * k)), max(1, round((cy1 - cy0) * k)))
    mid = _resample(crop, (0.0, 0.0, float(cx1 - cx0), float(cy1 - cy0)), size)
    m = mid >= 0.5
    if not m.any():  # hair-thin even so: lower the threshold, rescale the soft values to match
        thr = 0.5 * float(mid.max())
        m = mid >= thr
        mid = np.minimum(mid * (0.5 / thr), 1.0)
    my0, my1, mx0, mx1 = _bbox(m)
    e_mid = float(max(my1 - my0, mx1 - mx0))
    w_mid = min(width * size[0] / (cx1 - cx0), e_mid)

    # --- redraw at the target stroke width (signed distance field) ---------------------------------
    # final extent e' = e_mid - w_mid + W; we want W / e' = TARGET_WIDTH / BOX
    centreline = max(e_mid - w_mid, 0.3 * e_mid)
    w_target = TARGET_WIDTH * centreline / (BOX - TARGET_WIDTH)
    delta = max((w_target - w_mid) / 2.0, -MAX_ERODE * w_mid)
    pad = math.ceil(max(delta, 0.0)) + 2
    v = _redraw(_pad(m[my0:my1, mx0:mx1], pad), _pad(mid[my0:my1, mx0:mx1], pad), delta)
    on = v >= 0.5
    if not on.any():
        raise EmptyImageError(NOTHING_DRAWN)
    scale = max(_extent(v.max(axis=1)), _extent(v.max(axis=0))) / BOX  # mid pixels per output pixel

    # --- place in 28x28: longer side 20, centre of mass at (14, 14) --------------------------------
    total = float(v.sum())
    cy = float(v.sum(axis=1) @ np.arange(v.shape[0], dtype=np.float64)) / total
    cx = float(v.sum(axis=0) @ np.arange(v.shape[1], dtype=np.float64)) / total
    oy = cy + 0.5 - (CENTRE + 0.5) * scale  # source coordinate of the output's top edge
    ox = cx + 0.5 - (CENTRE + 0.5) * scale
    # exact area averaging (fractional pixel overlaps): keeps the ink mass and its centre
    out = _area_weights(oy, scale, v.shape[0]) @ v.astype(np.float64) @ _area_weights(ox, scale, v.shape[1]).T
    out = out.astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    out = np.rint(out * 255.0) / np.float32(255.0)  # exactly representable as uint8 / 255, like MNIST
    return out.astype(np.float32)


def _area_weights(start: float, step: float, n_in: int) -> np.ndarray:
    """(SIZE, n_in) matrix: output pixel j averages source span [start + j*step, start + (j+1)*step)."""
    edges = start + step * np.arange(SIZE + 1, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(1, n_in + 1)[None, :])
    return np.clip(hi - lo, 0.0, None) / step


def _redraw(m: np.ndarray, soft: np.ndarray, delta: float) -> np.ndarray:
    """Move the ink outline by `delta` px (grow > 0, shrink < 0), keeping a 1-px anti-aliased edge.

    Signed distance from the mask's edge pixels (nearest one by a Euclidean distance transform),
    refined with that pixel's soft value: an edge pixel of coverage c lies c - 0.5 px inside the edge.
    """
    if delta >= 0:
        dist, (iy, ix) = ndi.distance_transform_edt(~m, return_indices=True)
        phi = soft[iy, ix] - 0.5 - dist  # outside: negative distance to the outline
        v = np.clip(phi + delta + 0.5, 0.0, 1.0)
        v[m] = np.minimum(soft[m] + delta, 1.0)
    else:
        dist, (iy, ix) = ndi.distance_transform_edt(m, return_indices=True)
        phi = dist - 0.5 + soft[iy, ix]  # inside: positive distance to the outline
        v = np.clip(phi + delta + 0.5, 0.0, 1.0)
        v[~m] = 0.0
    return v.astype(np.float32)


def _extent(profile: np.ndarray) -> float:
    """Length of the run where `profile` >= 0.5, with the two 0.5 crossings interpolated (sub-pixel)."""
    idx = np.flatnonzero(profile >= 0.5)
    i0, i1 = int(idx[0]), int(idx[-1])
    a0 = float(profile[i0 - 1]) if i0 > 0 else 0.0
    a1 = float(profile[i1 + 1]) if i1 + 1 < profile.size else 0.0
    start = i0 - (float(profile[i0]) - 0.5) / max(float(profile[i0]) - a0, 1e-6)
    end = i1 + (float(profile[i1]) - 0.5) / max(float(profile[i1]) - a1, 1e-6)
    return max(end - start, 1.0)


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((a.shape[0] + 2 * n, a.shape[1] + 2 * n), a.dtype)
    out[n : n + a.shape[0], n : n + a.shape[1]] = a
    return out


def _block_mean(a: np.ndarray, step: int) -> np.ndarray:
    """Area-average by an integer factor (PIL's reduce: C speed)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32), "F").reduce(step))


def to_png(image28: np.ndarray) -> bytes:
    """The (28, 28) model input as an 8-bit greyscale PNG (ink white on black, as the model saw it).

    Written directly (signature, IHDR, one IDAT, IEND): a 28x28 image needs none of PIL's encoder
    machinery, which cost as much as the CNN itself per prediction.
    """
    arr = np.asarray(image28)
    if arr.shape == (784,):
        arr = arr.reshape(28, 28)
    if arr.shape != (SIZE, SIZE):
        raise ValueError(f"to_png expects a (28, 28) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float32)) * 255.0), 0, 255).astype(np.uint8)
    rows = np.zeros((SIZE, SIZE + 1), np.uint8)  # each row: filter type 0 (None), then its pixels
    rows[:, 1:] = arr
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 0, 0, 0, 0)  # 8-bit grey, not interlaced
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b"")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
