"""The line reader (`digitlab.line_reader`): a whole written number read without cuts by a CTC network, and
how `segment.read_number` takes its opinion (`digitlab.segment_agree`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from digitlab.detector.runtime import load_detector
from digitlab.evaluation.numbers import number_samples
from digitlab.line_reader import (
    CORE,
    LINE_READER_NAME,
    ROWS,
    LineReader,
    best_text,
    digit_frames,
    frame_columns,
    line_input,
    load_line_reader,
    text_log_probability,
)
from digitlab.models.artifacts import ArtifactError
from digitlab.models.registry import BUNDLED_DIR, load_model
from digitlab.segment import read_number
from digitlab.segment_agree import agree, line_pieces, reading_of, unmatched
from digitlab.segment_ink import working_ink
from digitlab.segment_pieces import Piece
from digitlab.segment_verifier import load_segment_verifier
from drawn_numbers import draw_number


def spelled(text: str, frames_per_digit: int = 4, sure: float = 0.98) -> np.ndarray:
    """Frames a reader would give for `text`: each digit over a few frames, blanks around and between."""
    classes = [0, 0]
    for ch in text:
        classes += [int(ch) + 1] * (frames_per_digit - 2) + [0, 0]
    frames = np.full((len(classes), 11), (1 - sure) / 10)
    frames[np.arange(len(classes)), classes] = sure
    return np.log(frames)


def test_the_text_probability_is_ctcs(cnn_torch):
    """`text_log_probability` is CTC's forward algorithm: equal to PyTorch's CTC loss, repeats included."""
    torch, F = cnn_torch
    rng = np.random.default_rng(0)
    for text in ["", "7", "11", "1234", "9009", "111", "80"]:
        frames = torch.log_softmax(torch.tensor(rng.normal(0, 2, (20, 11))), -1)
        if text:
            want = -float(F.ctc_loss(frames[:, None, :], torch.tensor([[int(c) + 1 for c in text]]),
                                     torch.tensor([20]), torch.tensor([len(text)]), reduction="sum"))  # fmt: skip
        else:
            want = float(frames[:, 0].sum())
        assert text_log_probability(frames.numpy(), text) == pytest.approx(want, rel=1e-9, abs=1e-9)


@pytest.fixture(scope="module")
def cnn_torch():
    torch = pytest.importorskip("torch")  # the `cnn` extra: CI installs it
    import torch.nn.functional as F

    return torch, F


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    assert best_text(spelled("1123")) == "1123"  # a blank between two 1s keeps both
    frames = np.log(np.eye(11)[[0, 2, 2, 0, 2, 3, 3, 0, 0]] + 1e-9)
    assert best_text(frames) == "112"
    assert best_text(np.log(np.eye(11)[[0, 0, 0]] + 1e-9)) == ""


def test_the_input_is_the_inks_box_scaled_to_the_core_rows():
    ink = np.zeros((300, 900), np.float32)
    ink[100:200, 50:351] = 1.0  # 100 rows x 301 columns of ink
    x = line_input(ink)
    assert x.shape[0] == ROWS and x.shape[1] % 2 == 0
    rows = np.flatnonzero(x.max(axis=1) > 0.5)
    cols = np.flatnonzero(x.max(axis=0) > 0.5)
    assert len(rows) == CORE and abs(len(cols) - round(301 * CORE / 100)) <= 1
    with pytest.raises(ValueError):
        line_input(np.zeros((10, 10), np.float32))


@pytest.fixture(scope="module")
def bundled():
    return load_line_reader(None)


def test_the_bundled_reader_reads_numbers_it_never_saw(bundled, handwriting_dir):
    """Calibration numbers (digits no model trains on), read alone: most right, whatever the gap."""
    samples = number_samples(40, seed=11, directory=handwriting_dir, part="calibration")
    right = [best_text(bundled.frames(working_ink(s.image)[0])) == s.text for s in samples]
    assert np.mean(right) >= 0.75, np.mean(right)


def test_a_changed_reader_file_is_refused(tmp_path):
    for suffix in ("json", "onnx"):
        shutil.copy(BUNDLED_DIR / f"{LINE_READER_NAME}.{suffix}", tmp_path)
    path = tmp_path / f"{LINE_READER_NAME}.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_line_reader(tmp_path)


# --- the second opinion in read_number ----------------------------------------------------------------


class Spelling:
    """A stand-in line reader that reads every line as `text`."""

    def __init__(self, text: str, sure: float = 0.98):
        self.text, self.sure = text, sure

    def frames(self, ink):
        return spelled(self.text, sure=self.sure)


def test_reading_of_a_text_scores_each_candidate_as_its_digit():
    spans = [(0, 1), (1, 2), (0, 2)]  # two pieces: each alone, or both as one digit
    proba = np.full((3, 10), 0.01)
    proba[0, 4], proba[1, 2], proba[2, 9] = 0.6, 0.9, 0.95  # "42" or one "9"
    scores = np.log(proba.max(axis=1))
    score, chosen, skipped = reading_of("72", spans, scores, proba, [False, False])
    assert chosen == [0, 1] and skipped == []
    assert score == pytest.approx(np.log(0.01) + np.log(0.9))
    assert reading_of("123", spans, scores, proba, [False, False]) is None  # three digits from two pieces: none
    assert reading_of("9", spans, scores, proba, [False, False])[1] == [2]


def test_agree_keeps_the_segmentation_where_the_two_agree_and_flags_where_they_cannot():
    spans = [(0, 1), (1, 2), (0, 2)]
    proba = np.full((3, 10), 0.01)
    proba[0, 4], proba[1, 2], proba[2, 9] = 0.6, 0.9, 0.95
    scores = np.log(proba.max(axis=1))
    same = agree(spelled("42"), spans, scores, proba, [False, False], [0, 1], [])
    assert same.chosen == [0, 1] and same.digits == [4, 2] and same.disagree == [False, False]
    other = agree(spelled("9"), spans, scores, proba, [False, False], [0, 1], [])  # the line reader is sure of "9"
    assert other.chosen == [2] and other.digits == [9] and other.disagree == [False]
    lost = agree(spelled("123"), spans, scores, proba, [False, False], [0, 1], [])  # no reading gives "123"
    assert lost.chosen == [0, 1] and lost.digits == [4, 2] and lost.disagree == [True, False]


def _leaning(first: dict[int, float], rest: str) -> np.ndarray:
    """Frames of a line whose first digit the reader reads as `first` ({digit: probability}), then `rest` surely."""
    frames = np.exp(spelled("0" + rest))
    for f in (2, 3):  # the first digit's frames
        frames[f] = 0.001
        for digit, p in first.items():
            frames[f, digit + 1] = p
    return np.log(frames / frames.sum(axis=1, keepdims=True))


def test_where_only_a_digit_differs_the_model_keeps_it_unless_the_line_reader_is_far_surer():
    """Both read the same cuts, "42" and "72": the model (sure of its 4) wins against a line reader that leans to 7,
    flagged "not sure"; a line reader sure of its 7 still wins against a model that hesitates."""
    spans = [(0, 1), (1, 2), (0, 2)]
    proba = np.full((3, 10), 0.01)
    proba[0, 4], proba[0, 7], proba[1, 2], proba[2, 9] = 0.9, 0.05, 0.9, 0.3
    scores = np.log(proba.max(axis=1))
    leans = _leaning({7: 0.6, 4: 0.35}, "2")
    assert text_log_probability(leans, "72") - text_log_probability(leans, "42") > 1.0  # it prefers "72", ~3x
    kept = agree(leans, spans, scores, proba, [False, False], [0, 1], [])
    assert kept.chosen == [0, 1] and kept.digits == [4, 2] and kept.disagree == [True, False]
    proba[0, 4], proba[0, 7] = 0.5, 0.4
    scores = np.log(proba.max(axis=1))
    taken = agree(spelled("72", sure=0.99), spans, scores, proba, [False, False], [0, 1], [])
    assert taken.chosen == [0, 1] and taken.digits == [7, 2] and taken.disagree == [False, False]


def test_one_digit_read_by_the_model_is_only_flagged_by_the_line_reader():
    """A single digit drawn wide (a 1 as wide as tall) was "11", "7" or "41" for the line reader: one digit stays
    the model's, flagged where the line reader reads otherwise."""
    spans = [(0, 1), (1, 2), (0, 2)]
    proba = np.full((3, 10), 0.01)
    proba[0, 4], proba[1, 2], proba[2, 9] = 0.6, 0.9, 0.95
    scores = np.log(proba.max(axis=1))
    kept = agree(spelled("42"), spans, scores, proba, [False, False], [2], [])
    assert kept.chosen == [2] and kept.digits == [9] and kept.disagree == [True]
    assert agree(spelled("99"), spans, scores, proba, [False, False], [2], []).disagree == [False]


def test_each_digit_sits_where_the_most_probable_path_emits_it():
    assert digit_frames(spelled("24"), "24") == [(2, 3), (6, 7)]  # blanks 0-1, "2" 2-3, blanks 4-5, "4" 6-7
    assert digit_frames(spelled("11"), "11") == [(2, 3), (6, 7)]  # a repeat needs the blank between
    assert digit_frames(np.stack([spelled("24"), spelled("24")]), "24") == [(2, 3), (6, 7)]  # members: their mean
    with pytest.raises(ValueError):
        digit_frames(spelled("24")[:1], "24")  # two digits on one frame


def test_a_sure_text_no_candidate_gives_is_handed_back_to_cut_the_ink_by():
    spans = [(0, 1), (1, 2), (0, 2)]
    proba = np.full((3, 10), 0.01)
    proba[0, 4], proba[1, 2], proba[2, 9] = 0.6, 0.9, 0.95
    scores = np.log(proba.max(axis=1))
    unsure = agree(spelled("123"), spans, scores, proba, [False, False], [0, 1], [])
    assert unsure.unformed == "" and unsure.digits == [4, 2]
    sure = agree(spelled("123", sure=0.99999), spans, scores, proba, [False, False], [0, 1], [])
    assert sure.unformed == "123" and sure.digits == [4, 2]  # `read_number` cuts the ink for it


def test_the_ink_is_cut_where_the_line_reader_sees_each_digit():
    ink = np.zeros((40, 100), np.float32)
    ink[5:35, 10:14] = ink[5:35, 40:44] = ink[5:35, 80:84] = 1.0  # "111", one stroke joined along the bottom
    ink[33:35, 10:84] = 1.0
    ys, xs = np.nonzero(ink > 0.5)
    whole = [Piece(ys, xs, float(xs.min()), float(xs.max()) + 1.0, 0)]
    cut = line_pieces(_frames_of(ink, "111"), "111", whole, ink)
    assert len(cut) == 3 and sum(len(p.ys) for p in cut) == len(ys)  # every ink pixel in one digit
    for piece, x in zip(cut, (10, 40, 80), strict=True):
        assert piece.left <= x and x + 4 <= piece.right  # each upright stroke whole in its own piece


def _frames_of(ink: np.ndarray, text: str) -> np.ndarray:
    """Frames as a line reader would give for `ink`: each digit emitted on the frame over its stroke."""
    width = line_input(ink).shape[1] // 2
    frames = np.full((width, 11), 0.001)
    frames[:, 0] = 0.99
    at = frame_columns(ink, width)
    for ch, x in zip(text, (12, 42, 82), strict=False):
        f = int(np.argmin(abs(at - x)))
        frames[f], frames[f, int(ch) + 1] = 0.001, 0.99
    return np.log(frames)


def test_only_the_digits_the_line_reader_does_not_see_are_flagged():
    assert unmatched("427", "42") == [False, False, True]  # "42?": the "?" read as 7 by the segmentation
    assert unmatched("2024", "2074") == [False, False, True, False]
    assert unmatched("11", "111") == [False, False]
    assert unmatched("35", "") == [True, True]


@pytest.fixture(scope="module")
def reader_parts():
    return load_model("cnn", BUNDLED_DIR), load_detector(None), load_segment_verifier(None)


def test_read_number_takes_the_line_readers_text_when_its_pieces_can_give_it(reader_parts):
    cnn, detector, verifier = reader_parts
    data = draw_number("2024")
    plain = read_number(data, cnn, detector, verifier=verifier)
    assert plain.text == "2024"
    doubted = read_number(data, cnn, detector, verifier=verifier, line_reader=Spelling("2074"))
    assert doubted.text == "2024" and [d.uncertain for d in doubted.digits] == [False, False, True, False]  # the CNN
    # is sure of its 2 (`RELABEL_WEIGHT`): kept, but "not sure" where the line reader reads a 7
    none = read_number(data, cnn, detector, verifier=verifier, line_reader=Spelling("3333333"))
    assert none.text == "2024" and none.uncertain and all(d.uncertain for d in none.digits)
    sure = read_number(data, cnn, detector, verifier=verifier, line_reader=Spelling("2074", sure=0.99999))
    assert sure.text == "2074" and not sure.digits[2].uncertain  # a line reader sure of the text: no doubt left
    assert [d.box for d in sure.digits] == [d.box for d in plain.digits]
    one_off = read_number(data, cnn, detector, verifier=verifier, line_reader=Spelling("20245"))  # no fifth piece
    assert one_off.text == "2024" and not one_off.uncertain  # every digit of "2024" is in "20245"


def test_two_overlapping_digits_the_segmentation_reads_as_one_are_read_as_the_line_reader_sees_them(
    reader_parts, bundled, handwriting_dir
):
    """A calibration "91" whose 9 and 1 overlap in one stroke: the segmentation alone reads "9" (no cut gives a
    1), the line reader "91" surely; the ink is cut where it sees the two."""
    cnn, detector, verifier = reader_parts
    sample = number_samples(135, seed=300, part="calibration", directory=handwriting_dir)[134]
    assert sample.text == "91" and sample.gap == "overlapping"
    assert read_number(sample.image, cnn, detector, verifier=verifier).text == "9"
    read = read_number(sample.image, cnn, detector, verifier=verifier, line_reader=bundled)
    assert read.text == "91"
    (x9, _, w9, _), (x1, _, w1, _) = (d.box for d in read.digits)
    assert x9 < x1 and x9 + w9 < x1 + w1  # left to right
    assert [int(np.argmax(d.probabilities)) for d in read.digits] == [9, 1]  # the CNN reads each cut as its digit


def test_a_tiny_reader_trains_exports_and_runs_as_it_trained(tmp_path, cnn_torch, handwriting_dir, mnist_dir):
    """A few hundred composed numbers, one epoch: the ONNX file gives the network's own frames."""
    torch, _ = cnn_torch
    from digitlab.training.line_reader import (
        digit_pool,
        export_line_onnx,
        fit_line_net,
        training_lines,
    )

    lines, texts = training_lines(200, digit_pool(handwriting_dir, mnist_dir), jobs=1, progress=False)
    assert len(lines) >= 190 and all(x.shape[0] == ROWS for x in lines)
    assert all(t.isdigit() and 1 <= len(t) <= 6 for t in texts)
    net = fit_line_net(lines, texts, epochs=1, progress=False)
    reader = LineReader(export_line_onnx(net))
    x = lines[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)[None, None]).numpy()[0]
    got = reader.session.run(None, {reader.input: x[None, None]})[0][0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert got.shape == (x.shape[1] // 2, 11)


def test_several_networks_read_together_by_their_mean_log_probability():
    """Frames of two networks (members, frames, 11): a text's log-probability is the mean of theirs, and the text
    read is, of each one's and their mean frames', the most probable (a digit need not sit on the same frames)."""
    a, b = spelled("42"), spelled("47")
    both = np.stack([a, b])
    for text in ("42", "47", "4", ""):
        want = 0.5 * (text_log_probability(a, text) + text_log_probability(b, text))
        assert text_log_probability(both, text) == pytest.approx(want, rel=1e-9)
    assert best_text(both) in ("42", "47")
    shifted = np.stack([spelled("1234", sure=0.9), np.roll(spelled("1234", sure=0.9), 1, axis=0)])
    assert best_text(shifted) == "1234"  # (frames a frame apart: the mean frames alone could read "11223344")
    unsure = np.stack([spelled("42", sure=0.6), spelled("43", sure=0.99)])
    assert best_text(unsure) == "43"


def test_networks_merged_into_one_file_each_give_their_own_frames(cnn_torch, handwriting_dir, mnist_dir):
    """`merge_line_onnx`: one file, one input, each network's own frames stacked; a one-network file still reads."""
    assert cnn_torch  # (the `cnn` extra: torch trains the networks)
    from digitlab.training.line_reader import (
        digit_pool,
        export_line_onnx,
        fit_line_net,
        merge_line_onnx,
        training_lines,
    )

    lines, texts = training_lines(64, digit_pool(handwriting_dir, mnist_dir), jobs=1, progress=False)
    nets = [fit_line_net(lines, texts, epochs=1, progress=False, seed=seed) for seed in (0, 1)]
    payloads = [export_line_onnx(net) for net in nets]
    merged = LineReader(merge_line_onnx(payloads))
    ink = np.zeros((90, 260), np.float32)
    ink[10:80, 40:47], ink[10:17, 120:180], ink[10:80, 170:177] = 1.0, 1.0, 1.0
    frames = merged.frames(ink)
    assert frames.shape[0] == 2 and frames.shape[2] == 11
    for member, payload in zip(frames, payloads, strict=True):
        np.testing.assert_allclose(member, LineReader(payload).frames(ink), atol=1e-5)
    assert not np.allclose(frames[0], frames[1])  # (two networks, not one twice)
    assert best_text(frames) in {best_text(frames[0]), best_text(frames[1]), best_text(np.log(np.exp(frames).mean(0)))}
    grown = LineReader(merge_line_onnx([merge_line_onnx(payloads), payloads[0]])).frames(ink)  # one added to a file
    assert grown.shape[0] == 3
    np.testing.assert_allclose(grown, np.concatenate([frames, frames[:1]]), atol=1e-5)
