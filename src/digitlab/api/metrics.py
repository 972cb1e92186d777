"""Prometheus metrics, one `CollectorRegistry` per app (several apps in one process never clash).

With several worker processes (`digitlab serve --workers N`), `serve` points PROMETHEUS_MULTIPROC_DIR
at a fresh folder before the workers start: every worker writes its values there, and `exposition()`
adds them up, so any scrape reports the whole server, whichever worker answers it.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import mmap
import os
import threading
import time
from collections import OrderedDict

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: scope key a route sets so the request metrics carry the model that answered
MODEL_SCOPE_KEY = "digitlab.model"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class SharedSeen:
    """(drawing, model) pairs answered recently, shared by every worker of a server: a drawing's strokes land on
    any worker, and each counted the drawing once more (two workers: 10 strokes of one drawing counted 2
    drawings, a probe, session 45). A file of SLOTS 8-byte fingerprints in the metrics folder (a pair's slot is
    its fingerprint modulo SLOTS: a newer pair takes an older one's slot), checked and set under a file lock."""

    SLOTS = 1 << 16  #: 512 KB
    FILE = "seen_drawings.bin"  #: (not *.db: the multiprocess collector reads those)

    def __init__(self, folder: str):
        self._fd = os.open(os.path.join(folder, self.FILE), os.O_RDWR | os.O_CREAT, 0o600)
        # zeros (no pair), every page given now: a page of a sparse file written when the memory is full kills the
        # worker (SIGBUS); this raises instead. Each worker may do it: same size, nothing overwritten.
        os.posix_fallocate(self._fd, 0, 8 * self.SLOTS)
        self._slots = memoryview(mmap.mmap(self._fd, 8 * self.SLOTS)).cast("Q")

    def first(self, key: tuple[str, str]) -> bool:
        """Mark `key` seen; True unless it was seen before."""
        mark = int.from_bytes(hashlib.blake2b("\0".join(key).encode(), digest_size=8).digest(), "little") or 1
        slot = mark % self.SLOTS
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self._slots[slot] == mark:
                return False
            self._slots[slot] = mark
            return True
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class Metrics:
    RECENT_DRAWINGS = 50_000  #: (drawing, model) pairs remembered to tell a drawing's first answer

    def first_answer(self, drawing_id: str | None, model: str) -> bool:
        """True unless this server (any of its workers) recently answered this drawing with this model (a later
        stroke)."""
        if drawing_id is None:
            return True
        key = (drawing_id, model)
        if self._shared_seen is not None:
            return self._shared_seen.first(key)
        with self._drawings_lock:
            if key in self._drawings:
                self._drawings.move_to_end(key)
                return False
            self._drawings[key] = None
            if len(self._drawings) > self.RECENT_DRAWINGS:
                self._drawings.popitem(last=False)
            return True

    def __init__(self) -> None:
        disable_created_metrics()  # no `*_created` series: they double the output and nobody graphs them
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "digitlab_http_requests",
            "HTTP requests answered, by route template, method, status and model.",
            ["method", "route", "status", "model"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "digitlab_http_request_duration_seconds",
            "Time to answer an HTTP request, by route and model.",
            ["method", "route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "digitlab_predictions",
            "Drawings answered (a drawing's later strokes are counted in digitlab_drawing_updates), by model "
            "and predicted digit.",
            ["model", "digit"],
            registry=r,
        )
        self.drawing_updates = Counter(
            "digitlab_drawing_updates",
            "Live predictions of a drawing already answered (its record was updated, not added), by model.",
            ["model"],
            registry=r,
        )
        self._drawings: OrderedDict[tuple[str, str], None] = OrderedDict()  # recently answered (drawing, model)
        self._drawings_lock = threading.Lock()
        self._shared_seen = self._open_shared_seen()
        self.prediction_seconds = Histogram(
            "digitlab_prediction_duration_seconds",
            "Preprocessing + inference time of one prediction, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.uncertain = Counter(
            "digitlab_predictions_uncertain",
            "Predictions flagged uncertain (low confidence), by model.",
            ["model"],
            registry=r,
        )
        self.logged = Counter(
            "digitlab_predictions_logged",
            "Predictions written to the store, by destination.",
            ["stored"],
            registry=r,
        )
        self.store_failures = Counter(
            "digitlab_store_write_failures",
            "Predictions and read numbers that could not be stored (the store raised, or there is none).",
            registry=r,
        )
        self.errors = Counter("digitlab_errors", "Error responses, by error code.", ["code"], registry=r)
        # several workers: spools add up; the database and a model count as up only where all agree
        self.spool_pending = Gauge(
            "digitlab_store_spool_pending",
            "Records waiting in the outage spool.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.database_up = Gauge(
            "digitlab_database_up",
            "1 when the prediction database is reachable.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_ready = Gauge(
            "digitlab_model_ready",
            "1 when the model is loaded and serving.",
            ["model"],
            registry=r,
            multiprocess_mode="livemin",
        )

    def count_refused(self, status: int, code: str) -> None:
        """A request the HTTP protocol answered itself, before the app (a 400 for bytes that are no HTTP, a
        431): in neither counter before (an API probe)."""
        self.requests.labels("other", "unmatched", str(status), "").inc()
        self.errors.labels(code).inc()

    @staticmethod
    def _open_shared_seen() -> SharedSeen | None:
        """The workers' shared memory of answered drawings (several workers), else None (this process's own);
        None too when its file cannot be made (a full disk: counted per worker, as before, rather than no API)."""
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return None
        try:
            return SharedSeen(folder)
        except (OSError, ValueError) as exc:
            logging.getLogger("digitlab.api").warning("drawings are counted per worker: %s", exc)
            return None

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of a scrape: this process's registry, or every worker's values."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def forget_dead_workers() -> None:
        """Drop the live gauges of workers that died without saying so (killed; uvicorn starts a new
        one): a stale `digitlab_database_up 0` of a dead worker would otherwise hold the minimum at 0."""
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return
        from prometheus_client import multiprocess

        for name in os.listdir(folder):
            pid = name.rsplit("_", 1)[-1].removesuffix(".db")
            if name.startswith("gauge_live") and pid.isdigit() and not _alive(int(pid)):
                multiprocess.mark_process_dead(int(pid), folder)

    @staticmethod
    def process_exiting() -> None:
        """Drop this worker's live gauges from the shared folder (its counters stay: they happened)."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


#: the status counted for a request whose client hung up before any answer (nginx's "client closed request";
#: it was counted as a 500, so any alert on server errors fired on flaky phone uploads)
CLIENT_CLOSED = 499
#: scope key of a callable: did the client go away before its answer was complete (`api.protocol` sets it)?
CLIENT_GONE_KEY = "digitlab.client_gone"
#: this process's `Metrics.count_refused`, for the HTTP protocol (no app sees those requests); set at start-up
refused_by_protocol = None


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request by its route *template* (bounded label values)."""

    def __init__(self, app, metrics: Metrics, routes=None):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # callable -> the app's routes, to name requests refused before routing (413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = CLIENT_CLOSED  # no answer started and nothing raised: the client went away first
        started = time.perf_counter()

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:  # the request's task cancelled (its client gone): no server error
            raise
        except BaseException:
            if status == CLIENT_CLOSED:
                status = 500
            raise
        finally:
            gone = scope.get(CLIENT_GONE_KEY)
            if status != 500 and gone is not None and gone():  # answered into a closed connection: never read
                status = CLIENT_CLOSED  # (counted as a 200 when the answer came after the client hung up)
            route = scope.get("route")
            if route is None and self.routes is not None:
                route = _match(self.routes(), scope)
            path = getattr(route, "path", None) or "unmatched"
            model = scope.get(MODEL_SCOPE_KEY) or ""
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            self.metrics.requests.labels(method, path, str(status), model).inc()
            self.metrics.request_seconds.labels(method, path, model).observe(time.perf_counter() - started)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that number: leave its files alone
        return True
    return True


def _match(routes, scope):
    """The route a request refused before routing (a 413, a client gone mid-body) would have reached.
    FastAPI wraps an included router in one object without a `path`: its own routes are searched (every
    such request was counted under "unmatched")."""
    from starlette.routing import Match

    for route in routes:
        try:
            if route.matches(scope)[0] != Match.FULL:
                continue
        except Exception:  # noqa: BLE001, S112 - a route that cannot read this scope is not its route
            continue
        inner = getattr(route, "original_router", None)
        if getattr(route, "path", None) is None and inner is not None:
            return _match(inner.routes, scope) or route
        return route
    return None
