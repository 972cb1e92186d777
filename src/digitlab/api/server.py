"""`digitlab serve`: the API under uvicorn. Each worker process builds its own app (and loads the
models itself) from the environment through `create_app()`."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from digitlab import WORKER_OF_ENV
from digitlab.core.config import get_settings
from digitlab.errors import DigitlabError
from digitlab.ports import refuse_busy_port
from digitlab.store.db import REFUSED_FOR_GOOD

APP = "digitlab.api.main:create_app"


def log_config() -> dict:
    """uvicorn's logging, plus the `digitlab` loggers on the same handler (INFO and up). python-multipart
    warns of every malformed body (the client gets a 400 for it) as a bare line on stderr, which anyone
    could repeat at will: only its errors are logged. Every line starts with its time (to the ms): the order of
    events across workers during an outage could not be told from the log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
        formatter["datefmt"] = None  # ISO-like with milliseconds: 2026-11-30 02:41:59,123
    config["loggers"]["digitlab"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["python_multipart"] = {"handlers": ["default"], "level": "ERROR", "propagate": False}
    return config


def _fast_impl(module: str, fallback: str, value: str) -> str:
    try:
        __import__(module)
        return value
    except ImportError:
        return fallback


def _http_protocol():
    """httptools with a deadline for the request head (`api.protocol`), or uvicorn's h11 without it."""
    try:
        from digitlab.api.protocol import HeadDeadlineProtocol
    except ImportError:  # no httptools
        return "h11"
    return HeadDeadlineProtocol


#: the most worker processes `workers=0` starts: every worker holds its own models (~350 MB)
AUTO_MAX_WORKERS = 4


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def resolve_workers(workers: int) -> int:
    """0 -> one worker per CPU core this process may use (at most AUTO_MAX_WORKERS): the GIL lets one
    process use about one core for Python work, so one worker on 2 cores serves about half as much."""
    if workers < 0:
        raise DigitlabError(f"workers must be 0 (one per core) or more, got {workers}", code="invalid_workers")
    if workers > 0:
        return workers
    return max(1, min(AUTO_MAX_WORKERS, usable_cores()))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def serve(host: str | None = None, port: int | None = None, workers: int | None = None) -> int:
    """Run the API until interrupted; arguments left as None come from the settings (DIGITLAB_HOST, ...)."""
    import uvicorn

    settings = get_settings()
    host = host or settings.host
    port = settings.port if port is None else port
    workers = resolve_workers(settings.workers if workers is None else workers)
    if not 0 <= port <= 65535:
        raise DigitlabError(f"port must be 0-65535, got {port}", code="invalid_port")
    check_database_url(settings.sqlalchemy_url)  # a URL that can never work is a setting to fix, not an outage
    check_database_schema(settings.sqlalchemy_url)
    check_folders(settings)
    if settings.spool_dir is not None and workers > 1:  # the second worker found it locked: every prediction
        raise DigitlabError(  # it answered was neither stored nor spooled, and /health blamed the database
            f"DIGITLAB_SPOOL_DIR={settings.spool_dir} is one process's spool, and the API starts {workers} workers: "
            "leave it unset (each worker spools to <DIGITLAB_DATA_DIR>/spool/<host>-<pid>) or run one worker "
            "(DIGITLAB_WORKERS=1)", code="invalid_folder")  # fmt: skip
    refuse_busy_port(host, port, "API", "DIGITLAB_PORT")
    print(
        f"digitlab API on {f'http://{host}:{port}' if port else f'a free port of {host} (uvicorn names it below)'} "
        f"({workers} worker{'s' if workers > 1 else ''}); docs at /docs",  # (port 0 was announced as ":0")
        file=sys.stderr,
        flush=True,
    )
    if not settings.admin_token and host not in LOOPBACK:  # (the UI's "Learn now" is refused without one)
        print("warning: DIGITLAB_ADMIN_TOKEN is not set: the history, its images, the export and deletion are "
              f"open to anyone who reaches {host}:{port}", file=sys.stderr, flush=True)  # fmt: skip
    os.environ["DIGITLAB_WORKERS"] = str(workers)  # each worker sizes its CPU slots by it (api.main.cpu_slots)
    with _shared_metrics(workers, settings.data_dir), workers_start_deaf(workers):
        _run_uvicorn(uvicorn, host, port, workers)
    logging.getLogger("digitlab.api").info("API stopped")
    return 0


def check_database_url(url: str) -> None:
    """Refuse a database URL no driver can use (garbage, another dialect, a driver not installed) before
    the workers start: they would answer every prediction unstored, as in an outage that never ends."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from digitlab.store.db import make_engine

    try:
        make_engine(url).dispose()
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DigitlabError(unusable_database_url(exc), code="invalid_database_url") from exc


#: what a PostgreSQL server answers a connection whose URL can never work (libpq's words; sqlstate is not
#: kept for connection errors): `serve` started, spooled every prediction and said "unavailable" for ever


def check_database_schema(url: str) -> None:
    """Refuse a database that answers but can never be used: a file that is not a SQLite database, or one
    migrated by a newer digitlab (the workers took either for an outage and spooled every prediction for
    ever), or one whose user may not create the tables. It is migrated here, before the workers start (they
    find it done). A database that does not answer is an outage: the workers start and spool until it is back.
    Any other database error (a file that is no database) goes up to the command line's one-line message."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from digitlab.store.db import current_revision, head_revision, known_revision, make_engine, upgrade

    engine = make_engine(url)
    try:
        revision = current_revision(engine)
        if revision is not None and not known_revision(revision):
            raise DigitlabError(f"the database was migrated by a newer digitlab (revision {revision}): run the newer "
                                "digitlab, or restore the database from a backup", code="invalid_database")  # fmt: skip
        if revision != head_revision():  # the workers' first job: done here, where a refusal can still be said
            upgrade(engine)
    except OperationalError as exc:  # down, unreachable, locked: an outage, handled by the workers ...
        refused = REFUSED_FOR_GOOD.search(str(exc.orig or exc))
        if refused:  # ... but a server that names the URL's database, role or password wrong will say so again
            raise DigitlabError(f"the database server refuses the connection ({refused[1]}): check DATABASE_URL "
                                "(or POSTGRES_*)", code="invalid_database") from None  # fmt: skip
        return
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":
            raise
        reason = str(exc.orig).strip().splitlines()[0]  # a user without CREATE: every insert then found no table,
        raise DigitlabError(  # was taken for an outage and spooled for ever
            f"the database user may not create digitlab's tables ({reason}): grant it CREATE on the schema, or run "
            "`digitlab db upgrade` once as a user who may", code="invalid_database") from None  # fmt: skip
    finally:
        engine.dispose()


def check_folders(settings) -> None:
    """Refuse a data or spool folder that is a file or cannot be written: the workers would answer every
    prediction unstored (`logged: false`) and /health would blame the database. And a model folder that
    cannot be read (a probe, session 27: every worker stopped with a traceback, and `serve` exited 0)."""
    folders = [("DIGITLAB_DATA_DIR", settings.data_dir)]
    if settings.spool_dir is not None:
        folders.append(("DIGITLAB_SPOOL_DIR", settings.spool_dir))
    for name, folder in folders:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DigitlabError(
                f"{name}={folder} cannot be used as a folder ({exc.strerror or exc}): point it at a writable folder",
                code="invalid_folder",
            ) from None
        try:  # a file made and removed, not os.access: root passes that check on /sys and read-only mounts
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise DigitlabError(
                f"{name}={folder} is not writable ({exc.strerror or exc}): point it at a writable folder",
                code="invalid_folder",
            ) from None
    models = Path(settings.model_dir)
    try:  # (absent is fine: the CNN is bundled; unreadable stopped every worker with a 90-line traceback)
        if models.exists():
            os.listdir(models)
    except OSError as exc:
        raise DigitlabError(
            f"DIGITLAB_MODEL_DIR={models} cannot be read ({exc.strerror or exc}): point it at a readable folder",
            code="invalid_folder",
        ) from None


def unusable_database_url(exc: BaseException) -> str:
    """One line for a DATABASE_URL that cannot be used, with the form that works."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"DATABASE_URL cannot be used ({reason}): write it as postgresql://user:password@host:5432/db "
            "or sqlite:///path/to/file.db")


@contextlib.contextmanager
def workers_start_deaf(workers: int) -> Iterator[None]:
    """Several workers: they start with SIGINT blocked and ignore it until they serve (`digitlab/__init__`), so
    that a Ctrl-C while they import (it reaches the whole process group) leaves no KeyboardInterrupt tracebacks:
    the parent stops them with SIGTERM. The parent's own thread blocks SIGINT while it starts them (a spawned
    process inherits the mask); an idle thread of its own takes the signal, which Python hands to the main thread's
    handler (uvicorn's) as before."""
    if workers < 2 or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # (starting it later would unblock SIGINT: it blocks and unblocks it itself)
    receiver = threading.Thread(target=threading.Event().wait, name="sigint-receiver", daemon=True)
    receiver.start()  # (before the mask: a thread inherits its creator's)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.environ[WORKER_OF_ENV] = str(os.getpid())
    try:
        yield
    finally:
        os.environ.pop(WORKER_OF_ENV, None)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


#: where several workers' metrics go first: shared memory. They write them through mmap, and on a full data disk
#: every worker died of SIGBUS as it started, in a loop (a probe, session 30); the data folder is the fallback
MEMORY_FOLDERS = ("/dev/shm",)


@contextlib.contextmanager
def _shared_metrics(workers: int, data_dir: Path) -> Iterator[None]:
    """Several workers: a fresh folder where each one writes its metrics, so /metrics adds them up.
    A folder the operator set in PROMETHEUS_MULTIPROC_DIR is used as it is (and kept). It is made in shared
    memory (`MEMORY_FOLDERS`) or else in the data folder `check_folders` found writable (the system's temporary
    folder may not be: in a read-only container two workers ended in a traceback)."""
    from digitlab.api.metrics import MULTIPROC_ENV

    if workers < 2 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = None
    for parent in MEMORY_FOLDERS:
        with contextlib.suppress(OSError):
            folder = tempfile.mkdtemp(prefix="digitlab-metrics-", dir=parent)
            break
    folder = folder or tempfile.mkdtemp(prefix=".metrics-", dir=data_dir)
    os.environ[MULTIPROC_ENV] = folder  # inherited by the worker processes, read when they import prometheus
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


# uvicorn (0.37 and newer) pings each worker process and kills one that does not answer within this many
# seconds, cutting its requests. Its default, 5 s, killed a worker that was only paused (stopped, swapped
# out, throttled by its container's CPU quota, starting up on a busy machine); a hung worker is still
# replaced, after 30 s.
WORKER_HEALTHCHECK_SECONDS = 30


def _run_uvicorn(uvicorn, host: str, port: int, workers: int) -> None:
    uvicorn.run(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config(),
        access_log=False,  # /metrics counts every request; a log line per request only costs CPU at load
        http=_http_protocol(),
        ws="none",  # no WebSocket endpoint: an upgrade is answered as the plain request it is (404 / 405 JSON)
        loop=_fast_impl("uvloop", "asyncio", "uvloop"),
        timeout_graceful_shutdown=10,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        server_header=False,
    )
