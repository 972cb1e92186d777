"""Training the CNN with PyTorch (`digitlab train cnn`, the `cnn` extra); served by onnxruntime.

The temperature of the exported softmax is fitted on a held-out validation split (calibrated
probabilities). torch is imported inside functions only.

Training is seeded and deterministic (fixed data order, seeded augmentation, 2 threads): the same
seed reproduces the same network. Augmentation is done on whole batches in torch (one affine +
elastic warp through `grid_sample`, stroke thickening/thinning through max-pooling), so it costs a
few percent of an epoch. Extra 28x28 training images (e.g. canvas drawings re-rendered and run
through `digitlab.preprocess.to_mnist`) can be mixed in with `extra_data`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from digitlab.models.onnx import OnnxClassifier
from digitlab.models.registry import MODEL_SPECS
from digitlab.training.calibration import expected_calibration_error, fit_temperature, nll
from digitlab.training.cnn_augment import Augmentation, augment_batch
from digitlab.training.cnn_net import (
    ARCH,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    architecture_summary,
    bf16_is_fast,
    build_network,
    export_onnx,
    import_torch,
    merge_members,
)
from digitlab.training.progress import EpochProgress, log

DEFAULT_EPOCHS = 8
DEFAULT_SEED = 0
VAL_SIZE = 2000  # held out of the 60k training images: temperature fit + per-epoch monitoring
BATCH_SIZE = 128
THREADS = 2
SPEC = MODEL_SPECS["cnn"]


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
    #: independently trained networks (seeds seed, seed + 1, ...) served as one: the mean of their logits
    #: (`cnn_net.merge_members`). Two read real handwriting and MNIST better than one (one trained for 10
    #: epochs instead of 8 gained nothing), three keep MNIST test at 99.6 % once settled on real handwriting
    #: where two lost 4-7 test digits (models/bundled/README.md)
    members: int = 3
    augmentation: Augmentation = field(default_factory=Augmentation)
    #: the forward pass in bfloat16 (`torch.autocast`) where the CPU multiplies bfloat16 in hardware (AMX,
    #: AVX512-BF16): oneDNN's convolutions take ~0.55-0.64x the time there; elsewhere bfloat16 is emulated and
    #: slower, so float32 stays. None: decide from the CPU (`bf16_is_fast`)
    bf16: bool | None = None

    def uses_bf16(self) -> bool:
        """Whether training runs the forward pass in bfloat16 (`bf16`, or the CPU's answer when None)."""
        return bf16_is_fast() if self.bf16 is None else self.bf16


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


# --- augmentation ----------------------------------------------------------------------------------


# --- calibration -----------------------------------------------------------------------------------


# --- onnxruntime evaluation ------------------------------------------------------------------------


# --- training --------------------------------------------------------------------------------------


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
    torch = import_torch()
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
    bf16 = config.uses_bf16()
    display = EpochProgress(progress)
    display.line(
        f"cnn: training on {n:,} images ({len(x_val):,} held out for validation), {config.epochs} epochs, "
        f"batch {config.batch_size}, {sum(p.numel() for p in net.parameters()):,} parameters, "
        f"{torch.get_num_threads()} threads, {'bfloat16' if bf16 else 'float32'}"
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
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
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


def _test_metrics(payload: bytes, test_images: np.ndarray, test_labels: np.ndarray) -> tuple[dict[str, float], list]:
    """({mnist_test_accuracy, mnist_test_log_loss, mnist_test_ece}, confusion matrix) of an exported CNN,
    measured with onnxruntime on the file itself."""
    from digitlab.models.artifacts import accuracy_and_confusion

    proba = OnnxClassifier(payload).predict_proba(test_images.reshape(len(test_images), 784) / np.float32(255))
    y_test = test_labels.astype(np.int64)
    accuracy, confusion = accuracy_and_confusion(y_test, proba.argmax(axis=1))
    p_true = np.clip(proba[np.arange(len(y_test)), y_test].astype(np.float64), 1e-12, 1.0)
    return {
        "mnist_test_accuracy": round(accuracy, 5),
        "mnist_test_log_loss": round(float(-np.log(p_true).mean()), 5),
        "mnist_test_ece": round(expected_calibration_error(proba.astype(np.float64), y_test), 5),
    }, confusion


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
    extra_summary: dict | None = None,
) -> dict[str, Any]:
    """Train the CNN and write `<out_dir>/cnn.onnx` + `<out_dir>/cnn.json`; return the manifest.

    - `limit`: use only the first N MNIST training images (quick runs); `VAL_SIZE` (or 10 % when
      fewer than 50k images) of them are held out, by a seeded shuffle, for validation + temperature.
    - `extra_data`: additional `(images (m, 28, 28) uint8 ink-255-on-0, labels (m,))` appended to the
      training part only (never to validation or test), augmented like MNIST.
    - `mnist_dir`: MNIST folder; default `DIGITLAB_MNIST_DIR` (else data/mnist) via `digitlab.data`.
    - `test_limit`: score on the first N test images only (tests); the manifest says so.
    - `extra_summary`: what `extra_data` is made of, for the manifest (`params.extra_training_data`).
    Accuracy and the confusion matrix are measured with onnxruntime on the exported file itself.
    """
    torch = import_torch()

    from digitlab.models.artifacts import library_versions, save_artifact

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
        nets, history = [], []
        for member in range(config.members):
            member_config = replace(config, seed=config.seed + member)
            if config.members > 1 and progress:
                log(f"cnn: member {member + 1} of {config.members} (seed {member_config.seed})")
            net, member_history = train_network(x_train, y_train, x_val, y_val, member_config, progress=progress)
            nets.append(net)
            history += [{"member": member + 1, **record} for record in member_history]
        net = merge_members(nets, config.arch) if len(nets) > 1 else nets[0]
        val_logits = _evaluate_logits(net, torch.from_numpy(np.array(x_val, dtype=np.uint8)))
        temperature = fit_temperature(val_logits, y_val) if len(y_val) else 1.0
        payload = export_onnx(net, temperature)
    finally:
        torch.set_num_threads(previous_threads)
    training_seconds = time.perf_counter() - started

    test_metrics, confusion = _test_metrics(payload, test_images, test_labels)
    accuracy, y_test = test_metrics["mnist_test_accuracy"], test_labels
    val_proba = softmax(val_logits / temperature, axis=1)
    metrics = {
        **test_metrics,
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
        "display_name": SPEC.display_name,
        "version": SPEC.version,
        "training_seconds": round(training_seconds, 1),
        "train_samples": len(y_train),
        "library_versions": library_versions("torch", "onnx"),
        "metrics": metrics,
        "confusion_matrix": confusion,
        "params": {
            "epochs": config.epochs,
            "seed": config.seed,
            "temperature": round(temperature, 6),
            "architecture": architecture_summary(config.arch, config.members),
            "members": config.members,
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
            "extra_training_data": extra_summary,
            "limit": limit,
            "threads": THREADS,
            "precision": "bfloat16 forward (autocast)" if config.uses_bf16() else "float32",
            "augmentation": {k: list(v) if isinstance(v, tuple) else v for k, v in aug.items()},
            "history": [
                {k: round(v, 5) if isinstance(v, float) else v for k, v in h.items()} for h in history
            ],
        },
    }
    manifest = save_artifact(Path(out_dir), SPEC.name, payload, "onnx", manifest)
    if progress:
        EpochProgress(True).line(
            f"cnn: test accuracy {100 * accuracy:.2f}% (onnxruntime, {len(y_test):,} images), "
            f"temperature {temperature:.3f}, {len(payload) / 1e6:.2f} MB, {training_seconds:.0f} s -> "
            f"{Path(out_dir) / (SPEC.name + '.onnx')}"
        )
    return manifest




#: Re-drawn MNIST training digits (canvas-like pens and rare styles, see `training/augment.py`) added to the
#: CNN's training set so it reads canvas drawings as well as scans.
CNN_DRAWN_SAMPLES = 8_000
#: On top, the classical models' extra data (`training/coverage.py`: style drawings and the real
#: handwriting that is not held out), Semeion's few writers twice: chosen on the real calibration part
#: (docs/real.md, "What moved the numbers").
CNN_REAL_REPEAT = {"semeion": 2}
#: Then the trained CNN is settled on real handwriting (`settle_on_real_handwriting`): fine-tuned for two short
#: epochs (`cnn_finetune`, as `digitlab learn` does with users' drawings) on distorted copies of Semeion's fit
#: part mixed with its own training data, keeping 0.7 of the change (three networks; two kept 0.5: with three
#: the same MNIST test is reached with more of the change, models/bundled/README.md). Training on the copies
#: from the start did less for more time (session 10: Semeion 97.5 %, MNIST 99.48 %).
SETTLE_VARIANTS = {"semeion": 20}
SETTLE_SHARE = 0.7  #: of the fine-tuned weights, the rest the trained network's ("WiSE-FT")
SETTLE_MNIST = 30_000  #: MNIST training images (a seeded sample) in the fine-tuning mix, beside the coverage set


def train_cnn_with_drawings(settings, *, limit: int | None = None, jobs: int | None = None) -> dict:
    """Train the CNN (needs the `cnn` extra: torch) on MNIST, re-drawn training digits and the coverage set."""
    from digitlab.training.augment import drawn_training_set
    from digitlab.training.coverage import coverage_set

    count = CNN_DRAWN_SAMPLES if limit is None else min(CNN_DRAWN_SAMPLES, max(limit // 3, 100))
    marker = Path(settings.model_dir) / "cnn.training"  # the API and UI show "training" meanwhile
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        log(f"cnn: rendering {count} training digits as canvas drawings")
        drawn = drawn_training_set(
            count, seed=0, mnist_dir=settings.mnist_dir, jobs=jobs, cache_dir=settings.data_dir / "cache"
        )
        images, labels, summary = coverage_set(settings, limit=limit, jobs=jobs, real_repeat=CNN_REAL_REPEAT)
        extra = (np.concatenate([drawn[0], images]), np.concatenate([drawn[1], labels]))
        manifest = train_cnn(
            settings.model_dir, limit=limit, mnist_dir=settings.mnist_dir, extra_data=extra,
            extra_summary={"drawn_digits": len(drawn[1]), **summary},
        )  # fmt: skip
        if limit is not None:  # quick runs (tests) leave real handwriting out, as the coverage set does
            return manifest
        from digitlab.training.coverage import real_variant_set

        log(f"cnn: settling on real handwriting (distorted copies: {SETTLE_VARIANTS})")
        real = real_variant_set(settings.handwriting_path, SETTLE_VARIANTS, jobs=jobs, cache_dir=settings.data_dir / "cache")
        if real is None:
            return manifest
        mnist_x, mnist_y = _load_mnist("train", settings.mnist_dir, None)
        pick = np.random.default_rng(0).choice(len(mnist_x), min(SETTLE_MNIST, len(mnist_x)), replace=False)
        base = (np.concatenate([mnist_x[pick], images]), np.concatenate([mnist_y[pick], labels]))
        settle_on_real_handwriting(settings.model_dir, real, base, mnist_dir=settings.mnist_dir)
        from digitlab.evaluation.heldout import measure_saved

        return measure_saved(settings.model_dir, SPEC.name, settings.handwriting_path, settings.data_dir / "cache")
    finally:
        marker.unlink(missing_ok=True)


def settle_on_real_handwriting(
    out_dir: Path | str,
    real: tuple[np.ndarray, np.ndarray],
    base: tuple[np.ndarray, np.ndarray],
    *,
    mnist_dir: Path | str | None = None,
    test_limit: int | None = None,
) -> dict[str, Any]:
    """Fine-tune the CNN in `out_dir` on `real` (uint8 (n, 28, 28), labels) mixed with `base` (its own kind of
    training data), keep `SETTLE_SHARE` of the change, score it on MNIST test and write it back (cnn.onnx +
    cnn.json, the manifest saying so); returns the manifest."""
    from digitlab.models.artifacts import read_verified, save_artifact
    from digitlab.training.cnn_finetune import EPOCHS, finetune

    started = time.perf_counter()
    manifest, payload = read_verified(Path(out_dir), SPEC.name)
    settled = finetune(payload, real, base, weight=1, shares=(SETTLE_SHARE,))[SETTLE_SHARE]
    test_images, test_labels = _load_mnist("test", Path(mnist_dir) if mnist_dir is not None else None, test_limit)
    test_metrics, confusion = _test_metrics(settled, test_images, test_labels)
    accuracy = test_metrics["mnist_test_accuracy"]
    metrics = manifest["metrics"]
    before = metrics["mnist_test_accuracy"]
    metrics.update(test_metrics)
    seconds = time.perf_counter() - started
    manifest["confusion_matrix"] = confusion
    manifest["training_seconds"] = round(manifest["training_seconds"] + seconds, 1)
    manifest["params"]["settled_on_real_handwriting"] = {
        "real_images": len(real[1]), "base_images": len(base[1]), "epochs": EPOCHS, "share": SETTLE_SHARE,
        "mnist_test_accuracy_before": before, "seconds": round(seconds, 1),
    }  # fmt: skip
    manifest.pop("trained_at", None)
    manifest = save_artifact(Path(out_dir), SPEC.name, settled, "onnx", manifest)
    log(f"cnn: settled on real handwriting: test accuracy {100 * before:.2f}% -> {100 * accuracy:.2f}%, {seconds:.0f} s")
    return manifest
