"""Reading written numbers (`digitlab.segment`) with the bundled CNN: drawn cases of issue 16 point 2,
and a small slice of the real-handwriting numbers benchmark (`digitlab evaluate --numbers`)."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from PIL import Image

from digitlab.decode import EmptyImageError
from digitlab.detector.runtime import load_detector
from digitlab.line_reader import load_line_reader
from digitlab.models.registry import BUNDLED_DIR, load_model
from digitlab.segment import read_number
from digitlab.segment_verifier import load_segment_verifier
from drawn_numbers import draw_number


@pytest.fixture(scope="module", autouse=True)
def read_as_served():
    """`/read` gives every reading the line reader's second opinion (`segment_agree`): so do these tests."""
    global read_number
    plain = read_number
    read_number = functools.partial(plain, line_reader=load_line_reader(None))
    yield
    read_number = plain


@pytest.fixture(scope="module")
def cnn():
    return load_model("cnn", BUNDLED_DIR)


@pytest.fixture(scope="module")
def detector():
    return load_detector(None)


@pytest.fixture(scope="module")
def verifier():
    """The bundled segment verifier: `/read` scores every candidate with it."""
    return load_segment_verifier(None)


@pytest.mark.parametrize("text", ["2024", "307", "5", "1111", "4974"])
def test_reads_drawn_numbers(cnn, detector, verifier, text):
    reading = read_number(draw_number(text), cnn, detector, verifier=verifier)
    assert reading.text == text
    assert len(reading.digits) == len(text)


def test_boxes_are_left_to_right_in_input_pixels(cnn, detector, verifier):
    data = draw_number("2024")
    width, height = Image.open(io.BytesIO(data)).size
    reading = read_number(data, cnn, detector, verifier=verifier)
    xs = [d.box[0] for d in reading.digits]
    assert xs == sorted(xs)
    for d in reading.digits:
        x, y, w, h = d.box
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
        assert d.image28.shape == (28, 28)
        assert abs(sum(d.probabilities) - 1.0) < 1e-4


@pytest.mark.parametrize("gap", [0.02, -0.05])
def test_narrow_and_touching_gaps(cnn, detector, verifier, gap):
    text = "2390" if gap > 0 else "230"
    assert read_number(draw_number(text, gap=gap), cnn, detector, verifier=verifier).text == text


def test_slanted_writing(cnn, detector, verifier):
    assert read_number(draw_number("2047", slant=0.3), cnn, detector, verifier=verifier).text == "2047"


def test_comma_and_dot_are_not_digits(cnn, detector, verifier):
    def marks(pen, size):
        pen.ellipse([2.05 * size, 1.3 * size, 2.15 * size, 1.4 * size], fill="#1f2340")  # a dot after the 3rd
        pen.line([(1.3 * size, 1.35 * size), (1.25 * size, 1.5 * size)], fill="#1f2340", width=size // 10)

    reading = read_number(draw_number("230", extra=marks), cnn, detector, verifier=verifier)
    assert reading.text == "230"
    assert len(reading.dropped) >= 1


@pytest.mark.parametrize(("text", "slant"), [("1/2", 0.0), ("3/4", 0.0), ("12/5", 0.3)])
def test_a_slash_read_as_a_one_is_not_sure(cnn, detector, verifier, text, slant):
    """A slash is one thin stroke like a 1, and the CNN was sure of it ("1/2" read "112", nothing flagged); it
    leans apart from the writing: uncertain. Upright and slanted 1s among other digits stay sure."""
    reading = read_number(draw_number(text, slant=slant), cnn, detector, verifier=verifier)
    slash = text.index("/")
    assert reading.digits[slash].uncertain
    assert reading.uncertain


@pytest.mark.parametrize(("text", "slant"), [("11", 0.0), ("17", 0.0), ("1974", 0.0), ("1974", 0.3), ("2041", 0.3)])
def test_ones_that_lean_with_the_writing_stay_sure(cnn, detector, verifier, text, slant):
    reading = read_number(draw_number(text, slant=slant), cnn, detector, verifier=verifier)
    assert reading.text == text
    assert not any(d.uncertain for d in reading.digits if d.digit == 1)


@pytest.mark.parametrize("text", ["(5)", "(42)", "[7]", "[305]"])
def test_brackets_around_a_number_are_never_sure_digits(cnn, detector, verifier, text):
    """ "(5)" was read "151", every digit sure: a bracket is one stroke like a 1, but bowed away from what it
    encloses (`segment_pieces.bracketed`). Whatever a bracket is read as, it is not a sure digit."""
    reading = read_number(draw_number(text), cnn, detector, verifier=verifier)
    assert text[1:-1] in reading.text and reading.uncertain
    inner = reading.text.index(text[1:-1])
    assert all(d.uncertain for i, d in enumerate(reading.digits) if not inner <= i < inner + len(text) - 2)


@pytest.mark.parametrize("text", ["151", "1971", "10241"])
def test_a_number_from_one_to_one_is_not_bracketed(cnn, detector, verifier, text):
    reading = read_number(draw_number(text), cnn, detector, verifier=verifier)
    assert reading.text == text and not reading.uncertain


@pytest.mark.parametrize("text", ["27", "2024", "5"])
@pytest.mark.parametrize("colours", [{}, {"pen_color": "#1f2340", "background_color": "#ffffff"}])
def test_a_number_written_in_a_box_is_read_without_the_box(cnn, detector, verifier, text, colours):
    """A box drawn around a number: its long sides went as ruled lines and its short ones were read as 1s ("27"
    a sure "171"; 2 of 40 boxed real numbers read right), or it was refused as a scrawl. The box is left out
    (`segment_pieces.without_frame`), on the canvas (which sends its colours) and on an upload alike."""

    def box(pen, size):
        right, bottom = pen.im.size[0] - 0.2 * size, 1.62 * size
        wobble = [(0.22 * size, 0.16 * size), (right, 0.2 * size), (right - 0.03 * size, bottom), (0.2 * size, bottom - 0.02 * size)]
        pen.line([*wobble, wobble[0]], fill="#1f2340", width=int(0.08 * size), joint="curve")

    reading = read_number(draw_number(text, extra=box), cnn, detector, verifier=verifier, **colours)
    assert reading.text == text and not reading.uncertain


def test_a_zero_around_a_digit_is_not_taken_for_a_box(cnn, detector, verifier):
    """Only straight sides make a box: a ring drawn around a digit reaches ~65 % along each side of its box."""
    from digitlab.segment_pieces import without_frame

    ring = np.zeros((120, 120), np.float32)
    yy, xx = np.mgrid[:120, :120]
    ring[np.abs(np.hypot(yy - 60, xx - 60) - 50) < 4] = 1.0
    ring[40:80, 58:62] = 1.0  # a 1 inside
    assert without_frame(ring) is ring
    square = np.zeros((120, 120), np.float32)
    square[8:112, 8:112] = 1.0
    square[14:106, 14:106] = 0.0
    square[40:80, 58:62] = 1.0
    cleared = without_frame(square)
    assert cleared[8:14].max() == 0.0 and cleared[40:80, 58:62].min() == 1.0


@pytest.mark.parametrize("text", ["?", "42?", "1?", "!", "5!"])
@pytest.mark.parametrize("size", [80, 160])
def test_a_question_or_exclamation_mark_is_never_a_sure_digit(cnn, detector, verifier, text, size):
    """A "?" was read as a sure 7 and a "!" as a sure 1: a dot under a digit's strokes, apart from them, is
    no part of any digit (`segment_pieces.dot_below`)."""
    reading = read_number(draw_number(text, size=size), cnn, detector, verifier=verifier)
    assert reading.text[: len(text) - 1] == text[:-1]
    assert reading.digits[-1].uncertain and reading.uncertain
    assert not any(d.uncertain for d in reading.digits[: len(text) - 1])


@pytest.mark.parametrize("text", ["12.5", "7.", "3.14"])
def test_a_decimal_point_flags_no_digit(cnn, detector, verifier, text):
    """A point sits at the baseline beside a digit, not under its strokes: no "?" (1 of 854 calibration numbers
    read right has a dot under a digit)."""
    reading = read_number(draw_number(text), cnn, detector, verifier=verifier)
    assert reading.text == text.replace(".", "")
    assert not reading.uncertain


def test_a_dash_between_digits_is_left_out(cnn, detector, verifier):
    """A dash wider than half a digit ("20-25") was no mark and was read as a 2."""

    def dash(pen, size):
        pen.line([(2.65 * size, 0.9 * size), (3.2 * size, 0.9 * size)], fill="#1f2340", width=size // 10)

    reading = read_number(draw_number("2025", gap=0.75, extra=dash), cnn, detector, verifier=verifier)
    assert reading.text == "2025"
    assert len(reading.dropped) == 1


@pytest.mark.parametrize("wave", [0, 12])
def test_a_lone_line_is_no_number(cnn, detector, verifier, wave):
    """One line across the wide canvas (a dash, a finger swiping to scroll) was cut into slices a tenth of its
    thickness wide and read as "0000000000000000"."""
    from PIL import ImageDraw

    im = Image.new("RGB", (840, 280), "white")
    points = [(60 + 40 * i, 140 + (wave if i % 2 else -wave)) for i in range(10)]
    ImageDraw.Draw(im).line(points, fill="#1f2340", width=16, joint="curve")
    out = io.BytesIO()
    im.save(out, format="PNG")
    with pytest.raises(EmptyImageError, match="line"):
        read_number(out.getvalue(), cnn, detector, verifier=verifier)


@pytest.mark.parametrize(("width", "size"), [(840, 8), (840, 60), (280, 20), (280, 40)])
def test_a_lone_dot_is_no_number(cnn, detector, verifier, width, size):
    """A tap on the canvas was read as the number "0" (stored as a reading) where /predict says the image holds
    nothing but a dot: the same rule (`preprocess.DOT_RATIO`, `DOT_MAX_REL`) now holds on /read."""
    from PIL import ImageDraw

    im = Image.new("RGBA", (width, 280), (0, 0, 0, 0))
    x, r = width // 2, size // 2
    ImageDraw.Draw(im).ellipse([x - r, 140 - r, x + r, 140 + r], fill=(0, 0, 0, 255))
    out = io.BytesIO()
    im.save(out, format="PNG")
    with pytest.raises(EmptyImageError, match="dot"):
        read_number(out.getvalue(), cnn, detector, verifier=verifier)


@pytest.mark.parametrize("shape", ["rectangle", "ellipse"])
def test_a_filled_shape_is_not_a_sure_number(cnn, detector, verifier, shape):
    """A filled square was cut into slices read as a sure "111" (`/predict` flags it): ink as thick as a third of
    its height is a blot, not writing (`segment_pieces.BLOT`). A number in a thick pen stays sure."""
    from PIL import ImageDraw

    im = Image.new("RGB", (840, 280), "white")  # (a smaller one is refused as a dot, like on /predict)
    getattr(ImageDraw.Draw(im), shape)([250, 40, 550, 240], fill="#1f2340")
    out = io.BytesIO()
    im.save(out, format="PNG")
    reading = read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert reading.uncertain and all(d.uncertain for d in reading.digits), reading.text
    marker = read_number(draw_number("42", size=120, pen_width=0.25), cnn, detector, verifier=verifier)
    assert marker.text == "42" and not marker.uncertain


def test_blank_image_is_empty(cnn):
    out = io.BytesIO()
    Image.new("RGB", (600, 200), "white").save(out, format="PNG")
    with pytest.raises(EmptyImageError):
        read_number(out.getvalue(), cnn)


def test_numbers_benchmark_slice(cnn, detector, verifier):
    """A CI-sized slice of `digitlab evaluate --numbers` (USPS test + held-out Semeion, canvas + photos)."""
    from digitlab.evaluation.numbers import number_samples, score

    samples = number_samples(20, seed=3)
    assert {len(s.text) for s in samples} <= {2, 3, 4, 5, 6}
    assert any(s.photo for s in samples) and any(not s.photo for s in samples)
    texts = [read_number(s.image, cnn, detector, verifier=verifier).text for s in samples]
    result = score(samples, texts)
    assert result["all"]["numbers"] == 20
    assert result["all"]["digit_accuracy"] >= 0.7, result


def test_numbers_benchmark_holds_out_what_the_models_train_on():
    """The benchmark's digits are the `heldout` part of `evaluate --real`, never the `fit` part that
    `digitlab train` and `digitlab train cnn` learn from (nor the calibration part it is tuned on)."""
    from digitlab.core.config import Settings
    from digitlab.evaluation.numbers import calibration_digits, held_out_digits
    from digitlab.evaluation.real import load_part

    directory = Settings().handwriting_path
    images, labels, sources = held_out_digits(directory)
    tuned = {im.tobytes() for im in calibration_digits(directory)[0]}
    for name in ("usps", "semeion"):
        trained = {im.tobytes() for im in load_part(name, "fit", directory)[0]}
        mine = [im.tobytes() for im, source in zip(images, sources, strict=True) if source == name]
        assert mine and not (set(mine) & trained), name
        assert not (set(mine) & tuned), name
    assert len(images) == len(labels) == len(sources)


def test_a_currency_sign_is_never_a_confident_digit(cnn, detector, verifier):
    def dollar(pen, size):  # an S crossed by a long vertical bar, left of the digits
        s = [(0.9, 0.15), (0.5, 0.0), (0.1, 0.2), (0.5, 0.5), (0.9, 0.75), (0.5, 1.0), (0.1, 0.85)]
        pen.line([(0.05 * size + 0.45 * size * x, 0.4 * size + size * y) for x, y in s], fill="#1f2340",
                 width=size // 10, joint="curve")  # fmt: skip
        pen.line([(0.28 * size, 0.25 * size), (0.28 * size, 1.55 * size)], fill="#1f2340", width=size // 10)

    reading = read_number(draw_number("42", lead=0.6, extra=dollar), cnn, detector, verifier=verifier)
    assert reading.text[-2:] == "42"
    if len(reading.text) == 3:  # read, then it must be flagged: never silently a digit
        assert reading.digits[0].uncertain and reading.uncertain  # (by the detector or the joint score)
    else:
        assert len(reading.dropped) == 1 and reading.dropped[0][0] < reading.digits[0].box[0]


def test_more_digits_than_a_number_holds_is_refused(cnn, detector, verifier, monkeypatch):
    from digitlab import segment

    image = draw_number("2024")
    assert read_number(image, cnn, detector, verifier=verifier).text == "2024"
    monkeypatch.setattr(segment, "MAX_DIGITS", 3)
    with pytest.raises(segment.NotANumberError, match="4 digit-like marks"):
        read_number(image, cnn, detector, verifier=verifier)


def test_too_many_ways_to_split_is_refused_before_the_work(cnn, detector, verifier, monkeypatch):
    """Each candidate is preprocessed and classified: a crafted image of a few KB cost /read 3-4 s of CPU
    before it was refused. The count is checked first; nothing is preprocessed."""
    from digitlab import segment

    image = draw_number("2024")
    monkeypatch.setattr(segment, "MAX_WORK", 3)
    preprocessed = []
    monkeypatch.setattr(segment, "to_mnist", lambda crop: preprocessed.append(crop))
    with pytest.raises(segment.NotANumberError, match="could be cut into digits"):
        read_number(image, cnn, detector, verifier=verifier)
    assert preprocessed == []


@pytest.mark.parametrize("over", [False, True])
def test_a_number_on_clean_lined_paper_is_read(cnn, detector, verifier, over):
    """A screenshot or clean scan of lined paper is no photo (one exact background colour at its border),
    so its pale ruled lines were ink: a single 7 was refused as "1638 ways to split it". Lines under the
    ink (written on paper) or over it (drawn on top in an editor) are left out, the digits kept."""
    from PIL import ImageDraw

    im = Image.open(io.BytesIO(draw_number("2047"))).convert("RGB")
    lines = Image.new("RGB", im.size, "white")
    for y in range(12, im.height, 36):
        ImageDraw.Draw(lines).line([(0, y), (im.width, y)], fill="#9db4e8", width=2)
    ink = Image.eval(im.convert("L"), lambda v: 255 if v < 128 else 0)  # where the digits are
    on_paper = Image.composite(im, lines, ink)  # ink over the lines
    drawn_over = on_paper.copy()
    if over:  # the same lines drawn on top of the ink
        for y in range(12, im.height, 36):
            ImageDraw.Draw(drawn_over).line([(0, y), (im.width, y)], fill="#9db4e8", width=2)
    out = io.BytesIO()
    (drawn_over if over else on_paper).save(out, format="PNG")
    assert read_number(out.getvalue(), cnn, detector, verifier=verifier).text == "2047"


@pytest.mark.parametrize(("text", "turn"), [("2024", 4), ("1974", -8), ("45", 6), ("7", 3)])
def test_a_photo_turned_on_a_dark_table_is_read_without_its_edges(cnn, detector, verifier, text, turn):
    """A sheet photographed a little turned shows strips of the dark table along the picture's edges: each was
    read as a sure 1 at both ends of the number ("2024" -> "120241", a lone 7 -> "171")."""
    import numpy as np
    from PIL import ImageFilter

    written = Image.open(io.BytesIO(draw_number(text, size=200))).convert("L")
    paper = Image.new("RGB", (max(900, written.width + 300), 700), (236, 230, 214))
    ink = Image.eval(written, lambda v: 255 if v < 128 else 0)
    paper.paste(Image.new("RGB", written.size, (30, 40, 120)), (150, 180), ink)
    photo = np.asarray(paper.rotate(turn, resample=Image.BICUBIC, fillcolor=(60, 60, 60))).astype(np.float32)
    h, w = photo.shape[:2]
    photo *= (1.0 - 0.5 * np.clip(np.mgrid[0:h, 0:w][1] / w * 0.6 + np.mgrid[0:h, 0:w][0] / h * 0.7 - 0.35, 0, 1))[..., None]
    out = io.BytesIO()
    Image.fromarray(photo.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)).save(out, "JPEG", quality=70)
    assert read_number(out.getvalue(), cnn, detector, verifier=verifier).text == text


def _photo_with_a_lighter_digit(text: str, light: int, colour: tuple[int, int, int], share: float = 1.0) -> bytes:
    """A phone photo of `text` on cream paper in dark blue ink, the left `share` of its digit `light` in
    `colour` (all of it by default), with a shadow."""
    from PIL import ImageFilter

    paper = Image.new("RGB", (1500, 500), (236, 230, 214))
    x = 150
    for i, ch in enumerate(text):
        written = Image.open(io.BytesIO(draw_number(ch, size=160))).convert("L")
        ink = np.asarray(written) < 128
        columns = np.flatnonzero(ink.any(axis=0))
        lighter = ink & (np.arange(ink.shape[1]) < columns[0] + share * (columns[-1] - columns[0]) + 1)[None, :]
        lighter &= i == light
        for part, fill in ((ink & ~lighter, (30, 40, 120)), (lighter, colour)):
            paper.paste(Image.new("RGB", written.size, fill), (x, 120), Image.fromarray(part.astype(np.uint8) * 255))
        x += int(written.width * 0.75)
    a = np.asarray(paper).astype(np.float32)
    h, w = a.shape[:2]
    a *= (1.0 - 0.35 * np.clip(np.mgrid[0:h, 0:w][1] / w - 0.3, 0, 1))[..., None]
    out = io.BytesIO()
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)).save(out, "JPEG", quality=75)
    return out.getvalue()


@pytest.mark.parametrize(("text", "light"), [("30", 1), ("45", 0), ("2047", 2)])
@pytest.mark.parametrize("colour", [(160, 160, 175), (180, 180, 190)])
def test_a_digit_written_lighter_on_a_photo_is_read(cnn, detector, verifier, text, light, colour):
    """The photo's ink floor is set by its darkest strokes: a digit in a lighter ink (a pencil beside a pen)
    was left out whole ("30" read "3", "45" "5")."""
    reading = read_number(_photo_with_a_lighter_digit(text, light, colour), cnn, detector, verifier=verifier)
    assert reading.text == text


@pytest.mark.parametrize(("text", "light", "colour"), [("34", 1, (160, 160, 175)), ("14", 1, (175, 175, 188)),
                                                       ("249", 1, (160, 160, 175))])  # fmt: skip
def test_a_digit_written_partly_lighter_on_a_photo_is_read_whole(cnn, detector, verifier, text, light, colour):
    """The photo's ink floor (`segment_ink.INK_FLOOR` of its darkest strokes) took a 4's lighter strokes out
    (a pen running dry, a lighter touch): the stroke left was a 1 ("34" read "31", "249" "219")."""
    photo = _photo_with_a_lighter_digit(text, light, colour, share=0.65)
    assert read_number(photo, cnn, detector, verifier=verifier).text == text


@pytest.mark.parametrize(("digit", "wide"), [("5", 1.1), ("2", 1.5), ("0", 1.3), ("7", 1.3)])
def test_one_big_digit_written_wide_is_one_digit(cnn, detector, verifier, digit, wide):
    """One digit, drawn big and wider than tall on the wide canvas: a 5 of 1.1 heights was read as "55", a 2
    of 1.5 heights as "22" (each half is a fair digit, and cutting was cheaper than one wide digit)."""
    from PIL import ImageDraw

    from drawn_numbers import STROKES

    im = Image.new("RGB", (840, 280), "white")
    pen, h = ImageDraw.Draw(im), 200
    w = wide * h
    for stroke in STROKES[digit]:
        pen.line([((840 - w) / 2 + x * w, 40 + y * h) for x, y in stroke], fill="#1F2340", width=18, joint="curve")
    out = io.BytesIO()
    im.save(out, format="PNG")
    assert read_number(out.getvalue(), cnn, detector, verifier=verifier).text == digit


@pytest.mark.parametrize(("canvas", "w", "h"), [((840, 280), 300, 200), ((840, 280), 330, 220), ((800, 600), 600, 400)])
@pytest.mark.parametrize("crossed", [False, True])
def test_a_seven_drawn_wider_than_a_digit_is_one_sure_seven(cnn, detector, verifier, canvas, w, h, crossed):
    """A 7 drawn in one stroke 1.4-1.5 times wider than tall was read "77" (sure on a 600x400 one) or "72": no run
    of a cut stroke's slices wider than 1.25 heights was a candidate, so the whole stroke never was one either."""
    from PIL import ImageDraw

    im = Image.new("RGB", canvas, "white")
    pen = ImageDraw.Draw(im)
    x0, y0 = (canvas[0] - w) // 2, (canvas[1] - h) // 2
    pen.line([(x0, y0), (x0 + w, y0), (x0 + int(0.45 * w), y0 + h)], fill="#1F2340", width=16, joint="curve")
    if crossed:
        pen.line([(x0 + w // 2, y0 + h // 2), (x0 + int(0.9 * w), y0 + h // 2)], fill="#1F2340", width=16)
    out = io.BytesIO()
    im.save(out, format="PNG")
    reading = read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert (reading.text, reading.uncertain) == ("7", False)


@pytest.mark.parametrize(("source", "index"), [("mnist", 245), ("mnist", 998), ("usps", 1367), ("usps", 1896),
                                              ("semeion", 790), ("semeion", 548)])  # fmt: skip
def test_one_real_digit_on_the_canvas_is_one_digit(cnn, detector, verifier, handwriting_dir, mnist_dir, source, index):
    """One real handwritten digit in one stroke, a little wider than tall, on the square canvas: `/read` said "33",
    "22", "77" or "65", sure, where `/predict` read it right (an API probe, session 33: 7 of 400 MNIST, 7 of 200
    USPS, 7 of 200 Semeion). A writing that is one stroke is most likely one digit (`segment.STROKE_BONUS`)."""
    import numpy as np

    from digitlab.data import load_mnist

    if source == "mnist":
        images, labels = load_mnist("test", directory=mnist_dir, limit=index + 1)
        canvas = Image.fromarray(255 - images[index]).resize((280, 280), Image.BILINEAR)
    else:
        data = np.load(handwriting_dir / f"{source}.npz")
        images, labels = (data["test_images"], data["test_labels"]) if source == "usps" else (data["images"], data["labels"])
        canvas = Image.new("L", (280, 280), 255)
        canvas.paste(Image.fromarray(255 - images[index]).resize((200, 200), Image.BILINEAR), (40, 40))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    reading = read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert reading.text == str(int(labels[index])), reading.text


def test_a_large_jpeg_is_read_at_a_reduced_scale_with_boxes_in_its_own_pixels(cnn, detector, verifier):
    """A phone photo of 5000 px is decoded at 1/4 scale (it took ~1 s and ~370 MB in full); the boxes are
    still in the uploaded image's pixels."""
    small = Image.open(io.BytesIO(draw_number("2047", size=300))).convert("RGB")
    scale = 4
    big = small.resize((small.width * scale, small.height * scale), Image.BICUBIC)
    readings = []
    for im in (small, big):
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=90)
        readings.append(read_number(out.getvalue(), cnn, detector, verifier=verifier))
    assert readings[0].text == readings[1].text == "2047"
    for a, b in zip(readings[0].digits, readings[1].digits, strict=True):
        assert abs(b.box[0] - scale * a.box[0]) <= 2 * scale * 3
        assert abs(b.box[2] - scale * a.box[2]) <= 2 * scale * 3


def test_digits_written_one_above_another_are_not_sure(cnn, detector, verifier):
    """/read reads one line: 1, 2 and 3 stacked were read as "33", sure and unflagged. Whatever it reads of
    them now, it says it is not sure."""
    rows = [Image.open(io.BytesIO(draw_number(d, size=100))).convert("RGB") for d in "123"]
    width = max(r.width for r in rows)
    stacked = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        stacked.paste(r, (0, y))
        y += r.height
    out = io.BytesIO()
    stacked.save(out, format="PNG")
    reading = read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert reading.uncertain and all(d.uncertain for d in reading.digits), reading.text
    side_by_side = read_number(draw_number("123", size=100), cnn, detector, verifier=verifier)
    assert side_by_side.text == "123" and not any(d.uncertain for d in side_by_side.digits)


@pytest.mark.parametrize(("upper", "lower"), [("703", "5730"), ("12", "45")])
def test_two_lines_of_numbers_are_not_sure(cnn, detector, verifier, upper, lower):
    """Two numbers one under the other were read interleaved ("703" over "5730": "5770330"), nothing flagged."""
    rows = [Image.open(io.BytesIO(draw_number(t, size=100))).convert("RGB") for t in (upper, lower)]
    page = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    page.paste(rows[0], (0, 0))
    page.paste(rows[1], (0, rows[0].height))
    out = io.BytesIO()
    page.save(out, format="PNG")
    reading = read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert reading.uncertain and all(d.uncertain for d in reading.digits), reading.text


def test_the_numbers_benchmark_command_prints_empty_slices(tmp_path, capsys, monkeypatch, handwriting_dir):
    """`digitlab evaluate --numbers --count 2` crashed with a KeyError (a traceback): with fewer than five
    numbers some gap kinds have none. Their cells are a dash."""
    from digitlab.evaluation.numbers import evaluate_numbers_command

    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(tmp_path))  # empty: the bundled CNN only
    monkeypatch.setenv("DIGITLAB_HANDWRITING_DIR", str(handwriting_dir))
    assert evaluate_numbers_command(["cnn"], as_json=False, count=2, seed=0) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("cnn")]
    assert row.count("–") >= 3 and row.count("–") + row.count("%") == 8, out  # 2 numbers: 2 of the 5 gap kinds


def _face(eyes: float, mouth: float, face: float = 0.42, pen: int = 8, dotted_zero: bool = False) -> bytes:
    """A smiley on the Number canvas (840 x 280): a round face, two dot eyes, a small smile (or, `dotted_zero`, a
    0 with a dot in it)."""
    import math

    from PIL import ImageDraw

    im = Image.new("RGB", (840, 280), "white")
    draw = ImageDraw.Draw(im)
    size, ox, oy = 224, (840 - 224) / 2, 28

    def arc(cx, cy, rx, ry, a0, a1, n=24):
        return [(ox + size * (cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n))),
                 oy + size * (cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)))) for i in range(n + 1)]  # fmt: skip

    strokes = [arc(0.5, 0.5, face * 0.8 if not dotted_zero else 0.25, face, 0, 360)]
    if dotted_zero:
        strokes.append(arc(0.5, 0.5, 0.01, 0.01, 0, 360, n=4))
    else:
        strokes += [arc(0.4, 0.4, eyes, eyes, 0, 360, n=8), arc(0.6, 0.4, eyes, eyes, 0, 360, n=8),
                    arc(0.5, 0.58, mouth, mouth * 0.8, 20, 160)]  # fmt: skip
    for points in strokes:
        draw.line(points, fill="#1f2340", width=pen, joint="curve")
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(("face", "eyes", "mouth"), [(0.35, 0.005, 0.08), (0.42, 0.005, 0.08), (0.42, 0.02, 0.12)])
def test_a_smiley_read_as_a_zero_is_not_sure(cnn, detector, verifier, face, eyes, mouth):
    """A smiley on the Number page was "0, 100 % sure of the whole number", its eyes and mouth left out as marks
    that are no digits (a newcomer's tour, session 31), where Draw flags it. Strokes inside a digit's stroke
    make it a face: not sure. A 0 with a dot in it (a dotted zero) stays a sure 0."""
    reading = read_number(_face(eyes, mouth, face), cnn, detector, verifier=verifier)
    assert reading.uncertain, (reading.text, [d.confidence for d in reading.digits])
    zero = read_number(_face(0, 0, dotted_zero=True), cnn, detector, verifier=verifier)
    assert (zero.text, zero.uncertain) == ("0", False)


@pytest.mark.parametrize("background", [(0, 0, 0), (30, 60, 150)])
def test_a_number_cut_out_of_an_opaque_picture_is_read(cnn, detector, verifier, background):
    """Transparent strokes on an opaque black or blue picture show white on a page: "2024", not blank (or a sure 1
    from a sliver: a probe, session 34)."""
    drawn = np.asarray(Image.open(io.BytesIO(draw_number("2024"))).convert("L")) < 128
    cut = np.zeros((*drawn.shape, 4), np.uint8)
    cut[..., :3] = background
    cut[..., 3] = np.where(drawn, 0, 255)
    out = io.BytesIO()
    Image.fromarray(cut, "RGBA").save(out, format="PNG")
    reading = read_number(out.getvalue(), cnn, detector, verifier=verifier)
    assert reading.text == "2024" and not reading.uncertain
