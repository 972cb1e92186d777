"""The UI's only door to the prediction API: httpx with short timeouts, friendly errors, no tracebacks.

Every method either returns plain data or raises `ApiError` whose `str()` is one sentence a person can
read ("The prediction service is not reachable at http://… — retrying."). `ApiUnavailable` (a subclass)
means the service itself is away (refused, timed out, 502/503/504 from a proxy), as opposed to the
service answering "no" to this request (`api_errors.py`: the errors and how an HTTP answer becomes one).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx

from digitlab.store.records import StoredPrediction
from digitlab.ui.api_errors import ApiError, ApiUnavailable, from_response, label_kept, not_understood

__all__ = [
    "ApiError",
    "ApiUnavailable",
    "Comparison",
    "DigitlabClient",
    "FeedbackResult",
    "Health",
    "Prediction",
]

# Seconds. The UI must never hang: a slow API shows a message instead of a spinner forever.
CONNECT_TIMEOUT = 1.5
HEALTH_TIMEOUT = 1.5
READ_TIMEOUT = 6.0
HEAVY_TIMEOUT = 15.0  # exports and big history pages
#: A live call (a stroke's prediction or reading) not answered in this many seconds asks whether the API answers
#: at all (`GET /api/v1/models`: no database, HEALTH_TIMEOUT). Not: it is frozen, said now, not after READ_TIMEOUT
#: (the page stayed faded 6-8 s); yes: the call is waited for. (A shorter timeout called a slow database an API
#: outage: the API waits up to 5 s for a locked or frozen database, `store.WRITE_DEADLINE`, before it answers.)
LIVE_PATIENCE = 1.0
_LIVE = ThreadPoolExecutor(max_workers=32, thread_name_prefix="digitlab-ui-live")  # threads start when used


@dataclass(frozen=True)
class Health:
    status: str  # "ok" | "degraded"
    models: dict[str, str]  # name -> "ready" | "training" | "missing"
    database: str  # "ok" | "unavailable" | "failing" | "catching_up"
    spool: int = 0

    @property
    def ready_models(self) -> list[str]:
        return [name for name, state in self.models.items() if state == "ready"]

    @property
    def database_ok(self) -> bool:
        return self.database == "ok"


@dataclass(frozen=True)
class Prediction:
    model: str
    digit: int
    confidence: float
    probabilities: list[float]
    processed_png: bytes | None = None
    latency_ms: float | None = None
    id: int | None = None
    logged: bool = False
    uncertain: bool = False
    uid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Comparison:
    predictions: list[Prediction]
    processed_png: bytes | None

    @property
    def agree(self) -> bool:
        return len({p.digit for p in self.predictions}) <= 1

    @property
    def votes(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for p in self.predictions:
            out.setdefault(p.digit, []).append(p.model)
        return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))


@dataclass(frozen=True)
class FeedbackResult:
    saved: bool  # written to the database now
    queued: bool  # kept in the outage spool; written when the database is back
    message: str


def _b64(value: Any) -> bytes | None:
    if not value or not isinstance(value, str):
        return None
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return None


def _prediction(data: dict[str, Any], processed: bytes | None = None) -> Prediction:
    try:
        probs = [float(p) for p in data["probabilities"]]
        digit = int(data["digit"])
        confidence = float(data.get("confidence", probs[digit]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise not_understood() from exc
    known = {"id", "model", "digit", "confidence", "probabilities", "processed_image", "latency_ms", "logged",
             "uncertain", "uid"}  # fmt: skip
    return Prediction(
        model=str(data.get("model", "")),
        digit=digit,
        confidence=confidence,
        probabilities=probs,
        processed_png=_b64(data.get("processed_image")) or processed,
        latency_ms=None if data.get("latency_ms") is None else float(data["latency_ms"]),
        id=None if data.get("id") is None else int(data["id"]),
        logged=bool(data.get("logged", False)),
        uncertain=bool(data.get("uncertain", False)),
        uid=data.get("uid"),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _history_params(page: int, page_size: int, model: str | None, correct: bool | None,
                    since: date | datetime | str | None, until: date | datetime | str | None) -> dict[str, Any]:
    """The query of a history page (`/predictions`, `/numbers`): only the filters that are set."""
    params: dict[str, Any] = {"page": page, "page_size": page_size}
    if model:
        params["model"] = model
    if correct is not None:
        params["correct"] = "true" if correct else "false"
    if since is not None:
        params["since"] = _iso(since)
    if until is not None:
        params["until"] = _iso(until)
    return params


def _iso(value: date | datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


class DigitlabClient:
    """Thread-safe (one `httpx.Client`, keep-alive); share one per UI process."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        read_timeout: float = READ_TIMEOUT,
    ):
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "digitlab-ui"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    # --- plumbing ------------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        patience: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """`patience`: a live call, given up once it has waited that long and the API answers no probe."""
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        try:
            if patience is None:
                response = self._http.request(method, path, **kwargs)
            else:
                response = self._patiently(patience, method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiUnavailable(
                f"The prediction service at {self.base_url} did not answer in time — retrying.",
                code="api_timeout",
            ) from exc
        except (httpx.TransportError, OSError) as exc:  # refused, reset, DNS, ...
            raise ApiUnavailable(
                f"The prediction service is not reachable at {self.base_url} — retrying.",
                code="api_unreachable",
            ) from exc
        except httpx.HTTPError as exc:  # anything else httpx can raise (invalid URL, ...)
            raise ApiUnavailable(
                f"The prediction service address {self.base_url} cannot be used ({type(exc).__name__}).",
                code="api_unreachable",
            ) from exc
        if response.status_code >= 400:
            raise from_response(response, self.base_url)
        return response

    def _patiently(self, patience: float, method: str, path: str, **kwargs: Any) -> httpx.Response:
        waiting = _LIVE.submit(self._http.request, method, path, **kwargs)
        try:
            return waiting.result(timeout=patience)
        except TimeoutError:
            pass
        try:
            self._http.get("/api/v1/models", timeout=httpx.Timeout(HEALTH_TIMEOUT))
        except httpx.TransportError:  # (refused, timed out: `_request` words it)
            waiting.cancel()  # (still queued: never sent; sent: its answer is not waited for)
            raise
        return waiting.result()  # alive: as long as the call's own timeout lets it take

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise not_understood() from exc

    # --- endpoints -----------------------------------------------------------------------------------
    def health(self) -> Health:
        data = self._json("GET", "/health", timeout=HEALTH_TIMEOUT)
        if not isinstance(data, dict):
            raise not_understood()
        return Health(
            status=str(data.get("status", "degraded")),
            models={str(k): str(v) for k, v in (data.get("models") or {}).items()},
            database=str(data.get("database", "unavailable")),
            spool=int(data.get("spool") or 0),
        )

    def models(self) -> list[dict[str, Any]]:
        # no database behind it, as cheap as /health: a frozen API held a stroke's run the whole READ_TIMEOUT
        # whenever the catalogue's cache (`common.model_catalog`) had just expired
        data = self._json("GET", "/api/v1/models", timeout=HEALTH_TIMEOUT)
        if isinstance(data, dict):  # tolerate {"models": [...]}
            data = data.get("models", [])
        return [m for m in data if isinstance(m, dict)]

    def _predict_form(
        self, png: bytes, model: str, *, source: str = "ui", filename: str = "drawing.png",
        patience: float | None = None, **fields: Any,
    ) -> dict[str, Any]:  # fmt: skip
        form = {"model": model, "source": source}
        form.update({k: str(v) for k, v in fields.items() if v is not None})
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"  # the API sniffs the bytes anyway
        files = {"image": (filename, png, kind)}
        return self._json("POST", "/api/v1/predict", files=files, data=form, patience=patience)

    def predict(
        self,
        png: bytes,
        model: str | None = None,
        *,
        pen_color: str | None = None,
        background_color: str | None = None,
        session_id: str | None = None,
        true_digit: int | None = None,
        drawing_id: str | None = None,
        source: str = "ui",
        filename: str = "drawing.png",
        patience: float | None = None,
    ) -> Prediction:
        """`drawing_id`: the same on every stroke of one drawing, so the API keeps one record for it.
        `source`: "ui" for the canvas, "upload" for a photo or scan (stored with the record). `patience`:
        a live call's (`LIVE_PATIENCE`)."""
        data = self._predict_form(
            png, model or "", pen_color=pen_color, background_color=background_color,
            session_id=session_id, true_digit=true_digit, drawing_id=drawing_id, source=source,
            filename=filename, patience=patience,
        )  # fmt: skip
        if not isinstance(data, dict):
            raise not_understood()
        return _prediction(data)

    def predict_all(
        self,
        png: bytes,
        *,
        pen_color: str | None = None,
        background_color: str | None = None,
        session_id: str | None = None,
        drawing_id: str | None = None,
        patience: float | None = None,
        source: str = "ui",  # "upload" and the file's name for a photo (`predict`)
        filename: str = "drawing.png",
    ) -> Comparison:
        data = self._predict_form(png, "all", pen_color=pen_color, background_color=background_color, source=source,
                                  session_id=session_id, drawing_id=drawing_id, patience=patience, filename=filename)  # fmt: skip
        if not isinstance(data, dict) or not isinstance(data.get("predictions"), list):
            raise not_understood()
        processed = _b64(data.get("processed_image"))
        return Comparison([_prediction(p, processed) for p in data["predictions"]], processed)

    def feedback(self, prediction: Prediction, true_digit: int | None, *, not_digit: bool = False) -> FeedbackResult:
        """Tell the API what was really drawn (or that it is no digit). Works during a database outage (the
        API queues it)."""
        if prediction.id is not None:
            path = f"/api/v1/predictions/{prediction.id}/feedback"
        elif prediction.uid:
            path = f"/api/v1/predictions/uid/{prediction.uid}/feedback"
        else:
            return FeedbackResult(
                False, False, "This prediction was not recorded, so the answer cannot be saved."
            )
        body = {"not_digit": True} if not_digit else {"true_digit": int(true_digit)}
        data = self._by_uid_later(path, body, by_uid=prediction.id is None)  # (live: a frozen API held the page 14 s)
        data = data if isinstance(data, dict) else {}
        queued = bool(data.get("queued")) or data.get("stored") == "spool" or prediction.id is None
        if queued:
            return FeedbackResult(False, True, "The database is unavailable: your answer is queued and will be "
                                               "saved when it is back.")  # fmt: skip
        return FeedbackResult(True, False, "Saved — thank you!")

    def read(
        self,
        image: bytes,
        model: str | None = None,
        *,
        filename: str = "number.png",
        pen_color: str | None = None,
        background_color: str | None = None,
        session_id: str | None = None,
        drawing_id: str | None = None,
        source: str = "ui",
        patience: float | None = None,
    ) -> dict[str, Any]:
        """Read a written number (`POST /api/v1/read`): the answer as the API sends it. `source`: "ui" for
        the canvas, "upload" for a photo or scan; `patience`: a live call's (`LIVE_PATIENCE`)."""
        form = {"model": model or "", "source": source}
        fields = {"pen_color": pen_color, "background_color": background_color, "session_id": session_id,
                  "drawing_id": drawing_id}  # fmt: skip
        form.update({k: str(v) for k, v in fields.items() if v is not None})
        data = self._json("POST", "/api/v1/read", files={"image": (filename, image)}, data=form, patience=patience)
        if not isinstance(data, dict) or not isinstance(data.get("digits"), list):
            raise not_understood()
        return data

    def number_feedback(self, reading: dict[str, Any], true_text: str | None, *, not_number: bool = False) -> dict[str, Any]:
        """Tell the API which number was really written (or, `not_number`, that it is no number at all), for a
        `read()` answer: by its id, or by its uid while it waits in the outage spool. Returns the API's answer
        (`correct`, `queued`)."""
        if reading.get("id") is not None:
            path = f"/api/v1/numbers/{int(reading['id'])}/feedback"
        elif reading.get("uid"):
            path = f"/api/v1/numbers/uid/{reading['uid']}/feedback"
        else:
            raise ApiError("This reading was not recorded, so the answer cannot be saved.", code="not_logged")
        body = {"not_number": True} if not_number else {"true_text": true_text}
        data = self._by_uid_later(path, body, by_uid=reading.get("id") is None)
        return data if isinstance(data, dict) else {}

    def _by_uid_later(self, path: str, body: dict, *, by_uid: bool) -> Any:
        """A feedback POST. One the API cannot take yet, though it will (`api_errors.label_kept`: by uid before its
        record is stored, or too many answers waiting during an outage), raises `ApiUnavailable`: the page keeps the
        answer and sends it again."""
        try:
            return self._json("POST", path, json=body, patience=LIVE_PATIENCE)
        except ApiError as exc:
            kept = label_kept(exc, by_uid=by_uid)
            if kept is not None:
                raise kept from None
            raise

    def numbers(
        self,
        *,
        page: int = 1,
        page_size: int = 25,
        model: str | None = None,
        correct: bool | None = None,
        since: date | datetime | str | None = None,
        until: date | datetime | str | None = None,
    ) -> dict[str, Any]:
        """{"items": [stored number, ...], "total": n, ...}: read numbers, newest first, filtered by the API
        as `predictions` are."""
        params = _history_params(page, page_size, model, correct, since, until)
        data = self._json("GET", "/api/v1/numbers", params=params)
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise not_understood()
        return data

    def predictions(
        self,
        *,
        page: int = 1,
        page_size: int = 50,
        model: str | None = None,
        correct: bool | None = None,
        since: date | datetime | str | None = None,
        until: date | datetime | str | None = None,
    ) -> dict[str, Any]:
        """{"items": [StoredPrediction, ...], "total": n, "page": p, "page_size": s}."""
        params = _history_params(page, page_size, model, correct, since, until)
        data = self._json("GET", "/api/v1/predictions", params=params, timeout=HEAVY_TIMEOUT)
        try:
            return {
                "items": [StoredPrediction.model_validate(item) for item in data["items"]],
                "total": int(data["total"]),
                "page": int(data.get("page", page)),
                "page_size": int(data.get("page_size", page_size)),
            }
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise not_understood() from exc

    def image(self, prediction_id: int, kind: str = "processed") -> bytes:
        return self._request(
            "GET", f"/api/v1/predictions/{int(prediction_id)}/image", params={"kind": kind}
        ).content

    def stats(self) -> dict[str, Any]:
        data = self._json("GET", "/api/v1/stats", timeout=HEAVY_TIMEOUT)
        if not isinstance(data, dict):
            raise not_understood()
        return data

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        """A model's learned versions, newest first (`GET /api/v1/models/{name}/versions`)."""
        data = self._json("GET", f"/api/v1/models/{name}/versions")
        return data if isinstance(data, list) else []

    def start_learning(self) -> dict[str, Any]:
        """Start `digitlab learn` in the background (admin token); {"job_id", "status_url"}."""
        return self._json("POST", "/api/v1/learn")

    def learn_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/learn/{job_id}")

    def export_csv(self) -> bytes:
        return self._request("GET", "/api/v1/export.csv", timeout=60.0).content
