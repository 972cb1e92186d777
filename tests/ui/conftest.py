"""Browser-test fixtures: the real API and the real Streamlit server as subprocesses, headless chromium.

The API serves the `tiny_model_dir` models (plus the bundled CNN when there is one; TRAINING_MODEL
shows as still training) from a throw-away SQLite database; the UI is started exactly like a user
would (`python -m digitlab ui --port N`). Both run in their own process group and are stopped (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from ui_browser import TRAINING_MODEL

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DIGITLAB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def free_port() -> int:
    """A port nobody listens on: the system's pick, or on a shared machine the first free one of the range
    `DIGITLAB_TEST_PORTS` names ("8760-8799")."""
    first, _, last = os.environ.get("DIGITLAB_TEST_PORTS", "0").partition("-")
    for port in range(int(first), int(last or first) + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in DIGITLAB_TEST_PORTS={os.environ['DIGITLAB_TEST_PORTS']}")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DIGITLAB_", "POSTGRES_")) and k != "DATABASE_URL"
    }
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """A subprocess with a readiness URL; `stop()` / `start()` can be repeated (the outage test does)."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], cwd: Path, ready_path: str, port: int
    ):
        self.name, self.args, self.env, self.cwd = name, args, env, cwd
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_url = self.url + ready_path
        self.proc: subprocess.Popen | None = None
        self.log = cwd / f"{name}.log"

    def start(self, timeout: float = 90.0) -> Server:
        log = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digitlab", *self.args], cwd=self.cwd, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.ready_url, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # the group we created: the server and its children only
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def ui_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="session")
def ui_model_dir(tiny_model_dir, ui_workdir) -> Path:
    """The tiny models, with TRAINING_MODEL 'training': the pages must show that state too."""
    import shutil

    out = ui_workdir / "models"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("*.training", f"{TRAINING_MODEL}.*"))
    (out / f"{TRAINING_MODEL}.training").touch()
    return out


@pytest.fixture(scope="session")
def api_server(ui_model_dir, ui_workdir):
    port = free_port()
    env = _clean_env(
        DIGITLAB_MODEL_DIR=str(ui_model_dir),
        DATABASE_URL=f"sqlite:///{(ui_workdir / 'ui.db').as_posix()}",
        DIGITLAB_DATA_DIR=str(ui_workdir),
    )
    # one API process: on 2 cores a second worker only competes with Chromium for the CPU
    # (several workers are covered by tests/api/test_workers.py and the runner tests)
    server = Server("api", ["serve", "--port", str(port), "--workers", "1"], env, ui_workdir, "/health", port).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ui_server(api_server, ui_workdir):
    port = free_port()
    env = _clean_env(DIGITLAB_API_URL=api_server.url)
    server = Server("ui", ["ui", "--port", str(port)], env, ui_workdir, "/_stcore/health", port).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (set DIGITLAB_TEST_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


# Streamlit's "Download as CSV" uses the save-file picker when the browser has one (a dialog headless
# chromium cannot answer); without it, it falls back to an ordinary download that playwright catches.
NO_SAVE_PICKER = "window.showSaveFilePicker = undefined;"


@pytest.fixture
def desktop(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    context.add_init_script(NO_SAVE_PICKER)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture
def phone(browser):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True,
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                   "Version/17.0 Mobile/15E148 Safari/604.1",
    )  # fmt: skip
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()
