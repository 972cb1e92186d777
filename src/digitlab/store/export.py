"""Labelled drawings as a dataset: CSV (`label,pixel0..pixel783`, like Kaggle's MNIST) and MNIST IDX.

Pixels are the 28x28 input the model saw, 0-255 with ink bright, i.e. exactly MNIST's convention, so an
export can be appended to the MNIST training data. Files are written to a temporary name and renamed, so
a failed export never leaves a half-written dataset behind.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

IMAGES_FILE = "images-idx3-ubyte"
LABELS_FILE = "labels-idx1-ubyte"
log = logging.getLogger("digitlab.store")
CSV_HEADER = "label," + ",".join(f"pixel{i}" for i in range(784))


def png_to_pixels(png: bytes) -> np.ndarray:
    """784 uint8 values of a 28x28 greyscale PNG (resized if it is another size)."""
    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("L")
        if img.size != (28, 28):
            img = img.resize((28, 28), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).reshape(784)


def _pixels(samples: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, np.ndarray]]:
    """Decoded samples; an unreadable PNG is skipped (logged) rather than failing the whole export."""
    for label, png in samples:
        try:
            yield label, png_to_pixels(png)
        except (OSError, ValueError) as exc:
            log.warning("skipping an unreadable processed image in the export: %s", exc)


def write_csv(samples: Iterable[tuple[int, bytes]], out: Path | str | IO[str]) -> int:
    if not isinstance(out, str | Path):
        return _csv_rows(samples, out)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w", newline="") as fh:
            n = _csv_rows(samples, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _csv_rows(samples: Iterable[tuple[int, bytes]], fh: IO[str]) -> int:
    fh.write(CSV_HEADER + "\n")
    n = 0
    for label, pixels in _pixels(samples):
        fh.write(f"{label}," + ",".join(map(str, pixels.tolist())) + "\n")
        n += 1
    return n


def write_idx(samples: Iterable[tuple[int, bytes]], directory: Path | str) -> int:
    """`images-idx3-ubyte` (magic 2051, n, 28, 28, pixels) and `labels-idx1-ubyte` (magic 2049, n,
    labels), big-endian like the MNIST originals. The count goes into the headers once known."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = directory / IMAGES_FILE, directory / LABELS_FILE
    tmp_images, tmp_labels = images.with_name(IMAGES_FILE + ".tmp"), labels.with_name(LABELS_FILE + ".tmp")
    try:
        with open(tmp_images, "w+b") as fi, open(tmp_labels, "w+b") as fl:
            fi.write(struct.pack(">IIII", 2051, 0, 28, 28))
            fl.write(struct.pack(">II", 2049, 0))
            n = 0
            for label, pixels in _pixels(samples):
                fi.write(pixels.tobytes())
                fl.write(bytes([label]))
                n += 1
            for fh in (fi, fl):
                fh.seek(4)
                fh.write(struct.pack(">I", n))
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp_images, images)
        os.replace(tmp_labels, labels)
    finally:
        tmp_images.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)
    return n


def read_idx(directory: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) uint8) from `write_idx` output."""
    directory = Path(directory)
    raw = (directory / IMAGES_FILE).read_bytes()
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{directory / IMAGES_FILE} is not an IDX image file")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    raw = (directory / LABELS_FILE).read_bytes()
    magic, m = struct.unpack(">II", raw[:8])
    if magic != 2049 or m != n:
        raise ValueError(f"{directory / LABELS_FILE} does not match the image file")
    return images, np.frombuffer(raw, dtype=np.uint8, offset=8)
