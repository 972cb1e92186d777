"""Several worker processes (the default on a multi-core machine) behave as one server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from .conftest import LiveServer, free_port


def _total(text: str, metric: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((metric + "{", metric + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scrape(server: LiveServer) -> str:
    with httpx.Client(base_url=server.url, timeout=30) as client:  # a new connection: either worker
        return client.get("/metrics").text


def test_two_workers_share_one_metrics_view(served_model_dir, tmp_path, sample_png):
    """Each request on its own connection lands on either worker; every scrape, whichever worker
    answers it, counts all of them (per-worker counters made one scrape show about half), and a drawing's
    strokes count one drawing, whichever workers answer them. A killed
    worker's counts stay, and its replacement drops the dead one's gauges."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {
        "DIGITLAB_MODEL_DIR": str(served_model_dir),
        "DIGITLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'digitlab.db').as_posix()}",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),  # an operator's folder: used as it is
    }
    server = LiveServer("two-workers", env, tmp_path, workers=2).start()
    try:
        for _ in range(24):
            with httpx.Client(base_url=server.url, timeout=30) as client:  # a new connection each time
                r = client.post("/api/v1/predict", files={"image": ("d.png", sample_png, "image/png")})
                assert r.status_code == 200 and r.json()["logged"] is True
        for _ in range(10):  # ten strokes of one drawing, on either worker: one drawing (it counted one per worker)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                r = client.post("/api/v1/predict", files={"image": ("d.png", sample_png, "image/png")},
                                data={"drawing_id": "strokes", "session_id": "s"})  # fmt: skip
                assert r.status_code == 200
        log = server.log_text()
        pids = set(re.findall(r"Started server process \[(\d+)\]", log))
        assert len(pids) == 2, log[-2000:]
        for _ in range(6):
            text = _scrape(server)
            assert _total(text, "digitlab_predictions_total") == 25
            assert _total(text, "digitlab_drawing_updates_total") == 9
            assert _total(text, "digitlab_http_requests_total", route="/api/v1/predict", status="200") == 34
            assert _total(text, "digitlab_database_up") == 1
            assert _total(text, "digitlab_model_ready", model="cnn") == 1

        dead = min(pids)
        os.kill(int(dead), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(re.findall(r"Application startup complete", server.log_text())) < 3:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        assert not list(folder.glob(f"gauge_live*_{dead}.db"))  # the replacement dropped them
        assert list(folder.glob(f"counter_{dead}.db"))  # what the dead worker counted stays
        for _ in range(4):
            text = _scrape(server)
            assert _total(text, "digitlab_predictions_total") == 25
            assert _total(text, "digitlab_database_up") == 1
    finally:
        server.stop()


def test_ctrl_c_while_the_workers_start_leaves_no_tracebacks(served_model_dir, tmp_path):
    """A Ctrl-C reaches the whole process group: two workers still importing printed two KeyboardInterrupt
    tracebacks (the parent's "Started parent process" line comes while they import, for about a second).
    Now they ignore it until they serve, the parent stops them, and serve exits 0 in a few seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITLAB_", "POSTGRES_", "DATABASE_URL"))}
    env.update(DIGITLAB_MODEL_DIR=str(served_model_dir), DIGITLAB_DATA_DIR=str(tmp_path / "data"),
               DATABASE_URL=f"sqlite:///{(tmp_path / 'digitlab.db').as_posix()}")  # fmt: skip
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "digitlab", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
             "--workers", "2"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)  # fmt: skip
        log = []
        for line in proc.stdout:  # (the workers are spawned right after this line)
            log.append(line)
            if "Started parent process" in line:
                break
        time.sleep(0.05 * attempt)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the parent and both workers
        rest, _ = proc.communicate(timeout=60)
        text = "".join(log) + rest
        assert proc.returncode == 0, text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert "API stopped" in text, text


def test_a_paused_worker_is_not_killed(served_model_dir, tmp_path, sample_png):
    """uvicorn kills a worker that does not answer its health ping in time, cutting that worker's requests.
    Its default of 5 s killed a worker that was only paused (stopped 8 s here, as a container throttled or a
    machine swapping): "Child process [pid] died" and a new one loading its models. Now both keep serving."""
    env = {
        "DIGITLAB_MODEL_DIR": str(served_model_dir),
        "DIGITLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{(tmp_path / 'digitlab.db').as_posix()}",
    }
    server = LiveServer("paused-worker", env, tmp_path, workers=2).start()
    try:
        deadline = time.monotonic() + 60
        while len(pids := set(re.findall(r"Started server process \[(\d+)\]", server.log_text()))) < 2:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        paused = int(min(pids))
        os.kill(paused, signal.SIGSTOP)
        try:
            time.sleep(8)
        finally:
            os.kill(paused, signal.SIGCONT)
        time.sleep(2)  # the parent pings every half second: a kill would have come by now
        log = server.log_text()
        assert "died" not in log, log[-2000:]
        assert set(re.findall(r"Started server process \[(\d+)\]", log)) == pids, log[-2000:]
        for _ in range(8):  # either worker, each on a new connection
            with httpx.Client(base_url=server.url, timeout=30) as client:
                r = client.post("/api/v1/predict", files={"image": ("d.png", sample_png, "image/png")})
                assert r.status_code == 200, r.text
    finally:
        server.stop()
