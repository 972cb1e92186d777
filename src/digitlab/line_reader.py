"""A second reader of written numbers that never cuts: the whole line of ink -> a text, by CTC.

Why: `segment` reads a number by cutting its ink into digits, and where digits touch or overlap no cut is
clean (a straight cut leaves each crop a sliver of its neighbour), so it merges, splits or misreads them.
A network that reads the whole line at once, column by column, and is trained with CTC to emit each digit
once wherever it sits, needs no cut. It gives no boxes and no per-digit pictures, so it does not replace the
segmentation: `segment.read_number` asks it which reading of its candidates to believe (the reading whose
digits it finds most probable, `LineReader.log_probability`), and flags a reading they disagree on.

The network (`training/line_reader.py`, `digitlab train line_reader`) is small (a few convolutions and a
bidirectional GRU over columns) and runs in onnxruntime, one thread, like the CNN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LINE_READER_NAME = "line_reader"
ROWS = 32  #: the network's input height: the ink's rows scaled to CORE, with a margin above and below
CORE = 28
SIDE = 8  #: blank columns on either side
MAX_COLUMNS = 1200  #: a line wider than this (about 50 digits) is squeezed
INK_ON = 0.35  #: what counts as ink when finding the writing's rows and columns
BLANK = 0  #: the CTC blank is class 0; digit d is class d + 1


def _line_box(ink: np.ndarray) -> tuple[int, int, int, int, int]:
    """(top, left, height, width) of the ink's bounding box, and the columns it is scaled to in `line_input`.
    Raises ValueError when there is no ink."""
    ys, xs = np.nonzero(ink > INK_ON)
    if not len(ys):
        raise ValueError("no ink")
    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
    return int(ys.min()), int(xs.min()), h, w, int(min(MAX_COLUMNS, max(1, round(w * CORE / h))))


def line_input(ink: np.ndarray) -> np.ndarray:
    """The working ink (values in [0, 1]) -> the network's (ROWS, width) input: the ink's bounding box scaled
    to CORE rows, SIDE blank columns either side. Raises ValueError when there is no ink."""
    y0, x0, h, w, columns = _line_box(ink)
    crop = np.asarray(ink[y0 : y0 + h, x0 : x0 + w], np.float32)
    scaled = np.asarray(Image.fromarray(crop, "F").resize((columns, CORE), Image.BILINEAR))
    out = np.zeros((ROWS, columns + 2 * SIDE + (columns % 2)), np.float32)  # an even width: frames are 2 columns
    top = (ROWS - CORE) // 2
    out[top : top + CORE, SIDE : SIDE + columns] = np.clip(scaled, 0.0, 1.0)
    return out


def frame_columns(ink: np.ndarray, frames: int) -> np.ndarray:
    """The working ink's column at the centre of each of `frames` frames of its `line_input` (a frame is two
    input columns): where in the ink the line reader saw each frame."""
    _, x0, _, w, columns = _line_box(ink)
    return x0 + (2 * np.arange(frames) + 1 - SIDE) * (w / columns) - 0.5


def best_text(log_probs: np.ndarray) -> str:
    """Greedy CTC decoding: the most probable class per frame, repeats merged, blanks dropped. For several
    networks' frames (members, frames, 11): of each one's text and that of their mean frames, the one
    `text_log_probability` finds most probable (their frames need not line up: CTC puts a digit on any frame)."""
    lp = np.asarray(log_probs)
    if lp.ndim == 3:
        mean = np.log(np.maximum(np.exp(lp).mean(axis=0), 1e-30))
        texts = sorted({best_text(member) for member in lp} | {best_text(mean)})
        return max(texts, key=lambda text: text_log_probability(lp, text))
    best = lp.argmax(axis=1)
    keep = (best != BLANK) & np.concatenate([[True], best[1:] != best[:-1]])
    return "".join(str(int(v) - 1) for v in best[keep])


def _ctc_states(text: str) -> tuple[list[int], np.ndarray]:
    """CTC's states for `text`: its classes with a blank before, between and after them; and per state whether
    a path may reach it from two states back (a digit after another digit, unless the two are equal)."""
    labels = [BLANK]
    for ch in text:
        labels += [int(ch) + 1, BLANK]
    skip = np.zeros(len(labels), bool)
    skip[3::2] = [labels[k] != labels[k - 2] for k in range(3, len(labels), 2)]
    return labels, skip


def text_log_probability(log_probs: np.ndarray, text: str) -> float:
    """log P(text | the frames) under CTC: the forward algorithm over the text with blanks between. For several
    networks' frames (members, frames, 11): the mean of their log-probabilities (a geometric mean: a text one
    network finds unlikely stays unlikely; on 1,000 calibration numbers 942 read right, the arithmetic mean 941),
    all members in one pass over the frames."""
    lp = np.asarray(log_probs, np.float64)
    members = lp if lp.ndim == 3 else lp[None]
    if not text:
        return float(members[:, :, BLANK].sum(axis=1).mean())
    labels, skip = _ctc_states(text)
    emit = members[:, :, labels]  # (members, frames, states)
    alpha = np.full((len(members), len(labels)), -np.inf)
    alpha[:, :2] = emit[:, 0, :2]
    none = np.full((len(members), 2), -np.inf)
    for t in range(1, members.shape[1]):
        shifted = np.concatenate([none, alpha], axis=1)
        step = np.logaddexp(alpha, shifted[:, 1:-1])
        step[:, skip] = np.logaddexp(step[:, skip], shifted[:, :-2][:, skip])
        alpha = step + emit[:, t]
    return float(np.logaddexp(alpha[:, -1], alpha[:, -2]).mean())


def digit_frames(log_probs: np.ndarray, text: str) -> list[tuple[int, int]]:
    """Where each digit of `text` sits: its first and last frame on the most probable CTC path (Viterbi; for
    several networks' frames, on their mean log-probabilities). Raises ValueError for an empty text or one
    the frames cannot hold (more digits than frames)."""
    lp = np.asarray(log_probs, np.float64)
    lp = lp.mean(axis=0) if lp.ndim == 3 else lp
    frames = len(lp)
    if not text or frames < len(text):
        raise ValueError(f"{len(text)} digits cannot sit on {frames} frames")
    labels, skip = _ctc_states(text)
    n = len(labels)
    emit = lp[:, labels]
    score = np.full(n, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((frames, n), np.int8)  # how far back (0, 1, 2 states) each state's best path came from
    none = np.full(2, -np.inf)
    for t in range(1, frames):
        options = np.stack([score, np.concatenate([none[:1], score[:-1]]), np.concatenate([none, score[:-2]])])
        options[2, ~skip] = -np.inf
        back[t] = options.argmax(axis=0)
        score = options.max(axis=0) + emit[t]
    state = n - 1 if score[n - 1] >= score[n - 2] else n - 2
    path = np.empty(frames, int)
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    at = [np.flatnonzero(path == state) for state in range(1, n, 2)]  # a path visits every digit's state
    return [(int(frames_of[0]), int(frames_of[-1])) for frames_of in at]


class LineReader:
    """The ONNX network: (1, 1, ROWS, width) -> (1, width / 2, 11) log-probabilities per frame."""

    def __init__(self, model_bytes: bytes):
        from digitlab.models.onnx import make_session

        self.session = make_session(model_bytes)
        self.input = self.session.get_inputs()[0].name

    def frames(self, ink: np.ndarray) -> np.ndarray:
        """(frames, 11) log-probabilities of the working ink's line; (members, frames, 11) from a file of several
        networks (`training.line_reader.merge_line_onnx`), which `best_text` and `text_log_probability` take too."""
        x = line_input(ink)[None, None]
        return np.asarray(self.session.run(None, {self.input: x})[0][0], np.float64)


def load_line_reader(model_dir: Path | None = None) -> LineReader:
    """The line reader in `model_dir` (rebuilt by `digitlab train line_reader`), else the bundled one; its
    SHA-256 checked against its manifest first (`ArtifactError` if it does not match)."""
    from digitlab.models.artifacts import read_verified
    from digitlab.models.registry import component_dir

    _manifest, payload = read_verified(component_dir(LINE_READER_NAME, model_dir), LINE_READER_NAME)
    return LineReader(payload)
