"""MNIST: read the four official IDX .gz files, verify them, and fetch them from mirrors when absent.

Every file is checked against its official SHA-256 before it is parsed, so a model is never trained or
scored on a damaged copy. Downloads go to a temp file in the target folder and are moved into place
only once verified, so an interrupted or bad download never leaves a half-written file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import httpx
import numpy as np

from digitlab.core.config import Settings
from digitlab.errors import DigitlabError

log = logging.getLogger(__name__)

Split = Literal["train", "test"]

#: split -> (images file, labels file)
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: official SHA-256 and size in bytes of each gzip file (as in the MNIST distribution's SHA256SUMS)
CHECKSUMS: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
}
SPLIT_SIZES = {"train": 60000, "test": 10000}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_FIX_CORRUPT = "delete it and run again to re-download, or point DIGITLAB_MNIST_DIR at a good copy"


class DatasetError(DigitlabError):
    """The MNIST files are missing or damaged; codes `dataset_missing` / `dataset_corrupt`."""

    code = "dataset_error"


class _BadDownload(Exception):
    """A mirror answered, but not with the official file."""


def _one_line(exc: BaseException) -> str:
    """Exception text squeezed to one short line, so it can sit inside a one-line error message."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _check_split(split: str) -> tuple[str, str]:
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return FILES[split]


# --- verification ----------------------------------------------------------------------------------


def _fingerprint(path: Path) -> tuple[int, int]:
    """(size, mtime) so the caches notice a file that was replaced on disk."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=32)
def _sha256(path: Path, fingerprint: tuple[int, int]) -> str:
    """Hashing the 10 MB training file costs ~30 ms: do it once per (path, size, mtime) per process."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_file(path: Path) -> None:
    """Raise `DatasetError` unless `path` is byte-identical to the official MNIST file of that name."""
    path = Path(path)
    expected_sha, expected_size = CHECKSUMS[path.name]
    try:
        fingerprint = _fingerprint(path)
    except FileNotFoundError:
        raise DatasetError(
            f"{path} is missing: put the four MNIST .gz files in {path.parent} "
            "or point DIGITLAB_MNIST_DIR at a folder that has them",
            code="dataset_missing",
        ) from None
    size = fingerprint[0]
    if size < expected_size:
        raise DatasetError(
            f"{path} is truncated ({size:,} of {expected_size:,} bytes): {_FIX_CORRUPT}",
            code="dataset_corrupt",
        )
    if _sha256(path.absolute(), fingerprint) != expected_sha:
        raise DatasetError(f"{path} is corrupt (SHA-256 mismatch): {_FIX_CORRUPT}", code="dataset_corrupt")


# --- parsing ---------------------------------------------------------------------------------------


def _parse_idx(raw: bytes, path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Check an uncompressed IDX buffer's header against what MNIST must be and return it as uint8."""
    ndim = len(shape)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(
            f"{path} is not an MNIST IDX file (too short): {_FIX_CORRUPT}", code="dataset_corrupt"
        )
    found_magic, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if found_magic != magic or tuple(dims) != shape:
        raise DatasetError(
            f"{path} has an unexpected IDX header (magic {found_magic}, dims {tuple(dims)}; "
            f"expected {magic}, {shape}): {_FIX_CORRUPT}",
            code="dataset_corrupt",
        )
    if len(raw) != header + int(np.prod(shape)):
        raise DatasetError(
            f"{path} has {len(raw) - header:,} data bytes, expected {int(np.prod(shape)):,}: {_FIX_CORRUPT}",
            code="dataset_corrupt",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)  # read-only view


def _read_gz(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path} cannot be decompressed ({_one_line(exc)}): {_FIX_CORRUPT}", code="dataset_corrupt"
        ) from None


@lru_cache(maxsize=4)
def _load_cached(
    images_path: Path, labels_path: Path, split: str, fingerprints: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Parse one split once per process; the arrays are read-only because every caller shares them."""
    n = SPLIT_SIZES[split]
    images = _parse_idx(_read_gz(images_path), images_path, IMAGES_MAGIC, (n, 28, 28))
    labels = _parse_idx(_read_gz(labels_path), labels_path, LABELS_MAGIC, (n,))
    if labels.max(initial=0) > 9:
        raise DatasetError(f"{labels_path} has labels outside 0-9: {_FIX_CORRUPT}", code="dataset_corrupt")
    return images, labels


def load_mnist(
    split: Split,
    *,
    directory: Path | None = None,
    download: bool = True,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 28, 28)` uint8 (ink 255 on 0) and labels `(N,)` uint8 of the official split.

    `directory` defaults to `Settings().mnist_path` (DIGITLAB_MNIST_DIR, else data/mnist). Missing
    files are downloaded unless `download=False`. `limit` keeps the first N samples (quick runs).
    Arrays are cached per process and read-only: copy them before changing them in place.
    """
    names = _check_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    directory = Path(directory) if directory is not None else Settings().mnist_path
    if download:
        ensure_mnist(directory, splits=(split,))
    paths = [directory / name for name in names]
    for path in paths:
        verify_file(path)
    key = tuple(p.absolute() for p in paths)
    images, labels = _load_cached(*key, split, tuple(_fingerprint(p) for p in paths))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


# --- download --------------------------------------------------------------------------------------


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(file=sys.stderr),
        disable=not enabled,
    )


def _fetch(url: str, target: Path, progress: bool) -> None:
    """Download `url` to `target` through a temp file in the same folder; only a verified file lands."""
    expected_sha, expected_size = CHECKSUMS[target.name]
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, timeout=_TIMEOUT, follow_redirects=True) as response,
        ):
            response.raise_for_status()  # before the bar, so a dead mirror draws no empty bar
            with _progress_bar(progress) as bar:
                task = bar.add_task(target.name, total=expected_size)
                for chunk in response.iter_bytes(1 << 16):
                    size += len(chunk)
                    if size > expected_size:  # a wrong or hostile file: stop reading early
                        raise _BadDownload(f"larger than {expected_size:,} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(task, advance=len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if size != expected_size:
            raise _BadDownload(f"truncated ({size:,} of {expected_size:,} bytes)")
        if digest.hexdigest() != expected_sha:
            raise _BadDownload("SHA-256 mismatch")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # a no-op after os.replace


def _download(target: Path, mirrors: Sequence[str], progress: bool) -> None:
    """Try each mirror in order; raise one line naming the file, every mirror's failure and the fix."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=target.parent).close()
    except OSError as exc:
        raise DatasetError(
            f"{target} is missing and {target.parent} is not writable ({_one_line(exc)}): point "
            "DIGITLAB_MNIST_DIR at a folder with the four MNIST files, or at a writable one",
            code="dataset_missing",
        ) from None
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + target.name
        try:
            _fetch(url, target, progress)
            return
        except (httpx.HTTPError, OSError, _BadDownload) as exc:
            log.warning("MNIST mirror %s failed: %s", url, _one_line(exc))
            failures.append(f"{mirror}: {_one_line(exc)}")
    tried = "; ".join(failures) if failures else "no mirrors configured"
    raise DatasetError(
        f"{target} is missing and could not be downloaded ({tried}): check the network or "
        "DIGITLAB_MNIST_MIRRORS, or put the official file there by hand",
        code="dataset_missing",
    )


def ensure_mnist(
    directory: Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    splits: Iterable[Split] = ("train", "test"),
) -> Path:
    """Make sure `directory` holds verified MNIST files for `splits`, downloading the missing ones.

    Files already present are only verified, never rewritten, so a read-only complete folder works.
    Returns the folder. Progress goes to stderr; each failed mirror is logged as a warning.
    """
    directory = Path(directory) if directory is not None else Settings().mnist_path
    for split in splits:
        for name in _check_split(split):
            target = directory / name
            if not target.exists():
                if mirrors is None:
                    mirrors = Settings().mnist_mirrors
                _download(target, mirrors, progress)
            verify_file(target)
    return directory
