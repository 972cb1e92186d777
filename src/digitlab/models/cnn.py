"""The CNN: a small convolutional network trained with PyTorch, exported to ONNX, served by onnxruntime.

Training (`train_cnn`) needs the `cnn` extra (torch, onnx); serving needs only onnxruntime, so this
module never imports torch at import time. Everything torch-related happens inside functions.

The exported graph is the whole model: input `input` float32 `(n, 784)` in [0, 1] (ink 1 on black,
exactly `mnist_uint8 / 255`), reshaped to `(n, 1, 28, 28)` inside the graph, and output
`probabilities` float32 `(n, 10)`: softmax of the logits divided by a temperature fitted on a held-out
validation split (so the probabilities are calibrated). The batch axis is dynamic.

Training is seeded and deterministic (fixed data order, seeded augmentation, 2 threads): the same
seed reproduces the same network. Augmentation is done on whole batches in torch (one affine +
elastic warp through `grid_sample`, stroke thickening/thinning through max-pooling), so it costs a
few percent of an epoch. Extra 28x28 training images (e.g. canvas drawings re-rendered and run
through `digitlab.preprocess.to_mnist`) can be mixed in with `extra_data`.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAME = "cnn"
DISPLAY_NAME = "CNN (convolutional network)"
VERSION = "1.0.0"
ARTIFACT = f"{NAME}.onnx"
BUNDLED_DIR = Path(__file__).with_name("bundled")

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"

DEFAULT_EPOCHS = 8
DEFAULT_SEED = 0
VAL_SIZE = 2000  # held out of the 60k training images: temperature fit + per-epoch monitoring
BATCH_SIZE = 128
THREADS = 2
#: the network, left to right: `c<N>` a conv-BN-ReLU block with N channels (3x3; `c<N>k5` 5x5), `p` a
#: 2x2 max-pool; then global average pooling, dropout and a linear layer to the 10 classes
ARCH = "c32,p,c64,c64,p,c128"


@dataclass(frozen=True)
class Augmentation:
    """Random on-the-fly distortions, applied to every training batch (never to validation/test)."""

    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.15)
    aspect: float = 0.08  # extra independent x/y scale jitter (+-), digits drawn narrow or wide
    shear: float = 0.15  # horizontal shear factor (+-), ~8.5 degrees of slant
    translate_px: float = 2.5
    elastic_p: float = 0.5  # fraction of images that also get an elastic distortion
    elastic_px: float = 1.2  # displacement std in pixels of the elastic field
    elastic_grid: int = 4  # control points per side of the (bicubically upsampled) random field
    thicken_p: float = 0.25  # fraction of images whose strokes are made thicker (grey dilation)
    thin_p: float = 0.2  # fraction made thinner (grey erosion)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = DEFAULT_EPOCHS
    seed: int = DEFAULT_SEED
    batch_size: int = BATCH_SIZE
    max_lr: float = 4e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    arch: str = ARCH
    val_size: int = VAL_SIZE
    #: the exported network is an exponential moving average of the weights (and BN statistics):
    #: it smooths out the last steps' noise, worth a few test errors in 10k for no extra time
    ema_decay: float = 0.999
    augmentation: Augmentation = Augmentation()


def _import_torch():
    """Import torch, first asking OpenMP to sleep (not spin) while its threads wait for each other.

    Only effective when torch is not imported yet (libgomp reads it at load). On a shared CPU spinning
    threads waste most of their time: measured here at load ~10, 2 threads spent 1.0 CPU-s per batch
    with the default policy and 0.23 with PASSIVE (the same as 1 thread).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


# --- data ------------------------------------------------------------------------------------------


def _load_mnist(split: str, directory: Path | None, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST through `digitlab.data` (verified, downloaded when missing); DIGITLAB_MNIST_DIR picks the folder."""
    from digitlab.data import load_mnist

    return load_mnist(split, directory=directory, limit=limit)


def _split_validation(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (seeded) random split of range(n) into (train indices, validation indices)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


# --- network ---------------------------------------------------------------------------------------


def _parse_arch(arch: str) -> list[tuple[str, int, int]]:
    """'c32,p,c64k5' -> [('conv', 32, 3), ('pool', 0, 0), ('conv', 64, 5)]."""
    layers = []
    for token in arch.replace(" ", "").split(","):
        if token == "p":
            layers.append(("pool", 0, 0))
            continue
        match = re.fullmatch(r"c(\d+)(?:k(\d+))?", token)
        if match is None:
            raise ValueError(f"bad layer {token!r} in arch {arch!r}: use c<channels>[k<kernel>] or p")
        layers.append(("conv", int(match[1]), int(match[2] or 3)))
    if not any(kind == "conv" for kind, _, _ in layers):
        raise ValueError(f"arch {arch!r} has no convolution")
    return layers


def build_network(arch: str = ARCH):
    """The layers of `arch` (see ARCH), then global average pooling, dropout 0.1 and FC(10).

    Input `(n, 1, 28, 28)`, output logits `(n, 10)`.
    """
    from torch import nn

    layers, cin = [], 1
    for kind, channels, kernel in _parse_arch(arch):
        if kind == "pool":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [
            nn.Conv2d(cin, channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        cin = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin, 10))


def architecture_summary(arch: str = ARCH) -> str:
    parts = [
        "maxpool2" if kind == "pool" else f"conv{kernel}x{kernel}({channels})-BN-ReLU"
        for kind, channels, kernel in _parse_arch(arch)
    ]
    return ", ".join([*parts, "global-avg-pool", "dropout 0.1", "FC(10)"])


def _inference_module(net, temperature: float):
    """(n, 784) in [0, 1] -> softmax(logits / T): the exact graph that is exported to ONNX."""
    import torch
    from torch import nn

    class Served(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature, dtype=torch.float32))

        def forward(self, x):
            logits = self.net(x.reshape(-1, 1, 28, 28))
            return torch.softmax(logits * self.inv_temperature, dim=1)

    return Served().eval()


def export_onnx(net, temperature: float) -> bytes:
    """The trained network (eval mode: BN folded by the exporter) as ONNX bytes, checked by onnx."""
    import io
    import warnings

    import onnx
    import torch

    module = _inference_module(net, temperature)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter warns that it is legacy
        torch.onnx.export(
            module,
            (torch.zeros(1, 784),),
            buf,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = f"digitlab {NAME} {VERSION}: softmax(logits / {temperature:.4f})"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --- augmentation ----------------------------------------------------------------------------------


def _shift_max(x):
    """3x3 grey dilation (max over the 8-neighbourhood): separable shifted maxima, ~10x faster than max_pool2d."""
    import torch
    import torch.nn.functional as F

    p = F.pad(x, (1, 1, 1, 1))
    h = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(h[..., :-2, :], h[..., 1:-1, :]), h[..., 2:, :])


def _cross_min(x):
    """Grey erosion by a plus-shaped element (gentler than 3x3: MNIST strokes are only 2-3 px wide)."""
    import torch
    import torch.nn.functional as F

    p = F.pad(x, (1, 1, 1, 1))
    c = p[..., 1:-1, 1:-1]
    out = torch.minimum(c, torch.minimum(p[..., 1:-1, :-2], p[..., 1:-1, 2:]))
    return torch.minimum(out, torch.minimum(p[..., :-2, 1:-1], p[..., 2:, 1:-1]))


_CACHE: dict = {}


def _upsample_matrix(g: int):
    """(28, g) bicubic interpolation matrix: U @ field @ U.T upsamples a g x g field to 28 x 28."""
    import torch
    import torch.nn.functional as F

    key = ("up", g)
    if key not in _CACHE:
        eye = torch.eye(g).view(g, 1, g, 1)
        _CACHE[key] = F.interpolate(eye, size=(28, 1), mode="bicubic", align_corners=True)[
            :, 0, :, 0
        ].T.contiguous()
    return _CACHE[key]


def _base_grid():
    """(784, 3) homogeneous pixel-centre coordinates in [-1, 1] (x, y, 1), as `affine_grid` uses them."""
    import torch

    if "grid" not in _CACHE:
        c = (torch.arange(28, dtype=torch.float32) * 2 + 1) / 28 - 1
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        _CACHE["grid"] = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.ones(784)], 1)
    return _CACHE["grid"]


def augment_batch(x, generator, aug: Augmentation = Augmentation()):
    """Randomly distort a batch `(b, 1, 28, 28)` float in [0, 1]; batched torch ops, no python loops.

    Stroke thickness (dilation / erosion blended with a random strength), then one resampling for
    a random affine map (rotation, scale, aspect, shear, translation) plus, on a random subset, an
    elastic displacement field (random g x g control points, bicubically upsampled).
    """
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def uniform(lo: float, hi: float, *shape: int):
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=generator)

    # stroke thickness
    r = torch.rand(b, generator=generator)
    strength = uniform(0.4, 1.0).view(b, 1, 1, 1)
    thick = (r < aug.thicken_p).float().view(b, 1, 1, 1) * strength
    thin = ((r >= aug.thicken_p) & (r < aug.thicken_p + aug.thin_p)).float().view(b, 1, 1, 1) * strength
    x = x + thick * (_shift_max(x) - x) + thin * (_cross_min(x) - x)
    # erosion also dims the ink: stretch those images back so their brightest pixel is 1 again
    peak = x.amax(dim=(2, 3), keepdim=True).clamp_min(0.2)
    x = torch.where(thin > 0, x / peak, x)

    # affine: output -> input sampling matrix (normalized coords, 1 px = 2/28)
    angle = uniform(-1.0, 1.0) * math.radians(aug.rotation_deg)
    scale = uniform(*aug.scale)
    sx = scale * uniform(1 - aug.aspect, 1 + aug.aspect)
    sy = scale * uniform(1 - aug.aspect, 1 + aug.aspect)
    shear = uniform(-aug.shear, aug.shear)
    tx = uniform(-1.0, 1.0) * aug.translate_px * 2 / 28
    ty = uniform(-1.0, 1.0) * aug.translate_px * 2 / 28
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map M = R @ Shear @ S; sampling needs its inverse S^-1 @ Shear^-1 @ R^-1
    a11, a12 = (cos + shear * sin) / sx, (sin - shear * cos) / sx
    a21, a22 = -sin / sy, cos / sy
    theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)  # (b, 2, 3)
    grid = torch.matmul(_base_grid(), theta.transpose(1, 2)).view(b, 28, 28, 2)

    # elastic: coarse random displacements, smoothly upsampled, on a random subset
    g = aug.elastic_grid
    field = torch.randn(b, 2, g, g, generator=generator) * (aug.elastic_px * 2 / 28)
    field = field * (torch.rand(b, 1, 1, 1, generator=generator) < aug.elastic_p).float()
    up = _upsample_matrix(g)
    field = up @ field @ up.T  # (b, 2, 28, 28)
    grid = grid + field.permute(0, 2, 3, 1)

    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)


# --- calibration -----------------------------------------------------------------------------------


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    logp = _log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the validation NLL of softmax(logits / T): log-grid, then golden section."""
    labels = np.asarray(labels, np.int64)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    losses = [nll(logits, labels, t) for t in grid]
    i = int(np.argmin(losses))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if nll(logits, labels, math.exp(a)) < nll(logits, labels, math.exp(b)):
            hi = b
        else:
            lo = a
    return float(math.exp((lo + hi) / 2))


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs((pred[mask] == labels[mask]).mean() - conf[mask].mean())
    return float(ece)


# --- onnxruntime evaluation ------------------------------------------------------------------------


def onnx_session(model: bytes | str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not isinstance(model, bytes):
        model = Path(model).read_bytes()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnx_predict_proba(session, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """`images` (n, 28, 28) uint8 or (n, 784) float in [0, 1] -> (n, 10) float32 probabilities."""
    x = np.asarray(images)
    x = x.reshape(len(x), 784)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


# --- training --------------------------------------------------------------------------------------


class _Progress:
    """Per-epoch lines on stderr (always), plus a rich progress bar over the batches on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.console = None
        self.bar = None
        if enabled:
            from rich.console import Console

            self.console = Console(file=sys.stderr, highlight=False)

    def line(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, soft_wrap=True)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.done, self.batches = 0, batches
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"cnn epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                console=self.console, transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("train", total=batches, loss=float("nan"))

    def advance(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss)
        elif self.enabled:  # log files: a line at each quarter of the epoch instead of a live bar
            self.done += 1
            if self.done < self.batches and self.done % max(1, self.batches // 4) == 0:
                self.line(f"  {self.done}/{self.batches} batches, loss {loss:.4f}")

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _evaluate_logits(net, images_u8, batch: int = 1000) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images_u8), batch):
            x = images_u8[i : i + batch].float().div_(255.0).unsqueeze(1)
            out.append(net(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


class _WeightAverage:
    """Exponential moving average of a network's float parameters and buffers (BN statistics).

    The decay ramps up as `(1 + t) / (10 + t)` so early steps are not dominated by the random init.
    """

    def __init__(self, net, decay: float):
        import copy

        self.decay = decay
        self.steps = 0
        self.net = copy.deepcopy(net).eval()
        self._avg = [t for t in self._tensors(self.net)]
        self._live = [t for t in self._tensors(net)]

    @staticmethod
    def _tensors(net) -> list:
        return [*net.parameters(), *(b for b in net.buffers() if b.is_floating_point())]

    def update(self) -> None:
        import torch

        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            torch._foreach_lerp_(self._avg, self._live, 1.0 - decay)


def train_network(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
):
    """Train the network; returns `(net in eval mode, history list of per-epoch dicts)`.

    Deterministic for a given `config.seed` (and thread count): model init, data order and every
    augmentation draw come from seeded generators.
    """
    torch = _import_torch()
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    # channels_last: oneDNN's fast path for these convolutions on CPU (~25 % less CPU per step here)
    net = build_network(config.arch).to(memory_format=torch.channels_last)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    aug_gen = torch.Generator().manual_seed(config.seed + 2)

    x_all = torch.from_numpy(np.array(train_images, dtype=np.uint8).reshape(-1, 28, 28))  # writable copies
    y_all = torch.from_numpy(np.array(train_labels, dtype=np.int64))
    x_val = torch.from_numpy(np.array(val_images, dtype=np.uint8).reshape(-1, 28, 28))
    n = len(x_all)
    batches_per_epoch = max(1, n // config.batch_size)  # drop the ragged last batch (BN stability)
    total_steps = config.epochs * batches_per_epoch

    optimizer = torch.optim.AdamW(net.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, total_steps=total_steps, pct_start=0.25,
        div_factor=20.0, final_div_factor=200.0,
    )  # fmt: skip
    average = _WeightAverage(net, config.ema_decay) if config.ema_decay else None
    display = _Progress(progress)
    display.line(
        f"cnn: training on {n:,} images ({len(x_val):,} held out for validation), {config.epochs} epochs, "
        f"batch {config.batch_size}, {sum(p.numel() for p in net.parameters()):,} parameters, "
        f"{torch.get_num_threads()} threads"
    )
    history: list[dict] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(n, generator=data_gen)
        loss_sum, correct, seen = 0.0, 0, 0
        display.start_epoch(epoch, config.epochs, batches_per_epoch)
        try:
            for step in range(batches_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x = x_all[idx].float().div_(255.0).unsqueeze(1)
                y = y_all[idx]
                with torch.no_grad():
                    x = augment_batch(x, aug_gen, config.augmentation)
                x = x.contiguous(memory_format=torch.channels_last)
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if average is not None:
                    average.update()
                batch_loss = loss.detach().item()
                loss_sum += batch_loss * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                display.advance(batch_loss)
        finally:
            display.end_epoch()
        train_seconds = time.perf_counter() - started
        val_logits = _evaluate_logits(net if average is None else average.net, x_val)
        val_acc = float((val_logits.argmax(1) == val_labels).mean()) if len(val_labels) else float("nan")
        record = {
            "epoch": epoch,
            "loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_accuracy": val_acc,
            "seconds": time.perf_counter() - started,
            "train_seconds": train_seconds,
        }
        history.append(record)
        display.line(
            f"cnn epoch {epoch:2d}/{config.epochs}  loss {record['loss']:.4f}  "
            f"train acc {100 * record['train_accuracy']:.2f}%  val acc {100 * val_acc:.2f}%  "
            f"lr {scheduler.get_last_lr()[0]:.2e}  {record['seconds']:.1f} s"
        )
        if on_epoch is not None:
            on_epoch(record)
    if average is not None:
        net = average.net
    net = net.to(memory_format=torch.contiguous_format).eval()
    return net, history


def train_cnn(
    out_dir: Path | str,
    *,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    limit: int | None = None,
    progress: bool = True,
    extra_data: tuple[np.ndarray, np.ndarray] | None = None,
    mnist_dir: Path | str | None = None,
    test_limit: int | None = None,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Train the CNN and write `<out_dir>/cnn.onnx` + `<out_dir>/cnn.json`; return the manifest.

    - `limit`: use only the first N MNIST training images (quick runs); `VAL_SIZE` (or 10 % when
      fewer than 50k images) of them are held out, by a seeded shuffle, for validation + temperature.
    - `extra_data`: additional `(images (m, 28, 28) uint8 ink-255-on-0, labels (m,))` appended to the
      training part only (never to validation or test), augmented like MNIST.
    - `mnist_dir`: MNIST folder; default `DIGITLAB_MNIST_DIR` (else data/mnist) via `digitlab.data`.
    - `test_limit`: score on the first N test images only (tests); the manifest says so.
    Accuracy and the confusion matrix are measured with onnxruntime on the exported file itself.
    """
    torch = _import_torch()

    from digitlab.models.artifacts import accuracy_and_confusion, library_versions, save_artifact

    started = time.perf_counter()
    if config is None:
        config = TrainConfig(epochs=epochs, seed=seed)
    mnist_dir = Path(mnist_dir) if mnist_dir is not None else None
    images, labels = _load_mnist("train", mnist_dir, limit)
    test_images, test_labels = _load_mnist("test", mnist_dir, test_limit)
    val_size = min(config.val_size, len(images) // 10)
    train_idx, val_idx = _split_validation(len(images), val_size, config.seed)
    x_train, y_train = images[train_idx], labels[train_idx]
    extra_samples = 0
    if extra_data is not None:
        extra_x, extra_y = extra_data
        extra_x = np.asarray(extra_x)
        if (
            extra_x.dtype != np.uint8
            or extra_x.shape[1:] not in ((28, 28), (784,))
            or len(extra_x) != len(extra_y)
        ):
            raise ValueError(
                "extra_data must be (images (m, 28, 28) uint8, labels (m,)) with matching lengths"
            )
        extra_y = np.asarray(extra_y, dtype=np.uint8)
        if extra_y.size and extra_y.max() > 9:
            raise ValueError("extra_data labels must be digits 0-9")
        x_train = np.concatenate([x_train, extra_x.reshape(-1, 28, 28)])
        y_train = np.concatenate([y_train, extra_y])
        extra_samples = len(extra_y)
    x_val, y_val = images[val_idx], labels[val_idx].astype(np.int64)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        net, history = train_network(x_train, y_train, x_val, y_val, config, progress=progress)
        val_logits = _evaluate_logits(net, torch.from_numpy(np.array(x_val, dtype=np.uint8)))
        temperature = fit_temperature(val_logits, y_val) if len(y_val) else 1.0
        payload = export_onnx(net, temperature)
    finally:
        torch.set_num_threads(previous_threads)
    training_seconds = time.perf_counter() - started

    session = onnx_session(payload, threads=THREADS)
    proba = onnx_predict_proba(session, test_images)
    y_test = test_labels.astype(np.int64)
    accuracy, confusion = accuracy_and_confusion(y_test, proba.argmax(axis=1))
    p_true = np.clip(proba[np.arange(len(y_test)), y_test].astype(np.float64), 1e-12, 1.0)
    val_proba = np.exp(_log_softmax(val_logits / temperature))
    metrics = {
        "mnist_test_accuracy": round(accuracy, 5),
        "mnist_test_log_loss": round(float(-np.log(p_true).mean()), 5),
        "mnist_test_ece": round(expected_calibration_error(proba.astype(np.float64), y_test), 5),
        "validation_accuracy": round(float((val_logits.argmax(1) == y_val).mean()), 5)
        if len(y_val)
        else None,
        "validation_log_loss_before_temperature": round(nll(val_logits, y_val), 5) if len(y_val) else None,
        "validation_log_loss": round(nll(val_logits, y_val, temperature), 5) if len(y_val) else None,
        "validation_ece": round(expected_calibration_error(val_proba, y_val), 5) if len(y_val) else None,
    }
    if test_limit is not None:
        metrics["mnist_test_samples"] = len(y_test)
    aug = asdict(config.augmentation)
    manifest = {
        "display_name": DISPLAY_NAME,
        "version": VERSION,
        "training_seconds": round(training_seconds, 1),
        "train_samples": len(y_train),
        "library_versions": library_versions("torch", "onnx"),
        "metrics": metrics,
        "confusion_matrix": confusion,
        "params": {
            "epochs": config.epochs,
            "seed": config.seed,
            "temperature": round(temperature, 6),
            "architecture": architecture_summary(config.arch),
            "arch": config.arch,
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "input": f"{INPUT_NAME} float32 (n, 784) in [0, 1], ink = 1",
            "output": f"{OUTPUT_NAME} float32 (n, 10) = softmax(logits / temperature)",
            "opset": OPSET,
            "batch_size": config.batch_size,
            "optimizer": f"AdamW(weight_decay={config.weight_decay}) + OneCycle(max_lr={config.max_lr})",
            "label_smoothing": config.label_smoothing,
            "ema_decay": config.ema_decay,
            "validation_samples": len(y_val),
            "extra_samples": extra_samples,
            "limit": limit,
            "threads": THREADS,
            "augmentation": {k: list(v) if isinstance(v, tuple) else v for k, v in aug.items()},
            "history": [
                {k: round(v, 5) if isinstance(v, float) else v for k, v in h.items()} for h in history
            ],
        },
    }
    manifest = save_artifact(Path(out_dir), NAME, payload, "onnx", manifest)
    if progress:
        _Progress(True).line(
            f"cnn: test accuracy {100 * accuracy:.2f}% (onnxruntime, {len(y_test):,} images), "
            f"temperature {temperature:.3f}, {len(payload) / 1e6:.2f} MB, {training_seconds:.0f} s -> "
            f"{Path(out_dir) / ARTIFACT}"
        )
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m digitlab.models.cnn [--out DIR] [--epochs N] [--seed S] [--limit N]` (rebuilds the bundle)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m digitlab.models.cnn", description=main.__doc__)
    parser.add_argument(
        "--out", type=Path, default=BUNDLED_DIR, help="output folder (default: the bundled one)"
    )
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    manifest = train_cnn(
        args.out, epochs=args.epochs, seed=args.seed, limit=args.limit, progress=not args.quiet
    )
    print(f"mnist_test_accuracy={manifest['metrics']['mnist_test_accuracy']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
