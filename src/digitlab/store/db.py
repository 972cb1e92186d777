"""Engine construction and migrations (Alembic, run programmatically from inside the package)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError

from digitlab.errors import DigitlabError

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key: two replicas starting together must not both create the table.
_MIGRATION_LOCK = 0x64_69_67_69  # "digi"
# pg_try_advisory_lock key held by a running `digitlab learn` (any host of the deployment).
_LEARN_LOCK = 0x6C_65_61_72  # "lear"


#: PostgreSQL: a statement gives up after waiting this long for a lock, or running this long (milliseconds).
#: Reads for exports and `digitlab learn` stream well within the second one.
LOCK_TIMEOUT_MS = 3_000
#: what a PostgreSQL server says when the URL names its database, role or password wrong: it will say it again
#: (no outage to wait out)
REFUSED_FOR_GOOD = re.compile(r'(database "[^"]*" does not exist|role "[^"]*" does not exist|password authentication '
                              r'failed for user "[^"]*"|server does not support SSL, but SSL was required)')
STATEMENT_TIMEOUT_MS = 30_000


class BusyError(DigitlabError):
    """Another process holds the lock (e.g. a second `digitlab learn` while one runs)."""

    code = "busy"


#: seconds between two checks that a held learning lock's connection is alive (`HeldLock`)
KEEP_SECONDS = 5.0
#: seconds `exclusive(wait=True)` waits out a brief holder: the API's check for killed runs holds the lock for
#: milliseconds, and a run started by "Learn now" that met it gave up ("another digitlab learn is running")
WAIT_SECONDS = 5.0


class HeldLock:
    """What `exclusive` yields. On PostgreSQL (`keep=True`) a thread checks every KEEP_SECONDS that the lock's
    connection is alive: a dropped one (a network blip, a restart, `pg_terminate_backend`, an idle timeout)
    released the lock on the server, and a second run could start beside this one. It takes the lock again
    on a new connection; if another run got it first, the lock is lost and `check()` raises BusyError."""

    def __init__(self, engine: Engine | None = None, conn=None, what: str = "") -> None:
        self.engine, self.conn, self.what = engine, conn, what
        self.lost = ""
        self.beat: Callable[[], None] | None = None  # called after each check that found the lock held
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """Raise BusyError when another run took the lock while this one's connection was down."""
        if self.lost:
            raise BusyError(self.lost)

    @property
    def keeping(self) -> bool:
        """Checked by a thread (PostgreSQL): the lock can drop with its connection, and be taken back."""
        return self._thread is not None

    def keep(self) -> None:
        self._thread = threading.Thread(target=self._keep, name="digitlab-lock-keeper", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(KEEP_SECONDS) and not self.lost:
            try:
                self.conn.scalar(text("SELECT 1"))
                self._beat()
                continue
            except SQLAlchemyError:
                pass  # the connection is gone, and the lock with it: take it again
            try:
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            except SQLAlchemyError:
                continue  # the database is still away: nobody else can take the lock meanwhile either
            if conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LEARN_LOCK}):
                old, self.conn = self.conn, conn
                with contextlib.suppress(SQLAlchemyError):
                    old.close()
                self._beat()
            else:
                conn.close()
                self.lost = (f"another {self.what} took over while this one's database connection was down: "
                             "this one stops without promoting anything")  # fmt: skip

    def _beat(self) -> None:
        if self.beat is not None:
            with contextlib.suppress(SQLAlchemyError):  # (the next check tries again)
                self.beat()

    def release(self) -> None:
        """Stop the checks and free the lock; a connection already dropped has freed it on the server."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                if not self.lost:
                    self.conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": _LEARN_LOCK})
            with contextlib.suppress(SQLAlchemyError):
                self.conn.close()


@contextlib.contextmanager
def exclusive(engine: Engine, what: str, *, keep: bool = False, wait: bool = False) -> Iterator[HeldLock]:
    """Hold a deployment-wide lock for the block, or raise BusyError: a PostgreSQL session advisory lock
    (every replica sees it; released if the process dies), or on SQLite a file lock beside the database
    file. `what` names the job in the message; `keep`: a long run (see `HeldLock`); `wait`: try for
    WAIT_SECONDS before giving up (a long run, which must not lose to a brief check), else refuse at once."""
    busy = f"another {what} is running: try again when it has finished."
    if engine.dialect.name == "postgresql":
        # autocommit: the lock's connection is never "idle in transaction" for a whole run (a server's
        # idle_in_transaction_session_timeout closed it, and the lock with it)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        held = HeldLock(engine, conn, what)
        try:
            if not _retry(lambda: conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LEARN_LOCK}), wait):
                raise BusyError(busy)
            if keep:
                held.keep()
            yield held
        finally:
            held.release()
        return
    with open(f"{engine.url.database}.learn-lock", "a+b") as handle:
        # a POSIX record lock: owned by this process only (forked workers do not inherit it)
        if not _retry(lambda: _try_lockf(handle), wait):
            raise BusyError(busy)
        yield HeldLock()


def _try_lockf(handle) -> bool:
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _retry(take: Callable[[], bool], wait: bool) -> bool:
    """`take()` until it succeeds; once only, or for WAIT_SECONDS when `wait`."""
    deadline = time.monotonic() + (WAIT_SECONDS if wait else 0.0)
    while not take():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class DatabaseUnavailableError(DigitlabError):
    """The database cannot be reached right now (predictions still work: they are spooled)."""

    code = "database_unavailable"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def make_engine(url: str, *, connect_timeout: float = 2.0) -> Engine:
    """A pooled engine. Short connect timeout so an outage costs seconds, not minutes, to notice."""
    try:
        parsed = make_url(url)
    except ValueError as exc:  # e.g. a port that is not a number: a setting to fix, said in one line
        raise ArgumentError(f"cannot parse the URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        if (parsed.database or ":memory:") == ":memory:" or "memory" in str(parsed.query.get("mode", "")):
            raise ArgumentError(  # each pooled connection is its own empty database, gone at exit
                "an in-memory SQLite database keeps nothing and is not shared: give a file, sqlite:///path/to/file.db"
            )
        # no pool_pre_ping: a file does not drop connections, and the ping was a query per checkout
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 5.0})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _reopen_when_read_only)
        _watch_file(engine, os.path.abspath(parsed.database))
        return engine
    connect_args: dict[str, int | str] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2" and not _has("psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # postgresql:// and +psycopg2 mean psycopg 3 here
    if parsed.get_backend_name() == "postgresql":
        # connect_timeout: a refused/unroutable server fails fast. tcp_user_timeout + keepalives: a server
        # that vanishes mid-query (network cut) fails in seconds instead of the kernel's ~15 minutes.
        # options: a statement waiting on a lock (a migration elsewhere, a manual LOCK TABLE) or running
        # unusually long gives up, so a prediction is spooled instead of hanging its request for minutes
        defaults = {
            "options": f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "connect_timeout": max(1, round(connect_timeout)),
            "tcp_user_timeout": 10_000,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        connect_args = {k: v for k, v in defaults.items() if k not in parsed.query}
    return create_engine(
        parsed,
        connect_args=connect_args,
        pool_size=5,
        max_overflow=10,
        pool_timeout=10,
        pool_pre_ping=True,  # a server restart leaves dead connections in the pool
        pool_recycle=1800,
    )


def _watch_file(engine: Engine, path: str) -> None:
    """A pooled connection whose database file was removed or replaced since it opened is dropped at checkout,
    and a new one opens the file now at `path`. The open connections kept writing to the removed file: six
    predictions answered `logged: true` after `rm digitlab.db*` were gone at the next start (a probe, session
    27). Now the first write finds no tables there: an outage, so it is spooled, the new file is migrated and the
    spool replayed into it, as for a database re-created empty. A file put back in place (a restored backup) is
    read from then on. One `stat` per checkout."""

    def identity() -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def opened(_dbapi_conn, record) -> None:
        record.info["file"] = identity()

    def checked_out(_dbapi_conn, record, _proxy) -> None:
        if record.info.get("file") != identity():
            raise DisconnectionError(f"the database file {path} was removed or replaced")

    event.listen(engine, "connect", opened)
    event.listen(engine, "checkout", checked_out)


def _reopen_when_read_only(context) -> None:
    """A SQLite connection opened while its file could not be written (immutable, a read-only mount, another
    owner) stays read-only when the file can be written again: every write failed and the store stayed in spool
    mode until a restart (a probe, session 30). Such an error drops the pool's connections (a disconnect): the
    next write opens the file again."""
    if "readonly database" in str(context.original_exception):
        context.is_disconnect = True


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    """WAL lets history pages read while a prediction is written; busy_timeout instead of 'locked'.

    synchronous=NORMAL: in WAL mode a crash of the process loses nothing, only a power cut can lose the
    last commits; it saves an fsync per commit (a third of the store's CPU under load).
    """
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revision(revision: str) -> bool:
    """Whether this digitlab's migrations have `revision` (a newer release's is unknown)."""
    from alembic.util.exc import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """`alembic upgrade head` on this engine, in one transaction on PostgreSQL; returns the new revision."""
    cfg = alembic_config()
    with _sqlite_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (`serve --workers 2` on a fresh file:
    both workers found no table and the second one's CREATE failed). PostgreSQL has its advisory lock."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        handle = open(f"{database}.migrate-lock", "a+b")  # noqa: SIM115 - closed below
    except OSError:  # no such folder, read-only: connecting fails the same way and says so
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def downgrade(engine: Engine, revision: str) -> str | None:
    """`alembic downgrade <revision>` (maintenance and tests; the app itself only upgrades)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    return current_revision(engine)
