"""The work of reading a number is bounded before it is done (`segment.MAX_WORK`): a few-KB scrawl (a zig-zag
line, tall strokes, hatching, dots) cost /read 1-3 s of CPU, answered or refused; it is now refused with
`not_a_number` before any candidate digit is preprocessed or classified, while real numbers stay well within."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab import segment, segment_runs
from digitlab.detector.runtime import load_detector
from digitlab.models.registry import BUNDLED_DIR, load_model
from digitlab.segment import MAX_WORK, NotANumberError, digit_runs, read_number
from digitlab.segment_ink import working_ink
from digitlab.segment_pieces import pieces_of
from digitlab.segment_verifier import load_segment_verifier
from drawn_numbers import draw_number


def _png(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def zigzag(teeth: int, width: int = 1200, height: int = 200, pen: int = 3) -> bytes:
    im = Image.new("L", (width, height), 255)
    points = [(10 + i * (width - 20) / teeth, 10 if i % 2 else height - 10) for i in range(teeth + 1)]
    ImageDraw.Draw(im).line(points, fill=0, width=pen)
    return _png(im)


def strokes(count: int, width: int = 800, height: int = 800, pen: int = 4, slant: float = 0.0) -> bytes:
    """`count` tall strokes side by side (not across the whole image: those would be ruled lines)."""
    im = Image.new("L", (width, height), 255)
    pen_ = ImageDraw.Draw(im)
    for i in range(count):
        x = 20 + i * (width - 40 - slant * height) / max(1, count - 1)
        pen_.line([(x, 0.1 * height), (x + slant * 0.75 * height, 0.85 * height)], fill=0, width=pen)
    return _png(im)


def dots(count: int, width: int = 1200, height: int = 200) -> bytes:
    im = Image.new("L", (width, height), 255)
    pen = ImageDraw.Draw(im)
    for x, y in np.random.default_rng(0).uniform((5, 5), (width - 5, height - 5), (count, 2)):
        pen.ellipse([x - 3, y - 3, x + 3, y + 3], fill=0)
    return _png(im)


@pytest.fixture(scope="module")
def reader():
    return load_model("cnn", BUNDLED_DIR), load_detector(None), load_segment_verifier(None)


@pytest.fixture
def work(monkeypatch) -> dict[str, int]:
    """How many candidate crops are preprocessed and how many images classified."""
    done = {"preprocessed": 0, "classified": 0}
    to_mnist, predict = segment.to_mnist, segment.predict_with_opinion

    def counted_to_mnist(crop):
        done["preprocessed"] += 1
        return to_mnist(crop)

    def counted_predict(model, X):
        done["classified"] += len(X)
        return predict(model, X)

    monkeypatch.setattr(segment, "to_mnist", counted_to_mnist)
    monkeypatch.setattr(segment, "predict_with_opinion", counted_predict)
    return done


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        pytest.param(zigzag(100), r"cut into digits \d{3} ways", id="zigzag"),  # was read as "0000000": 2 s
        pytest.param(strokes(24), "could be cut into digits", id="tall-strokes"),  # 245 large crops: 2.4 s
        pytest.param(zigzag(100, 800, 400), "could be cut into digits", id="zigzag-large"),  # 161 large crops: 1.4 s
        pytest.param(strokes(60, 1200, 200, 3, slant=0.3), "at least 60 digit-like marks", id="hatching"),
        pytest.param(dots(120), "digit-like marks", id="dots"),  # refused only after 149 candidates were read
    ],
)
def test_a_scrawl_is_refused_before_the_work(reader, work, image, reason):
    """Refused with the reason in one line, before any candidate is preprocessed or classified."""
    cnn, detector, verifier = reader
    with pytest.raises(NotANumberError, match=reason) as refused:
        read_number(image, cnn, detector, verifier=verifier)
    assert work == {"preprocessed": 0, "classified": 0}
    assert "\n" not in str(refused.value)


def test_large_crops_count_as_more_work():
    """Under the budget in candidates alone, over it in work: each of these crops costs ~5 candidates."""
    ink, _ = working_ink(strokes(24))
    pieces, height, _ = pieces_of(ink)
    runs = digit_runs(pieces, height)
    assert len(runs) <= MAX_WORK < segment_runs.work(runs, pieces)


@pytest.mark.parametrize(
    ("text", "gap"), [("2024", 0.3), ("12345790123457901234579012345790", 0.02), ("2390", -0.05)]
)
def test_drawn_numbers_are_read_within_the_budget(reader, work, text, gap):
    """32 digits, or touching ones, are far from the budget."""
    cnn, detector, verifier = reader
    assert read_number(draw_number(text, gap=gap), cnn, detector, verifier=verifier).text == text
    assert 0 < work["preprocessed"] <= MAX_WORK / 4


def test_the_numbers_benchmark_is_well_within_the_budget(handwriting_dir):
    """`digitlab evaluate --numbers` reads as before: its heaviest number (of its 300; among these first 100)
    needs 208 of the 300. Of 6000 such numbers 5 need more, all read wrong."""
    from digitlab.evaluation.numbers import number_samples

    need = []
    for sample in number_samples(100, directory=handwriting_dir):
        ink, _ = working_ink(sample.image)
        pieces, height, _ = pieces_of(ink)
        need.append(segment_runs.work(digit_runs(pieces, height), pieces))
    assert 150 < max(need) < 0.8 * MAX_WORK, max(need)


def test_squared_paper_is_refused_before_its_cells_are_measured(reader, monkeypatch):
    """A 12 KB 1-bit PNG of squared paper (5000 px, a line every 25 px: 40,000 cells) cost /read 6-10 s of CPU
    to refuse, each cell measured and given its candidate cuts first (a probe, session 30). The strokes are
    counted before any is measured."""
    from digitlab import segment_pieces

    grid = np.ones((2000, 2000), bool)
    grid[::25, :] = grid[:, ::25] = False
    out = io.BytesIO()
    Image.fromarray(grid).convert("1").save(out, format="PNG", optimize=True)
    measured = []
    cuts = segment_pieces._cuts
    monkeypatch.setattr(segment_pieces, "_cuts", lambda *a, **k: measured.append(1) or cuts(*a, **k))
    cnn, detector, verifier = reader
    with pytest.raises(NotANumberError, match=r"\d+ separate marks"):
        read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert measured == []


def test_thin_writing_shrunk_away_is_not_called_blank():
    """A 24000x1000 strip of digits in a 2 px pen is shrunk 30 times to be read and comes out blank: it was
    "the image is blank" (a probe, session 30). It says why, and what to do; a blank picture stays blank."""
    from digitlab.decode import EmptyImageError
    from digitlab.segment import segmented

    def strip(pen: int) -> bytes:
        im = Image.new("L", (24000, 1000), 255)
        draw = ImageDraw.Draw(im)
        for x in range(50, 23500, 600) if pen else ():
            draw.line([(x + 100, 150), (x + 100, 850)], fill=0, width=pen)
            draw.ellipse([x + 200, 200, x + 450, 800], outline=0, width=pen)
        out = io.BytesIO()
        im.save(out, format="PNG")
        return out.getvalue()

    with pytest.raises(EmptyImageError, match="shrunk 30 times to be read: crop it around the number, or write"):
        segmented(strip(2))
    with pytest.raises(EmptyImageError, match="the image is blank"):
        segmented(strip(0))
