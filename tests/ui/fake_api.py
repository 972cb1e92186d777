"""A stand-in for the prediction API and the drawing canvas, for the pages run by Streamlit's AppTest (no
browser, no server): the test says what is on the canvas and when the service is away, and reads what
the page sent. `install(monkeypatch)` puts both in place for one test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from digitlab.ui.client import ApiError, ApiUnavailable, Comparison, FeedbackResult, Health, Prediction

URL = "http://127.0.0.1:8000"
AWAY = f"The prediction service is not reachable at {URL} — retrying."
MODELS = [
    {"name": "cnn", "display_name": "CNN", "status": "ready", "metrics": {"mnist_test_accuracy": 0.99}},
    {"name": "svm", "display_name": "SVM", "status": "ready", "metrics": {"mnist_test_accuracy": 0.98}},
]


def _probs(digit: int, p: float = 0.9) -> list[float]:
    rest = (1 - p) / 9
    return [p if d == digit else rest for d in range(10)]


@dataclass
class FakeApi:
    up: bool = True
    database: str = "ok"  # what /health says of the database ("unavailable", "catching_up", ...)
    spool: int = 0
    fail_feedback: list[ApiError] = field(default_factory=list)  # raised by the next feedback calls, in order
    feedback_calls: list[tuple[Any, Any]] = field(default_factory=list)  # (record id, answer) as sent
    number_feedback_calls: list[tuple[Any, str]] = field(default_factory=list)
    readings: dict[bytes, str] = field(default_factory=dict)  # the picture -> the number read in it
    boxes: dict[bytes, list[list[int]]] = field(default_factory=dict)  # the picture -> its digits' boxes
    next_id: int = 100
    unsure: bool = False  # every prediction flagged uncertain
    probabilities: list[float] | None = None  # every predict's answer (default: a 0 at 60 %)
    predict_error: ApiError | None = None  # raised by every predict
    stored_numbers: list[dict] = field(default_factory=list)  # History's Numbers, newest first
    stored_predictions: list[Any] = field(default_factory=list)  # History's log (StoredPrediction), newest first
    numbers_calls: list[dict] = field(default_factory=list)  # (page, page_size) asked for
    sent_fields: list[dict] = field(default_factory=list)  # the form fields of every predict and read
    compared: list[tuple[bytes, dict]] = field(default_factory=list)  # (picture, fields) of every predict_all

    versions: dict[str, list[dict]] = field(default_factory=dict)  # a model's learned versions, newest first
    busy_job: str = ""  # the id of a learning run going on already (started elsewhere): "Learn now" is 409
    learn_message: str = ""  # the outcome of a learning run started with `start_learning` ("": nothing learned)
    learn_models: list[dict] = field(default_factory=list)  # what became of each model in that run
    learn_notes: list[str] = field(default_factory=list)  # what that run said of its data (a disputed session)
    locked: ApiError | None = None  # raised by the admin's reads (the log, the numbers) when the UI lacks the token
    model_states: dict[str, str] = field(default_factory=dict)  # what /health says of a model (default "ready")

    def model_versions(self, name: str) -> list[dict]:
        return self.versions.get(name, [])

    def start_learning(self) -> dict:
        self._away()
        if self.busy_job:
            raise ApiError(f"A learning run is going on already: follow it at /api/v1/learn/{self.busy_job}, or try "
                           "again when it has finished.", code="learning_busy", status=409)  # fmt: skip
        return {"job_id": "job-1", "status": "queued"}

    def learn_job(self, job_id: str) -> dict:
        return {"id": job_id, "status": "done", "progress": 1.0, "message": self.learn_message,
                "result": {"models": self.learn_models, "notes": self.learn_notes}}

    def _away(self) -> None:
        if not self.up:
            raise ApiUnavailable(AWAY, code="api_unreachable")

    def health(self) -> Health:
        self._away()
        return Health("ok", {m["name"]: self.model_states.get(m["name"], "ready") for m in MODELS}, self.database,
                      self.spool)  # fmt: skip

    def models(self) -> list[dict]:
        self._away()
        return MODELS

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def predict_all(self, png: bytes, **fields: Any) -> Comparison:
        self._away()
        self.compared.append((png, fields))
        probabilities = self.probabilities or _probs(0)
        digit = max(range(10), key=lambda d: probabilities[d])
        preds = [Prediction(m["name"], digit, probabilities[digit], probabilities, id=self._id(), logged=True,
                            uid=f"u{self.next_id}", uncertain=self.unsure) for m in MODELS]  # fmt: skip
        return Comparison(preds, None)

    def predict(self, png: bytes, model: str | None = None, **fields: Any) -> Prediction:
        self._away()
        self.sent_fields.append(fields)
        if self.predict_error is not None:
            raise self.predict_error
        probabilities = self.probabilities or _probs(0, 0.6)
        digit = max(range(10), key=lambda d: probabilities[d])
        return Prediction(model or "cnn", digit, probabilities[digit], probabilities, id=self._id(), logged=True,
                          uid=f"u{self.next_id}", uncertain=self.unsure)  # fmt: skip

    def feedback(self, prediction: Prediction, true_digit: int | None, *, not_digit: bool = False) -> FeedbackResult:
        self._away()
        if self.fail_feedback:
            raise self.fail_feedback.pop(0)
        self.feedback_calls.append((prediction.id, "not a digit" if not_digit else true_digit))
        return FeedbackResult(True, False, "Saved — thank you!")

    def read(self, image: bytes, **fields: Any) -> dict:
        self._away()
        self.sent_fields.append(fields)
        text = self.readings.get(image, "81")
        boxes = self.boxes.get(image) or [[10 + 60 * i, 10, 50, 80] for i in range(len(text))]
        digits = [{"digit": int(c), "confidence": 0.95, "uncertain": self.unsure, "box": b,
                   "processed_image": _tiny_png_b64()} for c, b in zip(text, boxes, strict=True)]  # fmt: skip
        return {"id": self._id(), "uid": f"n{self.next_id}", "logged": True, "text": text, "confidence": 0.9,
                "uncertain": self.unsure, "model": "cnn", "latency_ms": 5.0, "digits": digits, "dropped": []}  # fmt: skip

    def number_feedback(self, reading: dict, true_text: str | None, *, not_number: bool = False) -> dict:
        self._away()
        self.number_feedback_calls.append((reading.get("id"), "not a number" if not_number else true_text))
        return {"correct": not not_number and true_text == reading.get("text"), "queued": False}


    stats_answer: dict = field(default_factory=lambda: {"models": {}})

    def stats(self) -> dict:
        self._away()
        return self.stats_answer

    def predictions(self, *, page: int = 1, page_size: int = 50, correct: bool | None = None, **_: Any) -> dict:
        self._away()
        if self.locked is not None:
            raise self.locked
        kept = [p for p in self.stored_predictions if correct is None or p.correct is correct]
        items = kept[(page - 1) * page_size : page * page_size]
        return {"items": items, "total": len(kept), "page": page, "page_size": page_size}

    def numbers(self, *, page: int = 1, page_size: int = 25, model: str | None = None, correct: bool | None = None,
                since: Any = None, until: Any = None) -> dict:  # fmt: skip
        """The API's filters, as `store.numbers.list_numbers` applies them (stored times are naive UTC)."""
        self._away()
        if self.locked is not None:
            raise self.locked
        self.numbers_calls.append({"page": page, "page_size": page_size, "model": model, "correct": correct})

        def utc(value: Any) -> datetime:
            when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when

        kept = [
            n for n in self.stored_numbers
            if (model is None or n["model_name"] == model)
            and (correct is None or n["correct"] is correct)
            and (since is None or utc(n["timestamp"]) >= utc(since))
            and (until is None or utc(n["timestamp"]) < utc(until))
        ]  # fmt: skip
        items = kept[(page - 1) * page_size : page * page_size]
        return {"items": items, "total": len(kept), "page": page, "page_size": page_size}


def stored_number(number_id: int, text: str, true_text: str | None = None, *, model: str = "cnn",
                  timestamp: str = "2026-11-28T10:00:00") -> dict:
    """A read number as `GET /api/v1/numbers` lists it."""
    correct = None if true_text is None else true_text == text
    return {"id": number_id, "text": text, "true_text": true_text, "correct": correct, "confidence": 0.9,
            "digits": [{"digit": int(c)} for c in text], "model_name": model, "timestamp": timestamp}  # fmt: skip


def stored_prediction(prediction_id: int, digit: int, *, drawn: int | None = None,
                      uncertain: bool | None = False, latency_ms: float = 5.0, source: str = "ui") -> Any:  # fmt: skip
    """A prediction as `GET /api/v1/predictions` lists it (no stored image)."""
    from digitlab.store.records import StoredPrediction

    return StoredPrediction(
        id=prediction_id, uid=f"u{prediction_id}", timestamp=datetime(2026, 11, 28, 10, tzinfo=UTC),
        model_name="cnn", model_version="1", predicted_digit=digit, probability=0.9, probabilities=_probs(digit),
        drawn_digit=drawn, correct=None if drawn is None else drawn == digit, pen_color=None,
        background_color=None, latency_ms=latency_ms, session_id="s", source=source, drawing_id=None, not_digit=None,
        uncertain=uncertain, has_image=False, has_processed=False,
    )  # fmt: skip


def _tiny_png_b64() -> str:
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (28, 28)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def png(width: int = 280, height: int = 280, shade: int = 0) -> bytes:
    """A small picture standing for a drawing (different `shade`: a different picture)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (255, 255, 255 - shade)).save(out, format="PNG")
    return out.getvalue()


class FakeCanvas:
    """What each page's canvas shows: `set(prefix, picture, strokes, drawing_id)`."""

    def __init__(self) -> None:
        self.drawings: dict[str, Any] = {}

    def set(self, prefix: str, picture: bytes | None, strokes: int = 1, drawing_id: str = "d1") -> None:
        self.drawings[prefix] = (picture, strokes if picture else 0, drawing_id if picture else None)

    def __call__(self, prefix: str, *, hint: str = "", width: int = 280, height: int = 280):
        import streamlit as st

        from digitlab.ui.canvas import Drawing  # (inside a Streamlit run: see `install`)

        picture, strokes, drawing_id = self.drawings.get(prefix) or (None, 0, None)
        drawing = Drawing(picture, strokes, "#1F2340", "#FFFFFF", drawing_id=drawing_id)
        st.session_state[f"{prefix}_drawing"] = drawing
        return drawing


def install(monkeypatch) -> tuple[FakeApi, FakeCanvas]:
    """The stand-in API now; the stand-in canvas by `open_app` (the canvas module imports its component,
    which only works inside a Streamlit run)."""
    from digitlab.core.config import get_settings
    from digitlab.ui import common

    monkeypatch.setenv("DIGITLAB_API_URL", URL)
    get_settings.cache_clear()
    api, fake_canvas = FakeApi(), FakeCanvas()
    monkeypatch.setattr(common, "client", lambda: api)
    common._models_cached.clear()
    return api, fake_canvas


def open_app(monkeypatch, fake_canvas: FakeCanvas, page: str):
    """The app in AppTest on `page` ("draw", "number", "compare", ...), its canvas the stand-in."""
    import sys

    from streamlit.testing.v1 import AppTest

    from digitlab.ui import launch

    at = AppTest.from_file(str(launch.APP), default_timeout=60)
    at.run()  # (imports the canvas module, inside a Streamlit run)
    monkeypatch.setattr(sys.modules["digitlab.ui.canvas"], "drawing_canvas", fake_canvas)
    if page != "draw":
        at.switch_page(f"views/{page}.py")
    at.run()
    return at


def digest(picture: bytes) -> str:
    return hashlib.sha1(picture).hexdigest()
