"""`digitlab run` as a person uses it: start, wait for both URLs, stop with Ctrl-C (SIGINT) or SIGTERM.

Each test runs the real command in a subprocess (real uvicorn, real Streamlit, real training) on free
ports, with a private model folder, data folder (SQLite) and working directory; afterwards no process
it started may be left and both ports must be free.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from digitlab import processes, runner
from digitlab.api.upkeep import sample_drawing

READY_LINE = "Ctrl-C stops both."
START_TIMEOUT = 180.0  # generous: CI shares two cores with the rest of the suite
STOP_LIMIT = 5.0  # the acceptance criterion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """A server could listen there now (SO_REUSEADDR like uvicorn/Streamlit) and nothing answers."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    return not runner.port_in_use("127.0.0.1", port)


def _proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, pgid, state, start time) from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0], fields[19])
    return table


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """Every live descendant of `pid`: pid -> (pgid, start time)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(p)
    out, todo = {}, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        ppid, pgid, state, start = table[p]
        if state != "Z":
            out[p] = (pgid, start)
        todo.extend(children.get(p, []))
    return out


def survivors(recorded: dict[int, tuple[int, str]]) -> list[str]:
    """Recorded processes still alive (same pid and start time), and any live member of their groups."""
    table = _proc_table()
    groups = {pgid for pgid, _ in recorded.values()}
    left = []
    for pid, (_ppid, pgid, state, start) in table.items():
        if state == "Z":
            continue
        if recorded.get(pid, (None, None))[1] == start or pgid in groups:
            try:
                cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmd = "?"
            left.append(f"{pid} {cmd}")
    return left


def _kill_survivors(recorded: dict[int, tuple[int, str]]) -> None:
    """SIGKILL recorded processes that still run (same pid *and* start time: never a recycled pid)."""
    table = _proc_table()
    for pid, (_pgid, start) in recorded.items():
        if pid in table and table[pid][3] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Run:
    """`python -m digitlab run ...` (or any argv) in a subprocess, its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path):
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, bufsize=1,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None:
                self._reader.join(2)
                for line in self.lines:
                    if re.search(pattern, line):
                        return re.search(pattern, line)
                pytest.fail(f"exited with {self.proc.returncode} before printing {pattern!r}:\n{self.output}")
            time.sleep(0.1)
        pytest.fail(f"no {pattern!r} after {timeout:.0f} s:\n{self.output}")

    def stop(self, sig: int) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=STOP_LIMIT + 5)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"digitlab run still running {STOP_LIMIT + 5:.0f} s after {signal.Signals(sig).name}:\n{self.output}"
            )
        self._reader.join(2)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Last-resort cleanup so a failed test leaves nothing behind."""
        for pid, (pgid, _) in descendants(self.proc.pid).items():
            for kill, target in ((os.killpg, pgid), (os.kill, pid)):
                try:
                    kill(target, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def app_env(tmp_path, tiny_model_dir):
    """Environment for one `digitlab run`: free ports, private model/data folders, SQLite, no .env."""
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models, ignore=shutil.ignore_patterns("*.training"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DIGITLAB_", "POSTGRES_")) and k != "DATABASE_URL"
    }
    if os.environ.get("DIGITLAB_MNIST_DIR"):
        env["DIGITLAB_MNIST_DIR"] = os.environ["DIGITLAB_MNIST_DIR"]
    env.update(
        DIGITLAB_MODEL_DIR=str(models),
        DIGITLAB_DATA_DIR=str(tmp_path / "data"),
        DIGITLAB_PORT=str(free_port()),
        DIGITLAB_UI_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return env


def _ports(env) -> tuple[int, int]:
    return int(env["DIGITLAB_PORT"]), int(env["DIGITLAB_UI_PORT"])


def _start(env, tmp_path, *args: str) -> Run:
    return Run([sys.executable, "-m", "digitlab", "run", *args], env, tmp_path)


def _check_clean_stop(run: Run, sig: int, env) -> float:
    recorded = descendants(run.proc.pid)
    assert len(recorded) >= 3, f"expected API, UI launcher and Streamlit under the runner, got {recorded}"
    code, took = run.stop(sig)
    assert code == 0, run.output
    assert took <= STOP_LIMIT, f"stopping took {took:.1f} s:\n{run.output}"
    time.sleep(0.2)  # let init reap what was reparented to it
    assert survivors(recorded) == [], run.output
    api_port, ui_port = _ports(env)
    assert port_free(api_port) and port_free(ui_port)
    return took


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_starts_both_and_stops_cleanly(app_env, tmp_path, sig):
    api_port, ui_port = _ports(app_env)
    run = _start(app_env, tmp_path, "--no-train")
    try:
        run.wait_for(re.escape(READY_LINE))
        assert f"http://127.0.0.1:{ui_port}" in run.output and f"http://127.0.0.1:{api_port}" in run.output
        health = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=5).json()
        assert {name for name, state in health["models"].items() if state == "ready"} >= {"svm", "svm_pca"}
        assert httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=5).status_code == 200
        answer = httpx.post(
            f"http://127.0.0.1:{api_port}/api/v1/predict", files={"image": ("d.png", sample_drawing(), "image/png")},
            data={"model": "svm"}, timeout=30,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert (tmp_path / "data" / "digitlab.db").exists()  # migrated SQLite store
        _check_clean_stop(run, sig, app_env)
        assert re.search(r"stopped (UI, API|API, UI) in \d", run.output), run.output
    finally:
        run.kill()


class Poller:
    """GETs `url` every 0.1 s in a thread until stopped; counts the answers that were not 200."""

    def __init__(self, url: str):
        self.url, self.answers, self.failures = url, 0, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(0.1):
            try:
                status = httpx.get(self.url, timeout=2).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.answers += 1
            if status != 200:
                self.failures.append(status)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)


def _api_processes(runner_pid: int) -> list[psutil.Process]:
    """The API's uvicorn parent (`digitlab serve`) and every process under it (its workers)."""
    serve = [p for p in psutil.Process(runner_pid).children() if p.cmdline()[-1:] == ["serve"]]
    assert len(serve) == 1, serve
    return [serve[0], *serve[0].children(recursive=True)]


def _wait_healthy(url: str, timeout: float) -> float:
    """Seconds until `url` answers 200; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s")


def test_killed_api_comes_back_while_the_ui_stays_up(app_env, tmp_path):
    """Acceptance (issue 13.2): SIGKILL to every API process (uvicorn parent and workers) -> /health answers
    again within 30 s, the UI answers throughout, and Ctrl-C still stops everything with both ports free."""
    app_env["DIGITLAB_WORKERS"] = "2"  # a parent with worker processes, as on a multi-core machine
    api_port, ui_port = _ports(app_env)
    api, ui = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}/_stcore/health"
    run = _start(app_env, tmp_path, "--no-train")
    try:
        run.wait_for(re.escape(READY_LINE))
        victims = _api_processes(run.proc.pid)
        assert len(victims) >= 3, victims  # parent + 2 workers
        ui_before = {p.pid: p.create_time() for p in psutil.Process(run.proc.pid).children(recursive=True)
                     if p not in victims}  # fmt: skip
        poller = Poller(ui)
        try:
            for victim in victims:
                victim.kill()
            psutil.wait_procs(victims, timeout=5)
            took = _wait_healthy(f"{api}/health", timeout=30)
            run.wait_for(r"the API answers again", timeout=10)
            answer = httpx.post(f"{api}/api/v1/predict", files={"image": ("d.png", sample_drawing(), "image/png")},
                                data={"model": "svm"}, timeout=30)  # fmt: skip
            assert answer.status_code == 200, answer.text

            # SIGTERM from outside to the new parent: a second restart in a row waits longer.
            _api_processes(run.proc.pid)[0].terminate()
            run.wait_for(r"the API was stopped from outside \(it shut down cleanly\); restarting it in 2 s", timeout=15)
            _wait_healthy(f"{api}/health", timeout=30)
        finally:
            poller.stop()
        assert poller.answers > 20 and poller.failures == [], (poller.failures, run.output)
        ui_after = {p.pid: p.create_time() for p in psutil.Process(run.proc.pid).children(recursive=True)}
        assert all(ui_after.get(pid) == created for pid, created in ui_before.items()), "the UI was restarted"
        assert "the API stopped unexpectedly (killed by SIGKILL); restarting it in 1 s" in run.output, (
            run.output
        )
        assert took <= 30
        _check_clean_stop(run, signal.SIGINT, app_env)
    finally:
        run.kill()


def test_supervised_child_restarts_with_growing_backoff(monkeypatch, capsys):
    """The restart step on a plain child process: a death is reported with its cause, the restart waits
    BACKOFF_FIRST, then twice as long when the restarted child dies before it ever answered."""
    monkeypatch.setattr(runner, "BACKOFF_FIRST", 0.2)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    children = [processes.start_child("UI", argv, dict(os.environ))]
    keeper = runner.Supervised(children[0], argv, dict(os.environ), f"http://127.0.0.1:{free_port()}/")
    try:
        first = keeper.child
        first.proc.kill()
        first.proc.wait(5)
        keeper.check(children)
        assert (
            "the UI stopped unexpectedly (killed by SIGKILL); restarting it in 0.2 s"
            in capsys.readouterr().out
        )
        assert keeper.delay == 0.2
        while keeper.child is first:
            keeper.check(children)
            time.sleep(0.02)
        assert children == [keeper.child] and keeper.child.running()
        keeper.child.proc.terminate()
        keeper.child.proc.wait(5)
        keeper.check(children)
        assert keeper.delay == 0.4  # doubled: it died again before it ever answered
        assert "(killed by SIGTERM); restarting it in 0.4 s" in capsys.readouterr().out
    finally:
        for child in children:
            processes.stop_children([child])


def test_children_stop_even_when_the_runner_is_killed(app_env, tmp_path):
    """SIGKILL cannot be handled: the children are started with a parent-death signal instead."""
    run = _start(app_env, tmp_path, "--no-train")
    recorded: dict[int, tuple[int, str]] = {}
    try:
        run.wait_for(re.escape(READY_LINE))
        recorded = descendants(run.proc.pid)
        run.proc.kill()
        run.proc.wait(5)
        deadline = time.monotonic() + 15
        while survivors(recorded) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert survivors(recorded) == []
        api_port, ui_port = _ports(app_env)
        assert port_free(api_port) and port_free(ui_port)
    finally:
        run.kill()
        _kill_survivors(recorded)  # the runner is gone: clean up by hand if the test failed


def test_busy_port_is_one_line_and_starts_nothing(app_env, tmp_path):
    api_port, _ = _ports(app_env)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", api_port))
        blocker.listen()
        run = _start(app_env, tmp_path, "--no-train")
        try:
            code = run.proc.wait(timeout=60)
            run._reader.join(2)
        finally:
            run.kill()
    assert code == 2
    errors = [line for line in run.lines if line.strip()]
    assert len(errors) == 1, run.output
    assert f"port {api_port}" in errors[0] and "already in use" in errors[0] and "DIGITLAB_PORT" in errors[0]


def test_a_busy_port_suggests_a_free_one_that_is_not_the_ui_s():
    """With the API port busy, `run` suggested DIGITLAB_PORT=<port + 1>: the UI's own port, a second clash."""
    from digitlab.core.config import Settings
    from digitlab.ports import port_in_use

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        with pytest.raises(runner.PortInUseError) as refused:
            runner.check_ports(Settings(host="127.0.0.1", port=busy, ui_host="127.0.0.1", ui_port=busy + 1))
        suggested = int(re.search(r"DIGITLAB_PORT=(\d+)", str(refused.value))[1])
        assert suggested not in (busy, busy + 1) and not port_in_use("127.0.0.1", suggested), str(refused.value)


def _run_training(env, tmp_path, limit: int) -> Run:
    """`digitlab run` with the background training limited to `limit` images (seconds, not minutes)."""
    return Run(
        [sys.executable, "-m", "digitlab", "run"], {**env, "DIGITLAB_TRAIN_LIMIT": str(limit)}, tmp_path
    )


def test_missing_models_train_in_background_while_others_answer(app_env, tmp_path, mnist_dir):
    models = Path(app_env["DIGITLAB_MODEL_DIR"])
    for path in models.glob("svm.*"):
        path.unlink()
    app_env["DIGITLAB_MNIST_DIR"] = str(mnist_dir)
    api_port, _ = _ports(app_env)
    api = f"http://127.0.0.1:{api_port}"
    run = _run_training(app_env, tmp_path, 1500)
    try:
        run.wait_for(re.escape(READY_LINE))
        assert "svm training" in run.output  # the banner's model list
        assert runner.missing_models(models) == ["svm"]
        # The others answer at once.
        answer = httpx.post(f"{api}/api/v1/predict", files={"image": ("d.png", sample_drawing(), "image/png")},
                            data={"model": "svm_pca"}, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        states = httpx.get(f"{api}/health", timeout=5).json()["models"]
        if states["svm"] != "ready":  # (training 1,500 images may already be over)
            assert states["svm"] == "training"
            refused = httpx.post(f"{api}/api/v1/predict", files={"image": ("d.png", sample_drawing(), "image/png")},
                                 data={"model": "svm"}, timeout=30)  # fmt: skip
            assert refused.status_code == 503 and refused.json()["code"] == "model_not_ready"
        run.wait_for(r"training finished: svm ready", timeout=300)
        deadline, answered = time.monotonic() + 30, 0
        while answered < 4:  # every worker picks it up (one may answer "ready" a moment before another)
            answer = httpx.post(f"{api}/api/v1/predict", files={"image": ("d.png", sample_drawing(), "image/png")},
                                data={"model": "svm"}, timeout=30)  # fmt: skip
            ready = httpx.get(f"{api}/health", timeout=5).json()["models"]["svm"] == "ready"
            answered = answered + 1 if answer.status_code == 200 and ready else 0
            assert time.monotonic() < deadline, f"the API did not pick up the trained model: {answer.text}"
            if answered == 0:
                time.sleep(0.5)
        assert not list(models.glob("*.training"))
        _check_clean_stop(run, signal.SIGINT, app_env)
    finally:
        run.kill()


def test_stop_during_training_leaves_no_worker_and_no_marker(app_env, tmp_path, mnist_dir):
    models = Path(app_env["DIGITLAB_MODEL_DIR"])
    for path in [*models.glob("random_forest.*"), *models.glob("extra_trees.*")]:
        path.unlink()
    app_env["DIGITLAB_MNIST_DIR"] = str(mnist_dir)
    run = _run_training(app_env, tmp_path, 60000)  # minutes of work: still running when we stop
    try:
        run.wait_for(re.escape(READY_LINE))
        run.wait_for(r"features for|training extra_trees|training random_forest", timeout=120)
        took = _check_clean_stop(run, signal.SIGTERM, app_env)
        assert took <= STOP_LIMIT
        assert not list(models.glob("*.training")), "the trainer's markers must not outlive it"
        assert sorted(runner.missing_models(models)) == ["extra_trees", "random_forest"]
    finally:
        run.kill()


def test_helpers():
    assert runner.connect_host("0.0.0.0") == "127.0.0.1"
    assert runner.connect_host("::") == "[::1]"
    assert runner.connect_host("example.org") == "example.org"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert runner.port_in_use("127.0.0.1", s.getsockname()[1])
    assert not runner.port_in_use("127.0.0.1", free_port())


def test_missing_models(tmp_path, tiny_model_dir):
    assert runner.missing_models(tmp_path) == ["svm", "svm_pca", "extra_trees", "random_forest"]
    for suffix in (".json", ".joblib"):
        shutil.copy(tiny_model_dir / f"svm_pca{suffix}", tmp_path / f"svm_pca{suffix}")
    assert "svm_pca" not in runner.missing_models(tmp_path)
    # files that cannot be served are trained again (a broken manifest said "missing" for good, and `run`
    # never rebuilt it: it only looked for the file)
    (tmp_path / "svm_pca.joblib").write_bytes(b"altered")
    assert "svm_pca" in runner.missing_models(tmp_path)
    (tmp_path / "svm_pca.json").write_text("{")
    assert "svm_pca" in runner.missing_models(tmp_path)


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_serve_and_ui_refuse_a_busy_port_before_announcing_it(tmp_path, command):
    """`digitlab serve` / `digitlab ui` on a taken port printed their URL, then "Address already in use" (and
    a bad host: its URL, then "Name or service not known"): one line, exit 2, no URL."""
    env = {**os.environ, "DIGITLAB_DATA_DIR": str(tmp_path)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "digitlab", command, "--port", str(port)], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert busy.returncode == 2, busy.stderr
    assert busy.stderr.strip().splitlines() == [busy.stderr.strip()] and "already in use" in busy.stderr
    assert "http://" not in busy.stderr
    bad = subprocess.run([sys.executable, "-m", "digitlab", command, "--host", "999.1.1.1", "--port", "1"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert (
        bad.returncode == 2
        and "cannot listen on host '999.1.1.1'" in bad.stderr
        and "http://" not in bad.stderr
    )


def _busy(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_fork_pool_left_by_an_exception_kills_its_workers_at_once():
    """SIGTERM to `digitlab learn` raises SystemExit while the pool fits models: the workers must die with
    the block, not be waited for (a plain ProcessPoolExecutor waited for the fit; CI gave up after 30 s)."""
    started = time.monotonic()
    with pytest.raises(SystemExit), processes.fork_pool(2) as pool:
        busy = pool.submit(_busy, 60)
        workers = [psutil.Process(pid) for pid in pool._processes]
        time.sleep(0.3)  # the task is running in a worker
        raise SystemExit("stopped by signal 15")
    assert time.monotonic() - started < 10
    assert not busy.done() or busy.cancelled() or busy.exception() is not None
    psutil.wait_procs(workers, timeout=5)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_fork_pool_left_normally_waits_for_its_work():
    with processes.fork_pool(1) as pool:
        done = pool.submit(_busy, 0.2)
    assert done.result(timeout=0) > 0


def test_a_process_leaving_a_fork_pool_whose_manager_died_still_exits():
    """SIGTERM while `learn` read real handwriting (`pool.map` over arrays) left the process hanging at exit
    (CI gave up after 30 s). Interrupted, `map` cancels the tasks not started; the pool, finding its workers
    killed, failed on those cancelled tasks (CPython 3.11) before it closed its pipe, and the thread feeding
    a big task into that pipe, which Python waits for at exit, stayed blocked for ever."""
    script = (
        "import time, numpy as np\nfrom digitlab import processes\n"
        "def slow(a):\n    time.sleep(60)\n    return a.sum()\n"
        "with processes.fork_pool(2) as pool:\n"
        "    futures = [pool.submit(slow, np.ones(2_000_000)) for _ in range(8)]\n"  # 16 MB per task
        "    time.sleep(1)\n"  # two run, one is being fed into the pipe, five wait
        "    for f in futures:\n        f.cancel()\n"  # what `map` does when it is interrupted
        "    for p in pool._processes.values():\n        p.kill()\n"  # the pool notices its workers died
        "    time.sleep(1)\n"  # before it is shut down (the race CI lost)
        "    raise SystemExit('stopped by signal 15')\n"
    )
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the process was still there 30 s after it left the pool")
    assert done.returncode == 1 and "stopped by signal 15" in done.stderr
    assert time.monotonic() - started < 15


def test_one_trainer_per_model_folder(tmp_path):
    """A second `digitlab run` on a folder being trained started a second trainer (twice the CPU), which removed
    the first one's "training" markers on exit (its models showed as missing while being built)."""
    from digitlab.training.lock import TrainingBusy, trainer_elsewhere, training_lock

    assert trainer_elsewhere(tmp_path) is None
    with training_lock(tmp_path):
        assert trainer_elsewhere(tmp_path) == f"pid {os.getpid()}"
        with pytest.raises(TrainingBusy, match=f"pid {os.getpid()} is already training models into"), training_lock(tmp_path):
            pass
    assert trainer_elsewhere(tmp_path) is None  # released with the block
    with training_lock(tmp_path):  # and taken again
        pass


def test_train_refuses_a_folder_another_trainer_holds_and_run_leaves_it_alone(app_env, tmp_path):
    models = Path(app_env["DIGITLAB_MODEL_DIR"])
    for path in models.glob("svm.*"):
        path.unlink()
    (models / "svm.training").touch()  # the other trainer's marker
    hold = ("import sys, time; from pathlib import Path; from digitlab.training.lock import training_lock\n"
            "with training_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(models)], stdout=subprocess.PIPE, text=True)  # another trainer
    try:
        assert holder.stdout.readline().strip() == "held"
        train = subprocess.run([sys.executable, "-m", "digitlab", "train", "svm"], env=app_env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert train.returncode != 0
        said = (train.stdout + train.stderr).strip()
        assert f"pid {holder.pid} is already training models into" in said and "Traceback" not in said, said
        run = _run_training(app_env, tmp_path, 1500)
        try:
            run.wait_for(re.escape(READY_LINE))
            assert f"not training svm: pid {holder.pid} is training models into" in run.output
            _check_clean_stop(run, signal.SIGINT, app_env)
        finally:
            run.kill()
        assert (models / "svm.training").exists()  # the other trainer's marker is left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_process_that_left_its_childs_group_is_found_and_stopped_with_it():
    """A learning run started by "Learn now" leads a session of its own (it outlives an API worker): Ctrl-C on
    `digitlab run` stopped the API and the UI and left it training on. The runner finds such descendants before
    it stops its children and stops them too."""
    from digitlab.processes import group_members, start_child, stop_children, stop_groups, stray_groups

    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    child = start_child("API", [sys.executable, "-c", script], dict(os.environ))
    try:
        deadline = time.monotonic() + 10
        while not (strays := stray_groups([child])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(strays) == 1 and strays[0] != child.pgid
        stop_children([child])
        assert group_members(strays[0]), "stopping the child's group leaves the stray running"
        started = time.monotonic()
        stop_groups(strays)
        assert not group_members(strays[0]) and time.monotonic() - started < 4
    finally:
        stop_children([child])
