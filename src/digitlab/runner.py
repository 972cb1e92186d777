"""`digitlab run`: one command from a fresh clone to drawing digits.

1. refuse at once, in one line, when the API or UI port is taken;
2. start the UI (`digitlab ui`), apply the database migrations meanwhile (embedded SQLite by default,
   or DATABASE_URL / POSTGRES_*), then start the API (`digitlab serve`); each child gets its own process
   group. The models that exist (the bundled CNN at least) answer at once while the others train;
3. train the missing classical models in a background `digitlab train` (it fetches MNIST first when
   needed, checksums verified; its progress goes to this terminal). Until a model is done its
   `<name>.training` marker makes the API and the UI show it as "training"; the API loads finished
   models by itself (it re-scans the model folder every few seconds);
4. print both URLs once both answer;
5. keep both up: when the API or the UI dies afterwards (killed, crashed, SIGTERM from outside), SIGKILL
   what is left of its process group (orphaned uvicorn workers would hold the port), say so in one line
   and start it again after a backoff (1 s, doubling up to 30 s while it keeps dying within a minute);
   the other one keeps running (the UI shows its outage banner while the API is away);
6. on Ctrl-C (SIGINT), SIGTERM or SIGHUP: SIGTERM to every child's process group (uvicorn, Streamlit,
   training workers: grandchildren included), SIGKILL to whatever is left after a few seconds; the
   whole stop takes at most `STOP_TIMEOUT` seconds and returns 0.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from digitlab.core.config import Settings, get_settings
from digitlab.ports import PortInUseError, port_in_use
from digitlab.processes import (
    Child,
    clear_group,
    describe_exit,
    group_members,
    start_child,
    stop_children,
    stop_groups,
    stray_groups,
    terminate,
)
from digitlab.training.lock import trainer_elsewhere

#: After this long without both services answering, say so once (and keep waiting: Ctrl-C stops).
SLOW_START_NOTICE = 90.0
POLL = 0.2
#: While training runs, one line every this many seconds says which models are done.
PROGRESS_EVERY = 60.0
#: Restart backoff: the first delay, doubling for each restart in a row, at most BACKOFF_MAX seconds.
#: A child that stayed up STABLE_AFTER seconds starts over at BACKOFF_FIRST.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(message: str) -> None:
    print(f"digitlab run: {message}", flush=True)


# --------------------------------------------------------------------------------------------------
# what to do


def missing_models(model_dir: Path) -> list[str]:
    """Classical models without usable files in `model_dir` (the ones `digitlab run` trains): no manifest, or
    one that cannot be read or whose artefact is gone or altered (it was never rebuilt: "missing" for good)."""
    from digitlab.errors import DigitlabError
    from digitlab.models.artifacts import read_verified
    from digitlab.models.registry import CLASSICAL_MODELS, model_dirs_for

    def usable(name: str, folder: Path) -> bool:
        try:
            read_verified(folder, name)  # (a missing manifest is an ArtifactError too)
        except (DigitlabError, OSError):
            return False
        return True

    return [n for n in CLASSICAL_MODELS if not any(usable(n, d) for d in model_dirs_for(n, model_dir))]


def _has_cnn(model_dir: Path) -> bool:
    from digitlab.models.registry import model_dirs_for

    return any((d / "cnn.json").exists() for d in model_dirs_for("cnn", model_dir))


def connect_host(host: str) -> str:
    """The address a local client uses to reach a server bound to `host` (for URLs)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_ports(settings: Settings) -> None:
    for what, host, port, variable in (
        ("API", settings.host, settings.port, "DIGITLAB_PORT"),
        ("UI", settings.ui_host, settings.ui_port, "DIGITLAB_UI_PORT"),
    ):
        if port == 0:  # "any free port": the UI was told http://127.0.0.1:0 and `run` waited for it for ever
            raise PortInUseError(f"{variable}=0 (any free port) cannot be used by `digitlab run`, which must know "
                                 f"where the {what} listens: choose a port, e.g. {variable}={8000 if what == 'API' else 8501}")  # fmt: skip
        if port_in_use(host, port):
            taken = {settings.port, settings.ui_port}  # (port + 1 was suggested: the UI's own, busy too)
            free = next((p for p in range(port + 1, min(port + 100, 65536)) if p not in taken and not port_in_use(host, p)),
                        port + 1)  # fmt: skip
            raise PortInUseError(
                f"port {port} ({what}, {host}) is already in use — stop whatever uses it (another "
                f"`digitlab run`?) or choose another port, e.g. {variable}={free}"
            )
    if settings.port == settings.ui_port:
        raise PortInUseError(f"the API and the UI cannot both use port {settings.port}: set DIGITLAB_UI_PORT")


def migrate(settings: Settings) -> None:
    """Apply the migrations now (fast when up to date). A database that cannot be reached is not fatal:
    the API starts anyway and keeps predictions in its outage spool until the database is back."""
    from digitlab.store.db import make_engine, upgrade

    url = settings.sqlalchemy_url
    if url.startswith("sqlite:///"):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        revision = upgrade(engine)
        _say(f"database {shown} is at revision {revision}")
    except Exception as exc:  # noqa: BLE001 - reported in one line; the API retries on its own
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        _say(f"warning: could not migrate the database {shown} ({reason}); the API will spool predictions "
             "until it is reachable")  # fmt: skip
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------
# children


@dataclass
class Supervised:
    """A child the runner keeps up: how to start it again, and its restart backoff."""

    child: Child
    argv: list[str]
    env: dict[str, str]
    health_url: str
    restarts: int = 0  # restarts in a row (a child that stays up STABLE_AFTER seconds resets it)
    delay: float = 0.0  # the backoff before the latest restart
    restart_at: float | None = None  # dead, restart due then
    down_since: float | None = None  # dead or restarted but not answering yet

    @property
    def name(self) -> str:
        return self.child.name

    def check(self, children: list[Child]) -> None:
        """One supervision step: notice a death, restart when the backoff is over, report the return."""
        now = time.monotonic()
        if self.restart_at is None and not self.child.running():
            clear_group(self.child)
            stable = self.down_since is None and now - self.child.started >= STABLE_AFTER
            self.restarts = 1 if stable else self.restarts + 1
            self.delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.restarts - 1))
            self.restart_at = now + self.delay
            self.down_since = self.down_since if self.down_since is not None else now
            meanwhile = " (the UI shows an outage notice meanwhile)" if self.name == "API" else ""
            code = self.child.proc.returncode  # 0: a clean shutdown someone else asked for (SIGINT, SIGTERM)
            how = "was stopped from outside (it shut down cleanly)" if code == 0 else f"stopped unexpectedly ({describe_exit(code)})"
            _say(f"the {self.name} {how}; restarting it in {self.delay:g} s{meanwhile}")
        elif self.restart_at is not None and now >= self.restart_at:
            old = self.child
            self.child = start_child(old.name, self.argv, self.env, term_group=old.term_group)
            children[children.index(old)] = self.child  # the stop handler sees the new one at once
            self.restart_at = None
        elif self.down_since is not None and self.restart_at is None and _healthy(self.health_url):
            _say(f"the {self.name} answers again (down {now - self.down_since:.1f} s)")
            self.down_since = None


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------------------------------
# the command


class _Stop:
    """The stop signal handler: SIGTERMs the children at once, and remembers when; the main loop polls
    it and returns, and `run_all` finishes the stop (no exception raised in the middle of a step)."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.signum: int | None = None
        self.at: float | None = None
        self.strays: list[int] | None = None  # found before the children go (a stray's parent is one of them)

    def __call__(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
            self.strays = stray_groups(self.children)
            terminate(self.children)

    def __bool__(self) -> bool:
        return self.signum is not None


def run_all(train_missing: bool) -> int:
    """Start everything, wait for a stop signal, stop everything. 0 on a clean stop."""
    settings = get_settings()
    check_ports(settings)

    began = time.monotonic()
    children: list[Child] = []
    markers: list[Path] = []
    stop = _Stop(children)
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        return _run(settings, train_missing, stop, children, markers, began)
    finally:
        if children:
            since = stop.at if stop.at is not None else time.monotonic()
            names = ", ".join(c.name for c in children)
            strays = stop.strays if stop.strays is not None else stray_groups(children)
            killed = stop_children(children, since=since)
            if strays:  # a learning run started by "Learn now": stopped too (it promotes nothing half-way)
                stop_groups(strays)
                names += " and a learning run"
            left = [c.name for c in children if group_members(c.pgid)]
            took = time.monotonic() - since
            if left:
                _say(f"could not stop {', '.join(left)} (still running after {took:.1f} s)")
            else:
                _say(
                    f"stopped {names} in {took:.1f} s" + (f" ({', '.join(killed)} killed)" if killed else "")
                )
        for marker in markers:  # a killed trainer cannot remove its own
            marker.unlink(missing_ok=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
        gc.freeze()  # nothing is left to collect: skip the ~1 s final collection of SQLAlchemy/Alembic objects


def _run(
    settings: Settings,
    train_missing: bool,
    stop: _Stop,
    children: list[Child],
    markers: list[Path],
    began: float,
) -> int:
    from digitlab.models.registry import CLASSICAL_MODELS

    model_dir = Path(settings.model_dir)
    missing = missing_models(model_dir)
    to_train = missing if train_missing else []
    busy = trainer_elsewhere(model_dir) if missing else None
    if busy:  # (its markers say "training"; a second trainer doubled the work and removed them on exit)
        to_train = []
        _say(f"not training {', '.join(missing)}: {busy} is training models into {model_dir}; they show as "
             "'training' until it finishes")  # fmt: skip
    elif missing and not train_missing:
        _say(f"not training {', '.join(missing)} (--no-train): they show as missing")
    if not _has_cnn(model_dir) and len(missing) == len(CLASSICAL_MODELS):
        _say("no model is trained yet and the CNN is not bundled: predictions answer once training finishes")
    if to_train:
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in to_train:  # "training" from the very first /health, before the trainer is up
            marker = model_dir / f"{name}.training"
            marker.touch()
            markers.append(marker)

    api_url = f"http://{connect_host(settings.host)}:{settings.port}"
    ui_url = f"http://{connect_host(settings.ui_host)}:{settings.ui_port}"
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["DIGITLAB_HOST"], env["DIGITLAB_PORT"] = settings.host, str(settings.port)
    env["DIGITLAB_UI_HOST"], env["DIGITLAB_UI_PORT"] = settings.ui_host, str(settings.ui_port)
    ui_env = dict(env, DIGITLAB_API_URL=api_url, DIGITLAB_API_STARTED_BESIDE="1")  # the UI talks to the API started
    # here, which answers seconds after the UI does: "Not started yet? Run digitlab serve" was said meanwhile
    python = [sys.executable, "-m", "digitlab"]
    # The UI first: it needs no database, so it starts while the migrations run; the API after them.
    ui_argv, api_argv = [*python, "ui"], [*python, "serve"]
    ui = start_child("UI", ui_argv, ui_env, term_group=False)
    children.append(ui)
    migrate(settings)
    if stop:
        return 0
    api = start_child("API", api_argv, env)
    children.append(api)

    waiting_urls = {"API": f"{api_url}/health", "UI": f"{ui_url}/_stcore/health"}
    waiting = dict(waiting_urls)
    noticed = False
    while waiting:
        if stop:
            return 0
        for child in (api, ui):
            if not child.running():
                _say(f"the {child.name} stopped while starting (exit code {child.proc.returncode}); see its "
                     "messages above")  # fmt: skip
                return 1
        for name, url in list(waiting.items()):
            if _healthy(url):
                del waiting[name]
        if waiting and not noticed and time.monotonic() - began > SLOW_START_NOTICE:
            noticed = True
            _say(f"still waiting for the {' and the '.join(waiting)} to answer (Ctrl-C stops)")
        if waiting:
            time.sleep(POLL)

    trainer = None
    if to_train:
        limit = ["--limit", str(settings.train_limit)] if settings.train_limit else []
        trainer = start_child("training", [*python, "train", *to_train, *limit], env, background=True)
        children.append(trainer)
    next_note = time.monotonic() + PROGRESS_EVERY
    ready = time.monotonic() - began
    status = _status(api_url)
    print(
        "\n"
        f"  digitlab is running (ready in {ready:.1f} s)\n"
        f"    UI   {ui_url}      <- open this and draw a digit\n"
        f"    API  {api_url}      (docs: {api_url}/docs)\n"
        + (f"    models: {status}\n" if status else "")
        + (f"    training {', '.join(to_train)} in the background; they show as 'training' until done\n"
           if to_train else "")
        + "  Ctrl-C stops both.\n",
        flush=True,
    )  # fmt: skip

    supervised = [
        Supervised(api, api_argv, env, waiting_urls["API"]),
        Supervised(ui, ui_argv, ui_env, waiting_urls["UI"]),
    ]
    while not stop:
        for keeper in supervised:
            keeper.check(children)
        if trainer is not None and trainer.running() and time.monotonic() >= next_note:
            next_note += PROGRESS_EVERY
            still = [n for n in missing_models(model_dir) if n in to_train]
            done = [n for n in to_train if n not in still]
            minutes = (time.monotonic() - trainer.started) / 60
            _say(
                f"training for {minutes:.0f} min: {', '.join(done) + ' ready, ' if done else ''}"
                f"{', '.join(still)} still training (the other models answer meanwhile)"
            )
        if trainer is not None and not trainer.running():
            code = trainer.proc.returncode
            for marker in markers:
                marker.unlink(missing_ok=True)
            if code == 0:
                _say(f"training finished: {', '.join(to_train)} ready (the API loads them within seconds)")
            else:
                still = [n for n in missing_models(model_dir) if n in to_train]
                _say(f"training stopped with exit code {code}: {', '.join(still) or 'nothing'} not trained; the "
                     "API serves the models it has. Fix the error above, then run `digitlab train`.")  # fmt: skip
            children.remove(trainer)
            trainer = None
        time.sleep(POLL)
    return 0


def _status(api_url: str) -> str:
    import httpx

    try:
        models = httpx.get(f"{api_url}/health", timeout=2.0).json().get("models", {})
    except (httpx.HTTPError, ValueError, AttributeError):
        return ""
    return ", ".join(f"{name} {state}" for name, state in models.items())
