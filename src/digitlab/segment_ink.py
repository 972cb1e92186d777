"""A written number's image -> its ink map at the segmentation's working resolution (`digitlab.segment`).

A canvas has one exact background colour: its ink is the distance from it (`preprocess.ink_map`). A photo
or scan of paper is lit unevenly: it is flattened against its own background first. Ruled or squared
paper's lines, across the whole image (on a photo also turned a few degrees), are no ink: they are taken
out, on photos and on clean scans or screenshots alike, and the strokes that cross them kept. Dark strips
along a photo's edges (the table beside a sheet photographed a little turned) are no ink either. A faint
stroke on a photo (a light pen, a stroke in a shadow) is brought up to full strength, so that it is not lost
in pieces below the ink threshold.
What is around the writing rather than written is left out too: the desk around the sheet (also when the desk
all around looked like a canvas's one background colour), a shadow's edge, a finger at a corner. Light
writing on a dark surface (chalk on a board) is read the other way round.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.decode import NOTHING_DRAWN, EmptyImageError, decode_plain_png, open_image, pil_to_rgba
from digitlab.preprocess import ink_map
from digitlab.segment_pieces import INK_ON, thickness, without_frame

#: working resolution: long side of the image the segmentation looks at (an 840 px canvas is halved)
WORK_MAX = 800
#: shrunk this many times or more, a picture that comes out blank may have had thin writing: said so
SHRUNK_AWAY = 8
MAX_PAPER_INK = 0.15  #: a photo of writing on paper has ink on less than this share of its pixels...
MIN_STROKE_SHARE = 0.2  #: ...and its largest stroke holds at least this share of the ink (noise: under 0.1)
STRIP_DEPTH = 0.35  #: a dark strip along a photo's edge reaches into it less than this share of its length
RULED_ACROSS = 0.9  #: a row or column with ink over this share of the image is a ruled line, not writing
RULED_LIGHT = 0.6  #: a photo's line this dark against the writing's core (and alone, or short) is writing (`_ruled`)
RULED_SPAN = 0.8  #: a photo's line shorter than this share of the picture is writing (`_ruled`)
WRITING_CORE = 0.2  #: `_ruled` leaves a photo's lines as they were when its writing is no darker than this
LINE_SEEN = 0.05  #: darkness from which a photo's line is one (`_ruled`)
PAPER_SMOOTH = 5  #: pixels: the closing's paper estimate (square-edged) is smoothed over this much
CLOSED_STROKE = 0.0005  #: the closing's ink needs a stroke of this share of the picture's pixels (`flatten_photo`)
#: on a photo, a stroke (connected ink of at least STROKE_LOW) reaching INK_ON somewhere is scaled so that its
#: STROKE_QUANTILE brightest-but-one pixel is full ink (a scale of at most 1 / INK_ON): a faint 0 beside a
#: dark 3 fell apart into specks and "30" was read "3". Chosen on `evaluate --numbers --part calibration`
#: (500 numbers, seeds 200 / 300: 424 / 406 -> 427 / 412 right; a threshold of 0.05-0.15 and a quantile of
#: 0.9-1 within one number of it; scaling each place by its neighbourhood's darkest ink instead lost 1-21)
STROKE_LOW = 0.1
STROKE_QUANTILE = 0.9
#: a whole digit fainter than the photo's ink floor is kept when its darkness passes the paper's noise by this
#: and it is as tall as FAINT_TALL of the tallest stroke (`with_faint_digits`). Chosen on the calibration part
#: (seeds 200 / 300: 427 / 412 right with 0.16-0.2, 0.12 427 / 409, 0.08 419 / 400) and on photos of a
#: number with one digit in a lighter ink: with 0.16 it is read down to grey (180, 180, 190) on cream paper
FAINT_ABOVE_NOISE = 0.16
FAINT_TALL = 0.6
#: a photo's ink floor: darkness under this share of its darkest strokes' (or just above the paper's noise) is
#: paper. At 0.3 a stroke written lighter than the rest of its digit went (a 4's lighter left half: "34" read
#: "31"), and soft edges thinned every stroke: photos read worse than the same ink on the canvas (400 calibration
#: numbers each, seed 7: Semeion 350 vs 359, USPS 384 vs 387). Chosen on calibration numbers: photos of those
#: 800 at 0.3 / 0.2 / 0.1: 734 / 740 / 744 right (canvas 746); 1,000 mixed calibration numbers (seeds 200 + 300)
#: 946 -> 952 at 0.1 and at 0 (sure and wrong 13 -> 11 / 12)
INK_FLOOR = 0.1
#: ...for `/predict`'s photo of one digit (`photo_ink`), whose `to_mnist` frames all the ink in the picture: the
#: lower floor let a soft shadow's residue in, and the digit was framed with it (one held-out digit per simulated
#: photo, USPS: 277 -> 271 of 285 right at 0.1; a number's pieces drop such specks beside its strokes)
ONE_DIGIT_INK_FLOOR = 0.3
#: an image with one exact colour all around whose "ink" covers more than this share is a photo of a sheet on a
#: desk (the desk's colour is no canvas background: the paper was read as ink, "2047" as "1111")
FRAMED_SHEET = 0.5
DARK_SURFACE = 128  #: a photo darker than this (median) whose few odd pixels are light shows light writing
MAX_TURN = 6.0  #: degrees: ruled lines of a photo are found turned up to this much
SCENERY_SCALE = 1.8  #: see `without_scenery`
THICK_SAMPLE = 64  #: strokes whose width is measured for the writing's pen width, the largest first
SCENERY_THICK = 3.0  #: a shape at the picture's edge this many times thicker than the strokes is no writing
PLAIN_PNG_MAX_SIDE = 4096  #: a plain PNG up to this side takes the fast decoder (the same pixels as PIL's)


def load_rgba(image: Any, *, max_pixels: int | None = None) -> tuple[np.ndarray, float]:
    """Encoded bytes (decode checks apply, EXIF orientation too), a PIL image or an array -> (RGBA uint8,
    input pixels per decoded pixel). A large JPEG is decoded at 1/2 to 1/8 scale where that still leaves
    WORK_MAX pixels (a 5000x5000 phone photo took ~1 s and ~370 MB to decode in full)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        plain = decode_plain_png(image, max_pixels, max_side=PLAIN_PNG_MAX_SIDE)  # /predict's decoder too: the
        if plain is not None:  # same PNGs
            return plain, 1.0
        im = open_image(bytes(image), max_pixels, draft_to=WORK_MAX)
        with Image.open(io.BytesIO(image)) as header:  # the size before a draft decode (header only)
            full = max(header.size)
        return pil_to_rgba(im), full / max(im.size)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    return pil_to_rgba(image), 1.0


def is_photo(rgba: np.ndarray) -> bool:
    """A canvas has one exact background colour at its border; a photo or scan does not."""
    border = np.concatenate([rgba[0], rgba[-1], rgba[:, 0], rgba[:, -1]]).astype(np.int16)
    if np.median(border[:, 3]) < 128:
        return False
    return float(np.mean(np.abs(border[:, :3] - np.median(border[:, :3], axis=0)).max(axis=1) > 3)) > 0.2


def flatten_photo(rgba: np.ndarray, floor_share: float = INK_FLOOR) -> np.ndarray:
    """Dark ink on unevenly lit paper -> ink strength in [0, 1]; ruled lines are removed.

    The paper's brightness is estimated per place, two ways (below), the picture divided by it: shadows and
    light gradients cancel. Long thin horizontal or vertical lines (lined or squared paper) are found with a
    long opening and taken out. The closing's ink is the photo's when it has less ink in fewer pieces (what one
    estimate leaves of a shadow, the other does not) and a stroke of some size (CLOSED_STROKE of the picture:
    a dot on a shadowed sheet, "nothing drawn" by the other, was a dot among specks, read "51012181005511").
    `floor_share`: darkness under this share of the darkest strokes' is paper (`INK_FLOOR`, `ONE_DIGIT_INK_FLOOR`).
    """
    lum = rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if _light_on_dark(lum):  # chalk on a board, a dark screen: it was refused as "658 ways to split it"
        lum = 255.0 - lum
    # the paper's brightness per place: a max filter wider than any stroke, then smoothed (a hard shadow's edge
    # stays, whole, as one shape at the picture's edge, which `without_scenery` takes out); and a closing (that
    # max, then a min filter as wide), which follows the light up to a soft shadow's edge, where the smoothed
    # max carried the lit side's light into the shadow and made strokes of it (a digit on a sheet with a soft
    # shadow across it was read with a 1 beside it, "4" -> "41"; /predict read 7 % of such photos wrong)
    k = max(3, round(min(lum.shape) / 3))  # wider than any stroke: the max filter sees paper everywhere
    brightest = ndi.maximum_filter(ndi.uniform_filter(lum, 3), size=k)
    ink = _flattened(lum, ndi.uniform_filter(brightest, size=k), floor_share)
    if float((ink >= INK_ON).mean()) > MAX_PAPER_INK:  # no paper with writing (noise, a texture): not twice
        return ink
    try:
        other = _flattened(lum, ndi.uniform_filter(ndi.minimum_filter(brightest, size=k), size=PAPER_SMOOTH), floor_share)
    except EmptyImageError:
        return ink
    pieces = _piece_sizes(other)
    if float(other.sum()) < float(ink.sum()) and 0 < len(pieces) <= len(_piece_sizes(ink)) and (
        pieces.max() >= CLOSED_STROKE * other.size
    ):
        return other
    return ink


def _piece_sizes(ink: np.ndarray) -> np.ndarray:
    """The size in pixels of each piece of connected ink (of at least INK_ON)."""
    labels, _ = ndi.label(ink >= INK_ON, structure=np.ones((3, 3), bool))
    return np.bincount(labels.ravel())[1:]


def _flattened(lum: np.ndarray, paper: np.ndarray, floor_share: float) -> np.ndarray:
    h, w = lum.shape
    darkness = without_frame(np.clip(1.0 - lum / np.maximum(paper, 1.0), 0.0, 1.0))  # (before its sides go as lines)
    across = _lines(darkness, max(15, int(0.5 * w)))  # longer than most digits' strokes
    down = _lines(darkness.T, max(15, int(0.8 * h))).T  # (both from the same picture: the first taken out
    core = _writing_core(darkness)  # (once for both directions)
    across = _ruled(across, core, axis=1, length=max(15, int(0.5 * w)) / w)  # left gaps where lines cross)
    down = _ruled(down, core, axis=0, length=max(15, int(0.8 * h)) / h)
    darkness = np.clip(darkness - np.maximum(across, down), 0.0, None)
    noise = float(np.percentile(darkness, 60))
    core = (
        float(np.percentile(darkness[darkness > noise + 0.05], 90))
        if (darkness > noise + 0.05).sum() > 8
        else 0.0
    )
    if core < 0.12:
        raise EmptyImageError("Nothing written: the photo shows no ink. Write a number and try again.")
    floor = max(noise + 0.04, floor_share * core)
    ink = np.clip((darkness - floor) / max(core - floor, 1e-3), 0.0, 1.0).astype(np.float32)
    ink = with_faint_digits(ink, darkness, noise + FAINT_ABOVE_NOISE)
    return without_scenery(without_border_strips(even_strokes(ink)))


def without_scenery(ink: np.ndarray) -> np.ndarray:
    """Ink less what is around the writing rather than written: a long thin stroke (the edge of the sheet
    against the desk, a shadow's edge, a wedge of desk beside a sheet shot at an angle) or a stroke that
    touches the picture's edge (a finger at a corner), at least SCENERY_SCALE times the size of the largest
    other stroke, or a filled shape at the edge SCENERY_THICK times thicker than the strokes (a finger at a
    corner: "2047" -> "102047"). They were read as 1s ("2047" -> "20471") or, being the tallest ink, made the digits look
    like marks beside them ("2047" -> "11")."""
    labels, n = ndi.label(ink >= INK_ON, structure=np.ones((3, 3), bool))
    if n < 2:
        return ink
    h, w = ink.shape
    m = max(4, round(0.02 * min(h, w)))
    boxes = ndi.find_objects(labels)
    tall = np.array([b[0].stop - b[0].start for b in boxes])
    wide = np.array([b[1].stop - b[1].start for b in boxes])
    size, short = np.maximum(tall, wide), np.minimum(tall, wide)
    touches = np.array([b[0].start < m or b[0].stop > h - m or b[1].start < m or b[1].stop > w - m for b in boxes])
    long_thin = (short <= 0.25 * size) & ((tall >= 0.3 * h) | (wide >= 0.3 * w))
    suspect = touches | long_thin
    if suspect.all() or not suspect.any():
        return ink
    largest = size[~suspect].max()
    drop = suspect & (size >= SCENERY_SCALE * largest)
    blob = touches & ~drop & (size >= 0.5 * largest)  # a filled shape at the edge? (measured only where it can be)
    if blob.any():
        strokes = np.flatnonzero(~suspect)
        if len(strokes) > THICK_SAMPLE:  # the pen's width from the largest strokes (a noisy photo has tens of
            strokes = strokes[np.argsort(size[strokes], kind="stable")[-THICK_SAMPLE:]]  # thousands of specks: 0.7 s)
        thick = {i: thickness(labels[boxes[i]] == i + 1) for i in {*np.flatnonzero(blob), *strokes}}
        writing = float(np.median([thick[i] for i in strokes]))
        drop[[i for i in np.flatnonzero(blob) if thick[i] >= SCENERY_THICK * writing]] = True
    if not drop.any():
        return ink
    return np.where(np.concatenate(([False], drop))[labels], 0.0, ink).astype(ink.dtype)


def _light_on_dark(lum: np.ndarray) -> bool:
    """Light writing on a dark surface: the surface (the median) is dark and the writing, the few pixels
    far from it, is lighter (an underexposed photo of paper is dark too, but its odd pixels are darker)."""
    low, mid, high = np.percentile(lum[::2, ::2], [0.5, 50, 99.5])
    return bool(mid < DARK_SURFACE and high - mid > 2.0 * (mid - low))


def _lines(darkness: np.ndarray, length: int) -> np.ndarray:
    """The lines along the rows of `darkness`, straight or turned by up to MAX_TURN degrees (notebook paper
    photographed a little turned: its lines were no line to a straight opening, and a 35 on it was refused
    as "140 separate marks"): the image is sheared so that the lines lie along the rows, opened there with a
    line of `length`, and what the opening kept is sheared back."""
    small = darkness[::2, ::2]  # the turn that gathers the most darkness into the fewest rows, by 0.25 degree
    # (by whole degrees, then finer: 2 and 1 calibration numbers fewer read right)
    best = max(np.arange(-MAX_TURN, MAX_TURN + 0.01, 0.25), key=lambda deg: _peakiness(small, deg))
    turn = float(np.tan(np.radians(best)))
    if abs(turn) < 1e-9 or abs(best) >= MAX_TURN:  # a peak at the range's end: no ruled lines within it (the
        # straight edges of a dark table beside a sheet turned 8 degrees: cut along 6, they stayed as wedges)
        return ndi.grey_opening(darkness, size=(1, length))
    sheared = _sheared(darkness, turn)
    # a turned line steps by a row where the shear does not: its rows joined (3 high) before the opening, and
    # only what is on the line itself kept
    lines = np.minimum(ndi.grey_opening(ndi.grey_dilation(sheared, size=(3, 1)), size=(1, length)), sheared)
    return _sheared(lines, -turn)


def _writing_core(darkness: np.ndarray) -> float | None:
    """The darkness of the writing's core (90th percentile above the noise); None when too little stands out."""
    noise = float(np.percentile(darkness, 60))
    strong = darkness[darkness > noise + 0.05]
    return float(np.percentile(strong, 90)) if strong.size > 8 else None


def _ruled(lines: np.ndarray, core: float | None, *, axis: int, length: float) -> np.ndarray:
    """`lines` less the lines that are writing: whole thin lines that end short of RULED_SPAN of the picture and of
    its edges, or the only one as dark as the writing (RULED_LIGHT). A digit's long stroke in a close photo (a 7's
    bar over half the width, a 1 over 0.8 of the height) was taken out as a ruled line: a 7 read a sure 1, and
    `/read` got 30 % of closely cropped photographed digits right. Paper's lines are lighter than the pen, or
    several and from edge to edge."""
    labels, n = ndi.label(lines >= LINE_SEEN, structure=np.ones((3, 3), bool))
    if n == 0:
        return lines
    if core is None or core < WRITING_CORE:  # no writing to compare with (a blank sheet's noise, flattened)
        return lines
    boxes = ndi.find_objects(labels)
    size = lines.shape[axis]
    span = np.array([(b[axis].stop - b[axis].start) / size for b in boxes])
    edge = max(2, round(0.02 * size))  # (a turned page's line leaves the picture through its top or bottom)
    at_edge = np.array([b[axis].start <= edge or b[axis].stop >= size - edge for b in boxes])
    across = np.array([b[axis].start <= edge and b[axis].stop >= size - edge for b in boxes])  # edge to edge
    other = 1 - axis  # a stroke is thin across; a shadow's flank, found as a "line" too, is not (it stays taken out)
    thin = np.array([b[other].stop - b[other].start for b in boxes]) <= 0.4 * span * size
    # (the rest: pieces of a faint line, broken where it fades into the noise)
    whole = (span >= 0.9 * length) & thin
    dark = np.zeros(n, bool)  # each whole line's own core (a soft, slanting 7's bar is dark only along its middle)
    for i in np.flatnonzero(whole):  # (each within its own box: a striped picture's hundreds cost one pass)
        box = boxes[i]
        dark[i] = np.percentile(lines[box][labels[box] == i + 1], 90) >= RULED_LIGHT * core
    # (a lone dark line from edge to edge is a notebook's margin, not a 1: a blank page read "11111111111111")
    writing = whole & (((span < RULED_SPAN) & ~at_edge) | (dark & (dark.sum() == 1) & ~across))
    if not writing.any():
        return lines
    return np.where(np.concatenate(([False], writing))[labels], 0.0, lines).astype(lines.dtype)


def _peakiness(a: np.ndarray, degrees: float) -> float:
    return float(np.square(_sheared(a, float(np.tan(np.radians(degrees)))).sum(axis=1)).sum())


def _sheared(a: np.ndarray, turn: float) -> np.ndarray:
    """Column x shifted by (x - centre) * turn rows (edge rows repeated): a line of that slope lies along a row."""
    h, w = a.shape
    shift = np.round((np.arange(w) - w / 2) * turn).astype(np.int64)
    return np.take_along_axis(a, np.clip(np.arange(h)[:, None] + shift[None, :], 0, h - 1), axis=0)


def with_faint_digits(ink: np.ndarray, darkness: np.ndarray, low: float) -> np.ndarray:
    """`ink` plus the digits written much fainter than the rest (a pencil beside a pen, a light stroke in a
    shadow), which the photo's ink floor, set by its darkest strokes, left out whole ("30" with a faint 0
    was read "3"): strokes of at least `low` darkness, as tall as FAINT_TALL of the tallest ink and apart
    from it, at full strength."""
    strong, n = ndi.label(ink >= INK_ON, structure=np.ones((3, 3), bool))
    if n == 0:
        return ink
    need = FAINT_TALL * max(sl[0].stop - sl[0].start for sl in ndi.find_objects(strong))
    labels, _ = ndi.label(darkness >= low, structure=np.ones((3, 3), bool))
    out = ink
    boxes = ndi.find_objects(labels)
    for index in [i for i, box in enumerate(boxes, start=1) if box[0].stop - box[0].start >= need]:
        box = boxes[index - 1]
        mine = labels[box] == index
        if strong[box][mine].any():  # a stroke of the writing with its soft edge: as it is
            continue
        values = darkness[box][mine]
        reference = float(np.quantile(values, STROKE_QUANTILE))
        out = ink.copy() if out is ink else out
        out[box][mine] = np.clip((values - low) / max(reference - low, 1e-3), 0.0, 1.0)
    return out


def even_strokes(ink: np.ndarray) -> np.ndarray:
    """Each faint stroke of a photo at full strength (`STROKE_LOW`, `STROKE_QUANTILE`); the rest as it is."""
    labels, n = ndi.label(ink >= STROKE_LOW, structure=np.ones((3, 3), bool))
    if n == 0:
        return ink
    inside = labels > 0
    stroke, value = labels[inside], ink[inside]
    ordered = value[np.lexsort((value, stroke))]  # by stroke, then by value
    counts = np.bincount(stroke, minlength=n + 1)[1:]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    reference = ordered[starts + np.floor(STROKE_QUANTILE * (counts - 1)).astype(np.int64)]
    strongest = ordered[starts + counts - 1]
    gain = np.where(strongest >= INK_ON, 1.0 / np.clip(reference, INK_ON, 1.0), 1.0)
    gain = np.concatenate(([1.0], gain)).astype(np.float32)
    return np.minimum(ink * gain[labels], 1.0)


def without_border_strips(ink: np.ndarray) -> np.ndarray:
    """Ink less the dark strips along the photo's edges: the table beside a sheet photographed a little
    turned, or the shadow of its edge, were read as 1s at both ends of every number ("2024" -> "120241").
    A strip lies along an edge (it touches the edge over at least half of its own length there) and is
    thin (reaching into the picture less than STRIP_DEPTH of its length); a digit cut by the edge touches
    it over the width of its strokes only."""
    labels, n = ndi.label(ink >= INK_ON, structure=np.ones((3, 3), bool))
    if n == 0:
        return ink
    h, w = ink.shape
    # "at the edge": within this many pixels of it (blur, JPEG; 2 % until session 26: the wedge of desk in the
    # corner of a sheet turned 5-8 degrees, whose part along the edge went as a ruled line, begins ~2 % in, and
    # every digit on a photo of such a sheet was read 2 or 5)
    m = max(4, round(0.04 * min(h, w)))
    drop = np.zeros(n + 1, bool)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        rows, cols = box
        if m <= cols.start and cols.stop <= w - m and m <= rows.start and rows.stop <= h - m:
            continue  # touches no edge (most strokes; thousands of specks in a noisy picture)
        mine = labels[box] == index
        length_v, length_h = mine.shape
        edges = (  # (touches this edge, rows or columns where it does, length along it, depth into the picture)
            (cols.start < m, mine[:, : max(0, m - cols.start)], 1, length_v, length_h),
            (cols.stop > w - m, mine[:, max(0, w - m - cols.start) :], 1, length_v, length_h),
            (rows.start < m, mine[: max(0, m - rows.start)], 0, length_h, length_v),
            (rows.stop > h - m, mine[max(0, h - m - rows.start) :], 0, length_h, length_v),
        )
        drop[index] = any(on and depth < STRIP_DEPTH * length and band.any(axis=axis).sum() >= 0.5 * length
                          for on, band, axis, length, depth in edges)  # fmt: skip
    if not drop.any():
        return ink
    return np.where(drop[labels], 0.0, ink).astype(ink.dtype)


def _working_rgba(image: Any, max_pixels: int | None) -> tuple[np.ndarray, float]:
    """(RGBA at working resolution, input pixels per working pixel)."""
    rgba, decoded = load_rgba(image, max_pixels=max_pixels)
    if rgba.shape[0] == 0 or rgba.shape[1] == 0:
        raise EmptyImageError("The image has no pixels.")
    factor = max(1, math.ceil(max(rgba.shape[:2]) / WORK_MAX))
    if factor > 1:
        rgba = np.asarray(Image.fromarray(np.ascontiguousarray(rgba), "RGBA").reduce(factor))
    return rgba, factor * decoded


def photo_ink(image: Any, *, max_pixels: int | None = None) -> np.ndarray | None:
    """A photo or scan of paper -> its ink at working resolution (flattened against its own light, ruled lines
    and the scene around the sheet out); None for an image that is no photo (a sheet framed by a plain desk is
    one) or whose strokes do not stand out. For `/predict`: every JPEG (a phone photo: the colour distance
    took a turned notebook page's lines, a desk or a finger for ink), and any picture its colour-distance ink
    finds "busy all over"."""
    rgba, _ = _working_rgba(image, max_pixels)
    if not is_photo(rgba) and not _framed_sheet(ink_map(rgba)):
        return None
    ink = flatten_photo(rgba, ONE_DIGIT_INK_FLOOR)
    return ink if _strokes_stand_out(ink) else None


def _framed_sheet(canvas_ink: np.ndarray) -> bool:
    """A photo of a sheet on a plain desk, though its border is one colour like a canvas's: the desk taken for
    the background makes the paper "ink" (`FRAMED_SHEET`)."""
    return float((canvas_ink >= INK_ON).mean()) > FRAMED_SHEET


def _strokes_stand_out(ink: np.ndarray) -> bool:
    """Writing on paper: a little ink, much of it in one stroke (a digit, or one digit of a number). Noise or a
    texture, flattened, is ink in thousands of bits (the largest under 10 % of all)."""
    mask = ink >= INK_ON
    coverage = float(mask.mean())
    if coverage == 0.0 or coverage > MAX_PAPER_INK:
        return False
    labels, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max()) >= MIN_STROKE_SHARE * float(sizes.sum())


def working_ink(
    image: Any, *, pen_color=None, background_color=None, max_pixels=None
) -> tuple[np.ndarray, float]:
    """(ink map at working resolution, input pixels per working pixel)."""
    rgba, factor = _working_rgba(image, max_pixels)
    try:
        return _ink_of(rgba, factor, pen_color, background_color)
    except EmptyImageError as exc:
        if str(exc) != NOTHING_DRAWN or factor < SHRUNK_AWAY or not np.ptp(rgba.reshape(-1, 4), axis=0).any():
            raise  # (a picture of one colour is blank at any size)
        # a 24000x1000 strip of digits in a 2 px pen came out blank, and was said to be blank (a probe, session 30)
        raise EmptyImageError(f"Nothing written can be seen once the picture is shrunk {factor:g} times to be read: "
                              "crop it around the number, or write with a thicker pen, and try again.") from exc  # fmt: skip


def _ink_of(rgba: np.ndarray, factor: float, pen_color, background_color) -> tuple[np.ndarray, float]:
    if is_photo(rgba) and pen_color is None:
        return flatten_photo(rgba), factor
    ink = ink_map(rgba, pen_color=pen_color, background_color=background_color)
    if pen_color is None and background_color is None and _framed_sheet(ink):
        return flatten_photo(rgba), factor
    ink = without_frame(ink)  # (before the ruled lines: a box's long sides went as lines, its short ones read 1s)
    return (ink if pen_color is not None else without_ruled_lines(ink)), factor


def without_ruled_lines(ink: np.ndarray) -> np.ndarray:
    """Ink less lines across nearly the whole image (a clean scan or screenshot of lined or squared
    paper: a single 7 on ruled lines was refused as "1638 ways to split it"). Along such a line only what
    crosses it stays: the strokes of the digits written over (or under) it."""
    out = ink
    for axis in (0, 1):  # horizontal lines (rows), then vertical ones (columns)
        across = np.flatnonzero((out > 0.2).mean(axis=1 - axis) > RULED_ACROSS)
        if not len(across):
            continue
        runs = np.split(across, np.flatnonzero(np.diff(across) > 1) + 1)
        out = out.copy() if out is ink else out
        for run in runs:
            k = 2 * len(run) + 3  # longer than the line is thick
            lo, hi = max(0, run[0] - 1), run[-1] + 2  # the line and its soft edges
            if axis == 0:
                band = out[max(0, lo - k) : hi + k]
                out[lo:hi] = _unline(band, (k, 1))[lo - max(0, lo - k) : hi - max(0, lo - k)]
            else:
                band = out[:, max(0, lo - k) : hi + k]
                out[:, lo:hi] = _unline(band, (1, k))[:, lo - max(0, lo - k) : hi - max(0, lo - k)]
    return out


def _unline(band: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Across a ruled line: close (a stroke the line was drawn over continues through it), then open (the
    line, thinner than `size`, goes)."""
    return ndi.grey_opening(ndi.grey_closing(band, size=size), size=size)
