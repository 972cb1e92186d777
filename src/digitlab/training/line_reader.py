"""`digitlab train line_reader`: a network that reads a whole written number without cutting it (CTC).

Numbers of 1-6 digits are composed like the numbers benchmark's (`evaluation.numbers`: uneven sizes and
baselines, slant, gaps from wide to overlapping, some on simulated phone photos) but from digits no benchmark
reads: MNIST's training set and the `fit` part of the real handwriting (USPS and Semeion). Each goes through
the serving path's ink (`segment_ink.working_ink`, so a photo is flattened as `/read` flattens it) and
`line_reader.line_input`. The network (`LineNet`) is trained with CTC (PyTorch, the `cnn` extra), exported to
ONNX, and checked on the calibration numbers (`evaluate --numbers --part calibration`): alone, and as
`segment.read_number`'s second opinion, so every rebuild says what it is worth. `MEMBERS` networks are trained
apart, each on compositions of its own, and merged into one ONNX file (`merge_line_onnx`) read as one: two read
more numbers right than one trained as long (see the bundled README).
"""

from __future__ import annotations

import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from digitlab.evaluation import numbers as composed
from digitlab.line_reader import BLANK, LINE_READER_NAME, ROWS, best_text, line_input
from digitlab.segment_ink import working_ink
from digitlab.training.progress import Bar, log

SEED = 3  #: the compositions' seed (the benchmark's numbers use seed 0 on other digits; the verifier's 1)
OVERLAP = (-0.22, -0.06)  #: a little more overlap than the benchmark's, so its worst cases are inside
PHOTO_SHARE = 0.15
SLANT_SHARE, SLANT = 0.6, 0.3
CHANNELS, HIDDEN = (16, 32, 64, 96), 64
BATCH, RATE = 32, 2e-3
COUNT, EPOCHS = 60000, 8  #: numbers composed and passes over them (50,000 x 5 left the CTC loss still falling)
#: networks trained apart, each on its own compositions (seed SEED + i) from its own start (torch seed i), and
#: read together (`line_reader.best_text`, `text_log_probability`)
MEMBERS = 3
OPSET = 17

_pool: tuple | None = None  # (images, labels, sources) of the digits to compose from, in each worker


def digit_pool(handwriting_dir: Path, mnist_dir: Path | None) -> tuple[list, np.ndarray, list[str]]:
    """The digits to compose from: the real handwriting's `fit` part and MNIST's training set."""
    from digitlab.data import load_mnist

    images, labels, sources = composed._part_digits("fit", handwriting_dir)
    mnist, mnist_labels = load_mnist("train", directory=mnist_dir)
    return list(images) + list(mnist), np.concatenate([labels, mnist_labels.astype(int)]), sources + ["mnist"] * len(mnist)


def _init(pool: tuple) -> None:
    global _pool
    _pool = pool


def composed_line(n: int, seed: int) -> tuple[np.ndarray, str] | None:
    """The `n`-th composed number of `seed`, as the network's input, and its text (None: nothing to read)."""
    images, labels, sources = _pool
    rng = np.random.default_rng([seed, n])
    length = int(rng.integers(1, 7))
    picks = rng.integers(0, len(labels), length)
    height = int(rng.integers(30, 90))
    glyphs = [composed._glyph(images[i], int(labels[i]), sources[i], max(12, int(height * rng.uniform(0.8, 1.12))), rng)
              for i in picks]  # fmt: skip
    gap = list(composed.GAPS)[int(rng.integers(0, len(composed.GAPS)))]
    ink, _ = composed.compose_owned(glyphs, OVERLAP if gap == "overlapping" else composed.GAPS[gap], rng, height)
    if rng.random() < SLANT_SHARE:
        ink = composed.shear(ink, rng.uniform(-SLANT, SLANT))
    data = composed.photo_jpeg(ink, rng) if rng.random() < PHOTO_SHARE else composed.canvas_png(ink)
    try:
        return line_input(working_ink(data)[0]), "".join(str(int(labels[i])) for i in picks)
    except Exception:  # noqa: BLE001 -- a composition the reader cannot see teaches nothing
        return None


def _composed_line(args: tuple[int, int]) -> tuple[np.ndarray, str] | None:
    return composed_line(*args)


def training_lines(count: int, pool: tuple, *, seed: int = SEED, jobs: int = 2, progress: bool = True):
    """`count` composed numbers as (inputs, texts), made by `jobs` processes."""
    lines, texts = [], []
    with Bar(progress) as bar, get_context("fork").Pool(jobs, initializer=_init, initargs=(pool,)) as workers:
        advance = bar.task("composing numbers", count)
        for made in workers.imap(_composed_line, [(n, seed) for n in range(count)], chunksize=64):
            if made is not None:
                lines.append(made[0])
                texts.append(made[1])
            if advance:
                advance(1)
    return lines, texts


def line_net():
    """Convolutions over the (ROWS, width) line, pooled to 4 rows and width / 2 frames, a bidirectional GRU
    over the frames, and per frame log-probabilities of blank and the ten digits."""
    import torch
    from torch import nn

    def block(inputs: int, outputs: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU())

    class LineNet(nn.Module):
        def __init__(self):
            super().__init__()
            c = CHANNELS
            self.convs = nn.Sequential(
                block(1, c[0]), nn.MaxPool2d(2), block(c[0], c[1]), nn.MaxPool2d((2, 1)),
                block(c[1], c[2]), nn.MaxPool2d((2, 1)), block(c[2], c[3]),
            )  # fmt: skip
            self.proj = nn.Linear(c[3] * (ROWS // 8), 128)
            self.rnn = nn.GRU(128, HIDDEN, bidirectional=True, batch_first=True)
            self.out = nn.Linear(2 * HIDDEN, 11)

        def forward(self, x):  # (batch, 1, ROWS, width) -> (batch, width / 2, 11)
            x = self.convs(x)
            b, c, h, w = x.shape
            x = torch.relu(self.proj(x.permute(0, 3, 1, 2).reshape(b, w, c * h)))
            x, _ = self.rnn(x)
            return torch.log_softmax(self.out(x), -1)

    return LineNet()


def _batches(lines: list[np.ndarray], rng: np.random.Generator):
    """Batches of lines of similar width (padded on the right by a random share of the slack), shuffled."""
    order = np.argsort([x.shape[1] + rng.uniform(0, 40) for x in lines])
    chunks = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    rng.shuffle(chunks)
    for chunk in chunks:
        width = max(lines[i].shape[1] for i in chunk)
        X = np.zeros((len(chunk), 1, ROWS, width), np.float32)
        for k, i in enumerate(chunk):
            x = lines[i] * rng.uniform(0.7, 1.1)  # fainter or stronger ink
            if rng.random() < 0.3:
                x = x + rng.normal(0, 0.05, x.shape)
            at = int(rng.integers(0, width - x.shape[1] + 1))
            X[k, 0, :, at : at + x.shape[1]] = np.clip(x, 0, 1)
        yield X, chunk


def fit_line_net(lines: list[np.ndarray], texts: list[str], *, epochs: int, progress: bool = True, seed: int = 0):
    """Train a `line_net` with CTC (AdamW, one-cycle learning rate); returns it in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = line_net()
    rng = np.random.default_rng(seed)
    steps = epochs * ((len(lines) + BATCH - 1) // BATCH)
    optimiser = torch.optim.AdamW(net.parameters(), RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, RATE, total_steps=max(steps, 30), pct_start=0.1)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    net.train()
    with Bar(progress) as bar:
        for epoch in range(epochs):
            advance = bar.task(f"line reader epoch {epoch + 1}/{epochs}", (len(lines) + BATCH - 1) // BATCH)
            total, count = 0.0, 0
            for X, chunk in _batches(lines, rng):
                log_probs = net(torch.from_numpy(X))
                targets = torch.tensor([int(ch) + 1 for i in chunk for ch in texts[i]], dtype=torch.long)
                lengths = torch.tensor([len(texts[i]) for i in chunk], dtype=torch.long)
                frames = torch.full((len(chunk),), log_probs.shape[1], dtype=torch.long)
                loss = ctc(log_probs.permute(1, 0, 2), targets, frames, lengths)
                optimiser.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                optimiser.step()
                schedule.step()
                total, count = total + loss.item(), count + 1
                if advance:
                    advance(1)
            log(f"line reader: epoch {epoch + 1}/{epochs}, CTC loss {total / max(count, 1):.4f}")
    return net.eval()


def export_line_onnx(net) -> bytes:
    """The trained network as ONNX bytes (width dynamic), checked by onnx."""
    import io
    import warnings

    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter warns that it is legacy
        torch.onnx.export(
            net, (torch.zeros(1, 1, ROWS, 64),), buf, input_names=["line"], output_names=["log_probs"],
            dynamic_axes={"line": {0: "n", 3: "width"}, "log_probs": {0: "n", 1: "frames"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = "digitlab line reader: (n, 1, 32, width) -> (n, width / 2, 11) CTC log-probabilities"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def merge_line_onnx(payloads: list[bytes]) -> bytes:
    """Several line networks' ONNX as one graph: the one input `line` (n, 1, ROWS, width) to each, their
    log-probabilities stacked as `log_probs` (n, members, width / 2, 11). One file, loaded and checked like one
    network; `line_reader.best_text` and `text_log_probability` combine the members. A payload that is already
    merged brings all its members (a network added to a bundled file)."""
    import onnx
    from onnx import compose, helper, numpy_helper

    models = [onnx.load_from_string(p) for p in payloads]
    nodes, weights, stacked = [], [numpy_helper.from_array(np.array([1], np.int64), "member_axis")], []
    for i, model in enumerate(models):
        graph = compose.add_prefix(model, f"m{i}_").graph
        (source,), (result,) = [x.name for x in graph.input], [x.name for x in graph.output]
        for node in graph.node:
            node.input[:] = ["line" if name == source else name for name in node.input]
        nodes += graph.node
        weights += graph.initializer
        if len(graph.output[0].type.tensor_type.shape.dim) == 4:  # already several members (a merged file)
            stacked.append(result)
            continue
        stacked.append(f"m{i}_member")
        nodes.append(helper.make_node("Unsqueeze", [result, "member_axis"], [stacked[-1]]))
    nodes.append(helper.make_node("Concat", stacked, ["log_probs"], axis=1))
    line = helper.make_tensor_value_info("line", onnx.TensorProto.FLOAT, ["n", 1, ROWS, "width"])
    members = sum(1 if len(m.graph.output[0].type.tensor_type.shape.dim) == 3 else
                  m.graph.output[0].type.tensor_type.shape.dim[1].dim_value for m in models)  # fmt: skip
    out = helper.make_tensor_value_info("log_probs", onnx.TensorProto.FLOAT, ["n", members, "frames", 11])
    merged = helper.make_model(helper.make_graph(nodes, "line_reader", [line], [out], weights),
                               opset_imports=models[0].opset_import, ir_version=models[0].ir_version)  # fmt: skip
    merged.doc_string = (f"digitlab line reader, {members} networks: (n, 1, {ROWS}, width) -> (n, {members}, "
                         "width / 2, 11) CTC log-probabilities")  # fmt: skip
    onnx.checker.check_model(merged, full_check=True)
    return merged.SerializeToString()


def calibration_reading(payload: bytes, count: int, model_dir: Path) -> dict[str, float]:
    """Share of `count` calibration numbers read right: by the line reader alone, and by `read_number` with
    the CNN without and with it."""
    from digitlab.detector.runtime import load_detector
    from digitlab.errors import DigitlabError
    from digitlab.line_reader import LineReader
    from digitlab.models.registry import load_model
    from digitlab.segment import read_number
    from digitlab.segment_verifier import load_segment_verifier

    reader = LineReader(payload)
    model, detector, verifier = load_model("cnn", model_dir), load_detector(model_dir), load_segment_verifier(model_dir)
    samples = composed.number_samples(count, part="calibration")
    right = {"line reader alone": 0, "without": 0, "with": 0}
    for sample in samples:
        try:
            right["line reader alone"] += best_text(reader.frames(working_ink(sample.image)[0])) == sample.text
            for name, second in (("without", None), ("with", reader)):
                reading = read_number(sample.image, model, detector, verifier=verifier, line_reader=second)
                right[name] += reading.text == sample.text
        except (DigitlabError, ValueError):
            pass
    return {name: n / len(samples) for name, n in right.items()}


def train_line_reader_command(
    *, out_dir: Path | None = None, count: int = COUNT, epochs: int = EPOCHS, members: int = MEMBERS,
    check: int = 500, jobs: int = 2,
) -> int:  # fmt: skip
    """`digitlab train line_reader [--out DIR]`: compose, train and export each network, merge them, report on
    the calibration numbers, save."""
    from digitlab.core.config import get_settings
    from digitlab.models.artifacts import library_versions, save_artifact

    settings = get_settings()
    out = Path(out_dir) if out_dir is not None else settings.model_dir
    started = time.perf_counter()
    pool = digit_pool(settings.handwriting_path, settings.mnist_dir)
    payloads, numbers = [], []
    for i in range(members):
        log(f"line reader {i + 1}/{members}: composing {count:,} numbers from MNIST's training set and the fit part "
            "of the real handwriting")  # fmt: skip
        lines, texts = training_lines(count, pool, seed=SEED + i, jobs=jobs)
        log(f"line reader {i + 1}/{members}: training on {len(lines):,} numbers, {epochs} epochs")
        payloads.append(export_line_onnx(fit_line_net(lines, texts, epochs=epochs, seed=i)))
        numbers.append(len(lines))
        del lines, texts
    payload = payloads[0] if members == 1 else merge_line_onnx(payloads)
    summary: dict = {"numbers": numbers, "epochs": epochs}
    if check:
        try:
            read = {k: round(v, 4) for k, v in calibration_reading(payload, check, settings.model_dir).items()}
        except Exception as exc:  # noqa: BLE001 -- the check failing must not throw away the trained network
            log(f"line reader: the calibration check failed ({type(exc).__name__}: {exc}); saved without it")
        else:
            summary["calibration_numbers"] = {"count": check, **read}
            log(f"line reader: {check} calibration numbers read right: alone {100 * read['line reader alone']:.1f} "
                f"%, by the cnn's segmentation {100 * read['without']:.1f} -> {100 * read['with']:.1f} % with it")  # fmt: skip
    manifest = {
        "kind": "line_reader",
        "members": members,
        "seeds": [{"compositions": SEED + i, "torch": i} for i in range(members)],
        "channels": list(CHANNELS),
        "hidden": HIDDEN,
        "training": summary,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": library_versions("torch", "onnx"),
    }
    save_artifact(out, LINE_READER_NAME, payload, "onnx", manifest)
    log(f"line reader saved in {out} ({time.perf_counter() - started:.0f} s)")
    return 0
