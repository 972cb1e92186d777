"""digitlab.data against the real MNIST files, damaged copies, and mirrors served on loopback."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from digitlab import data
from digitlab.data import CHECKSUMS, DatasetError, ensure_mnist, load_mnist
from digitlab.errors import DigitlabError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIGITLAB_MNIST_DIR") or REPO.parent / "shared" / "mnist")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def shared() -> Path:
    if not all((SHARED / name).is_file() for name in CHECKSUMS):
        pytest.skip(f"the four MNIST files are not in {SHARED} (set DIGITLAB_MNIST_DIR)")
    return SHARED


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Loopback mirrors must never go through a proxy configured in the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_test_split(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in TEST_FILES:
        shutil.copyfile(src / name, dst / name)
    return dst


def flip_byte(path: Path, offset: int = 1000) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset % len(raw)] ^= 0xFF
    path.write_bytes(bytes(raw))


def assert_one_line(exc: DatasetError, *, code: str, mentions: str) -> None:
    message = str(exc)
    assert isinstance(exc, DigitlabError)
    assert exc.code == code
    assert "\n" not in message
    assert mentions in message, message


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of a static HTTP server on 127.0.0.1 (stopped after the test)."""
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path, handler: type[SimpleHTTPRequestHandler] = _QuietHandler) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class _HangUpHandler(_QuietHandler):
    """Promises the whole file, sends a third of it, then drops the connection."""

    def do_GET(self) -> None:
        body = (Path(self.directory) / Path(self.path).name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3])
        self.wfile.flush()
        self.close_connection = True


def closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/"


# --- reading the real files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "n", "counts"), [("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)]
)
def test_real_files_shapes_and_label_counts(shared, split, n, counts):
    images, labels = load_mnist(split, directory=shared, download=False)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == counts
    assert images.min() == 0 and images.max() == 255


def test_repeated_loads_are_cached_read_only_and_limit_slices(shared):
    images, labels = load_mnist("test", directory=shared)
    again, _ = load_mnist("test", directory=shared)
    assert again is images  # parsed once per process
    assert not images.flags.writeable  # shared cache: nobody may change it in place
    first, first_labels = load_mnist("test", directory=shared, limit=7)
    assert first.shape == (7, 28, 28) and np.array_equal(first_labels, labels[:7])
    assert first_labels.tolist() == [7, 2, 1, 0, 4, 1, 4]


def test_complete_read_only_folder_is_only_read(shared):
    # a dead mirror proves nothing is downloaded when every file is present
    assert ensure_mnist(shared, mirrors=[closed_port_url()], progress=False) == shared


def test_bad_arguments(shared):
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", directory=shared)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        load_mnist("test", directory=shared, limit=-1)


# --- damaged or missing files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TEST_FILES)
def test_flipped_byte_is_reported_as_corrupt(shared, tmp_path, name):
    folder = copy_test_split(shared, tmp_path / "mnist")
    flip_byte(folder / name)
    with pytest.raises(DatasetError) as info:
        load_mnist("test", directory=folder)  # present but bad: never silently re-downloaded
    assert_one_line(info.value, code="dataset_corrupt", mentions=str(folder / name))
    assert "SHA-256 mismatch" in str(info.value) and "DIGITLAB_MNIST_DIR" in str(info.value)


def test_truncated_file_is_reported(shared, tmp_path):
    folder = copy_test_split(shared, tmp_path / "mnist")
    path = folder / TEST_FILES[0]
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DatasetError) as info:
        load_mnist("test", directory=folder, download=False)
    assert_one_line(info.value, code="dataset_corrupt", mentions=str(path))
    assert "truncated (100,000 of 1,648,877 bytes)" in str(info.value)


def test_file_replaced_after_loading_is_noticed(shared, tmp_path):
    folder = copy_test_split(shared, tmp_path / "mnist")
    load_mnist("test", directory=folder, download=False)
    flip_byte(folder / TEST_FILES[1])
    os.utime(folder / TEST_FILES[1], ns=(1, 1))  # a new mtime, whatever the clock resolution
    with pytest.raises(DatasetError, match="corrupt"):
        load_mnist("test", directory=folder, download=False)


def test_missing_file_without_download(shared, tmp_path):
    folder = copy_test_split(shared, tmp_path / "mnist")
    (folder / TEST_FILES[1]).unlink()
    with pytest.raises(DatasetError) as info:
        load_mnist("test", directory=folder, download=False)
    assert_one_line(info.value, code="dataset_missing", mentions=str(folder / TEST_FILES[1]))
    assert "DIGITLAB_MNIST_DIR" in str(info.value)


@pytest.mark.parametrize(
    ("magic", "dims", "payload", "problem"),
    [(2049, (2, 28, 28), 2 * 784, "unexpected IDX header"), (2051, (2, 28, 28), 2 * 784 - 1, "data bytes")],
)
def test_idx_header_validation(tmp_path, magic, dims, payload, problem):
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(payload)
    with pytest.raises(DatasetError, match=problem) as info:
        data._parse_idx(raw, tmp_path / "x.gz", data.IMAGES_MAGIC, (2, 28, 28))
    assert info.value.code == "dataset_corrupt"


# --- downloading from mirrors ----------------------------------------------------------------------


def test_download_from_loopback_mirror(shared, tmp_path, serve, capsys):
    target = tmp_path / "new" / "mnist"
    assert ensure_mnist(target, mirrors=[serve(shared)], progress=True) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(CHECKSUMS)
    for name in CHECKSUMS:
        assert sha(target / name) == sha(shared / name)
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # progress on stderr
    images, labels = load_mnist("train", directory=target, download=False)
    assert images.shape == (60000, 28, 28) and np.bincount(labels).tolist() == TRAIN_COUNTS


def test_load_downloads_only_its_split(shared, tmp_path, serve, monkeypatch):
    monkeypatch.setenv("DIGITLAB_MNIST_DIR", str(tmp_path / "env-mnist"))
    monkeypatch.setenv("DIGITLAB_MNIST_MIRRORS", f'["{serve(shared)}"]')
    images, _ = load_mnist("test")  # location and mirrors both from the environment
    assert images.shape == (10000, 28, 28)
    assert sorted(p.name for p in (tmp_path / "env-mnist").iterdir()) == sorted(TEST_FILES)


def test_corrupt_mirror_is_rejected_and_next_one_used(shared, tmp_path, serve):
    bad = copy_test_split(shared, tmp_path / "bad")
    flip_byte(bad / TEST_FILES[0])
    shutil.copyfile(shared / TEST_FILES[0], bad / TEST_FILES[1])  # labels name, far too many bytes
    target = tmp_path / "mnist"
    ensure_mnist(target, mirrors=[serve(bad), serve(shared)], splits=("test",), progress=False)
    for name in TEST_FILES:
        assert sha(target / name) == sha(shared / name)
    assert sorted(p.name for p in target.iterdir()) == sorted(TEST_FILES)  # no temp files left


def test_all_mirrors_bad_leaves_nothing_behind(shared, tmp_path, serve):
    bad = copy_test_split(shared, tmp_path / "bad")
    flip_byte(bad / TEST_FILES[0])
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / TEST_FILES[0]).write_bytes((shared / TEST_FILES[0]).read_bytes()[:5000])
    mirrors = [serve(bad), serve(truncated), serve(tmp_path / "empty"), closed_port_url()]
    (tmp_path / "empty").mkdir()
    target = tmp_path / "mnist"
    with pytest.raises(DatasetError) as info:
        ensure_mnist(target, mirrors=mirrors, splits=("test",), progress=False)
    assert_one_line(info.value, code="dataset_missing", mentions=str(target / TEST_FILES[0]))
    message = str(info.value)
    assert "SHA-256 mismatch" in message and "truncated" in message and "404" in message
    assert all(m in message for m in mirrors)
    assert list(target.iterdir()) == []  # no partial or temp files


def test_connection_dropped_mid_download_then_next_mirror(shared, tmp_path, serve, caplog):
    target = tmp_path / "mnist"
    mirrors = [serve(shared, _HangUpHandler), serve(shared)]
    ensure_mnist(target, mirrors=mirrors, splits=("test",), progress=False)
    assert f"{mirrors[0]}{TEST_FILES[0]} failed" in caplog.text  # the first mirror really broke off
    assert sorted(p.name for p in target.iterdir()) == sorted(TEST_FILES)


def test_interrupted_download_leaves_no_temp_file(shared, tmp_path, serve, monkeypatch):
    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(data.os, "fsync", interrupt)  # Ctrl-C after the bytes arrived, before the move
    target = tmp_path / "mnist"
    with pytest.raises(KeyboardInterrupt):
        ensure_mnist(target, mirrors=[serve(shared)], splits=("test",), progress=False)
    assert list(target.iterdir()) == []


def test_no_mirrors_configured(tmp_path):
    with pytest.raises(DatasetError) as info:
        ensure_mnist(tmp_path, mirrors=[], splits=("test",), progress=False)
    assert_one_line(info.value, code="dataset_missing", mentions="no mirrors configured")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_says_so(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatasetError) as info:
        ensure_mnist(blocker / "mnist", mirrors=[], splits=("test",), progress=False)
    assert_one_line(info.value, code="dataset_missing", mentions="is not writable")
