"""API fixtures: real servers (`python -m digitlab serve` subprocesses on free ports) over real models
(the session's tiny classical models) and real databases (SQLite files, throw-away PostgreSQL DBs).

The served model folder is arranged so every model state is present: svm and svm_pca ready,
random_forest "training" (only its `.training` marker), extra_trees missing; cnn is whatever the package
bundles. Servers are started once per session and shared; they run with an admin token.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "DIGITLAB_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ADMIN_TOKEN = "test-admin-token-0123456789"
READY = ["svm", "svm_pca"]  # ready in the served folder (cnn too when the package bundles it)
TRAINING = "random_forest"
MISSING = "extra_trees"
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def draw_digit(
    size: int = 280, *, pen: str = "#1f2340", bg: str = "white", fmt: str = "PNG", mode: str = "RGB", **save
) -> bytes:
    """A drawn '7' like the UI's canvas makes it."""
    k = size / 280
    im = Image.new("RGB", (size, size), bg)
    ImageDraw.Draw(im).line(
        [(80 * k, 62 * k), (196 * k, 58 * k), (150 * k, 140 * k), (118 * k, 226 * k)],
        fill=pen,
        width=max(2, round(18 * k)),
        joint="curve",
    )
    if mode != "RGB":
        im = im.convert(mode)
    out = io.BytesIO()
    im.save(out, format=fmt, **save)
    return out.getvalue()


@pytest.fixture(scope="session")
def sample_png() -> bytes:
    return draw_digit()


@pytest.fixture(scope="session")
def served_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny models with every state represented (see module docstring)."""
    out = tmp_path_factory.mktemp("served_models")
    for path in tiny_model_dir.iterdir():
        if path.stem in READY and path.suffix in (".json", ".joblib", ".onnx"):
            shutil.copy2(path, out / path.name)
    (out / f"{TRAINING}.training").touch()
    return out


class LiveServer:
    """`python -m digitlab serve` in a subprocess; its log is kept and shown when something fails."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path, workers: int = 1):
        self.name = name
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / f"server-{name}.log"
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    def start(self) -> LiveServer:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DIGITLAB_", "POSTGRES_", "DATABASE_URL"))
        }
        env.update(self.env)
        cmd = [sys.executable, "-m", "digitlab", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", str(self.workers)]  # default 1 here: restarts are simple (serve's default: one per core)
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + STARTUP_TIMEOUT
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    self.startup_seconds = time.perf_counter() - started
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server {self.name} not ready within {STARTUP_TIMEOUT} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def client(self, **kwargs) -> httpx.Client:
        """An httpx client whose every answer is checked against the OpenAPI document (openapi_check.py)."""
        from .openapi_check import check_response

        kwargs.setdefault("event_hooks", {"response": [check_response]})
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)


def pg_admin():
    import psycopg

    conninfo = make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)


class PgDatabases:
    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> str:
        name = f"digitlab_test_{uuid.uuid4().hex[:10]}"
        with pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.names:
            return
        with pg_admin() as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


class Servers:
    """Live servers by name, started on first use and stopped at the end of the session."""

    def __init__(self, model_dir: Path, root: Path, pg: PgDatabases):
        self.model_dir = model_dir
        self.root = root
        self.pg = pg
        self.running: dict[str, LiveServer] = {}

    def get(self, backend: str) -> LiveServer:
        server = self.running.get(backend)
        if server is not None and server.alive():
            return server
        workdir = self.root / backend
        workdir.mkdir(exist_ok=True)
        if backend == "sqlite":
            url = f"sqlite:///{(workdir / 'digitlab.db').as_posix()}"
        elif backend == "postgresql":
            try:
                url = self.pg.create()
            except Exception as exc:  # the run needs the real PostgreSQL: fail, never skip  # noqa: BLE001
                pytest.fail(
                    f"PostgreSQL is required for the API tests ({PG_ADMIN_URL}): {exc}", pytrace=False
                )
        else:
            raise ValueError(backend)
        env = {
            "DIGITLAB_MODEL_DIR": str(self.model_dir),
            "DIGITLAB_DATA_DIR": str(workdir / "data"),
            "DATABASE_URL": url,
            "DIGITLAB_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        server = LiveServer(backend, env, workdir).start()
        self.running[backend] = server
        return server

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="session")
def servers(served_model_dir, tmp_path_factory, pg_databases) -> Iterator[Servers]:
    s = Servers(served_model_dir, tmp_path_factory.mktemp("servers"), pg_databases)
    yield s
    s.stop_all()


@pytest.fixture(scope="session")
def live_server(servers) -> LiveServer:
    """The SQLite-backed server (most contract tests and the bad-input corpus)."""
    return servers.get("sqlite")


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_server(request, servers) -> LiveServer:
    """Each backend in turn, for the tests that read back from the prediction store."""
    return servers.get(request.param)


@pytest.fixture
def api(live_server) -> Iterator[httpx.Client]:
    with live_server.client() as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """The documented error shape: JSON {"detail": sentence, "code": code} with this status."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"] and body["detail"][-1] in ".!?", body
    if status == 503:  # says when to try again (RFC 9110 10.2.3): seconds, as a number
        assert response.headers.get("retry-after", "").isdigit(), dict(response.headers)
    return body
