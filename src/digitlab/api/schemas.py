"""Request and response bodies of the API (pydantic); they are what /docs and /openapi.json show."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from digitlab.store.numbers import StoredNumber
from digitlab.store.records import Source, StoredPrediction

ModelStatus = Literal["ready", "training", "missing"]
COLOR_PATTERN = r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"
MODEL_FIELD_MAX = 64
SESSION_ID_MAX = 64
DRAWING_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
StrictDigit = Annotated[int, Field(ge=0, le=9, strict=True)]


class ErrorResponse(BaseModel):
    detail: str = Field(description="One sentence a person can act on.")
    code: str = Field(description="Stable snake_case code, e.g. `unreadable_image`.")


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="`degraded` when the database is unavailable or failing, or no model is ready."
    )
    models: dict[str, ModelStatus]
    database: Literal["ok", "unavailable", "failing", "catching_up"] = Field(
        description="`failing`: the database answers, but the last writes of predictions failed (e.g. a full disk). "
        "`catching_up`: the database is back after an outage and the records queued meanwhile are being written."
    )
    spool: int = Field(description="Predictions, read numbers and feedback waiting in the outage spool.")
    components: dict[Literal["detector", "segment_verifier", "line_reader"], Literal["ready", "missing"]] = Field(
        description="The parts beside the models: `detector` (the \"not sure\" flag's not-a-digit detector and "
        "second opinion; missing: the flag uses the model's confidence only), `segment_verifier` (/read's "
        "judge of which crops are one whole digit; missing: numbers are split by the model alone) and "
        "`line_reader` (/read's second reader of the whole line, which never cuts; missing: the segmentation "
        "alone decides)."
    )


class ModelInfo(BaseModel):
    name: str
    display_name: str
    description: str
    status: ModelStatus
    version: str
    default: bool = Field(description="Used when a prediction request names no model.")
    metrics: dict[str, float] = Field(description="From the training manifest, e.g. `mnist_test_accuracy`.")
    confusion_matrix: list[list[int]] | None = Field(
        None, description="10x10 on the MNIST test set: rows = true digit, columns = predicted."
    )
    size_bytes: int | None = None
    trained_at: str | None = None
    training_seconds: float | None = None
    train_samples: int | None = None
    asks: str | None = Field(
        None,
        description="The model this one asks about the drawings it doubts (the CNN asks a fully trained svm); "
        "its answers' `model_version` then names both, e.g. `1.0.0+svm:1.0.0`.",
    )
    error: str | None = Field(None, description="Why a model whose artefact exists could not be loaded (also for a ready model: its artefact changed on disk and does not load, and the version loaded before is still served).")


class PredictionResult(BaseModel):
    id: int | None = Field(
        description="Database id of the logged prediction; null while it waits in the spool."
    )
    uid: str = Field(description="Unique id of the record; works for feedback even while it is spooled.")
    model: str
    model_version: str
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(description="Probability of `digit`.")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="Digits 0-9, summing to 1.")
    uncertain: bool = Field(
        description="True when the drawing is not confidently a digit: the not-a-digit detector or the "
        "model's own confidence is past a threshold chosen on validation drawings (docs/uncertainty.md)."
    )
    processed_image: str = Field(description="Base64 PNG of the 28x28 input the model saw.")
    latency_ms: float = Field(description="Server time for preprocessing + this model's inference.")
    logged: bool = Field(description="The prediction was stored durably (database or outage spool).")


class MultiPredictionResult(BaseModel):
    predictions: list[PredictionResult]
    processed_image: str = Field(description="Base64 PNG of the 28x28 input every model saw.")


class ImageOptions(BaseModel):
    """The optional fields every image request shares (multipart form fields or JSON members). Text is read
    without the spaces around it, as a form's fields are (JSON's `" cnn"` was an unknown model, `"s1 "` another
    session than the form's, an API probe, session 32)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    model: str | None = Field(
        None,
        max_length=MODEL_FIELD_MAX,
        description="A model name, or `all` for every ready model; default: the best ready model.",
    )
    pen_color: str | None = Field(
        None, pattern=COLOR_PATTERN, description="`#rrggbb` hint for the ink colour."
    )
    background_color: str | None = Field(
        None, pattern=COLOR_PATTERN, description="`#rrggbb` background hint."
    )
    session_id: str | None = Field(None, max_length=SESSION_ID_MAX, description="Groups a user's drawings.")
    source: Source = Field(
        "api", description="Who asked (`ui`: the canvas, `upload`: a photo or scan sent from the UI, `api`)."
    )

    @field_validator("source", mode="before")
    @classmethod
    def _null_source_is_default(cls, value: Any) -> Any:  # (null is "not given", as for every optional field)
        if isinstance(value, str):  # trimmed as every text field is (a literal is no `str` to pydantic's
            value = value.strip() or None  # str_strip_whitespace: JSON's "upload " was a 422, the form's read)
        return "api" if value is None else value

    @model_validator(mode="before")
    @classmethod
    def _blank_is_not_given(cls, values: Any) -> Any:
        """A blank text member is not given, as a form's empty field (JSON's `"drawing_id": ""`, `"pen_color": ""`
        or `"true_text": " "` were 422s; an API probe, session 46). The image is not optional: its own checks say."""
        if isinstance(values, dict):
            return {k: None if k != "image" and isinstance(v, str) and not v.strip() else v for k, v in values.items()}
        return values

    @field_validator("session_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value == "":  # as a form's empty field: JSON's "" (or "  ") was stored as a session of its own
            return None
        if value is not None and not value.isprintable():
            raise ValueError("must be printable text")
        return value


def drawing_key(session_id: str | None, drawing_id: str | None) -> str | None:
    """The stored key of a drawing: the client's `drawing_id` within its `session_id`, so that another
    session sending the same id (two clients numbering their drawings 1, 2, 3...) gets a record of its own
    instead of replacing this one's picture under its label. 32 hex characters (the column's pattern),
    made the same way without a session: a session's key sent as a bare `drawing_id` took its record."""
    if drawing_id is None:
        return None
    return hashlib.blake2b(f"{session_id or ''}\0{drawing_id}".encode(), digest_size=16).hexdigest()


class PredictOptions(ImageOptions):
    """The optional fields of a prediction request (multipart form fields or JSON members)."""

    true_digit: StrictDigit | None = Field(None, description="What the user says they drew (0-9).")
    drawing_id: str | None = Field(
        None,
        pattern=DRAWING_ID_PATTERN,
        description="The same id on every live prediction of one drawing (e.g. after each stroke): the drawing "
        "keeps one stored record per model, updated with the latest prediction, instead of one per request.",
    )


class PredictJSON(PredictOptions):
    image: str = Field(
        description="The image file (PNG, JPEG, WebP or BMP) as base64; a data: URL is accepted."
    )


class ImageForm(BaseModel):
    """Only for the OpenAPI description of a multipart body (parsing is done by the route)."""

    image: bytes = Field(json_schema_extra={"format": "binary"}, description="PNG, JPEG, WebP or BMP file.")
    model: str | None = Field(None, max_length=MODEL_FIELD_MAX)
    pen_color: str | None = Field(None, pattern=COLOR_PATTERN)
    background_color: str | None = Field(None, pattern=COLOR_PATTERN)
    session_id: str | None = Field(None, max_length=SESSION_ID_MAX)
    source: Source = "api"
    drawing_id: str | None = Field(None, pattern=DRAWING_ID_PATTERN)


class PredictForm(ImageForm):
    true_digit: int | None = Field(None, ge=0, le=9)


TRUE_TEXT_PATTERN = r"^[0-9]{1,32}$"
#: surrounding whitespace is dropped, as a form's `true_digit` drops it ("7\n" is 7, "2024\n" is 2024)
TrueText = Annotated[str, StringConstraints(strip_whitespace=True, pattern=TRUE_TEXT_PATTERN)]


class ReadOptions(ImageOptions):
    """The optional fields of a `/read` request (a written number)."""

    model: str | None = Field(
        None, max_length=MODEL_FIELD_MAX, description="A model name; default: the best ready model."
    )
    true_text: TrueText | None = Field(None, description="The number the person wrote, digits only.")
    drawing_id: str | None = Field(
        None,
        pattern=DRAWING_ID_PATTERN,
        description="The same id on every live read of one drawing: it keeps one stored record, updated.",
    )


class ReadJSON(ReadOptions):
    image: str = Field(
        description="The image file (PNG, JPEG, WebP or BMP) as base64; a data: URL is accepted."
    )


class ReadForm(ImageForm):
    true_text: TrueText | None = None


Box = Annotated[
    list[int], Field(min_length=4, max_length=4, description="x, y, width, height in input pixels.")
]


class ReadDigit(BaseModel):
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(description="Probability of `digit`.")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="Digits 0-9, summing to 1.")
    box: Box
    uncertain: bool = Field(
        description="Not confidently a digit (the same rule as a prediction's `uncertain`)."
    )
    processed_image: str = Field(description="Base64 PNG of the 28x28 input the model saw for this digit.")


class ReadResult(BaseModel):
    id: int | None = Field(
        description="Database id of the stored reading; null while it waits in the outage spool (or when it "
        "could not be stored: `logged` false)."
    )
    uid: str | None = Field(
        description="Unique id of the stored reading; works for feedback even while it is spooled."
    )
    text: str = Field(description="The digits read, left to right.")
    digits: list[ReadDigit]
    confidence: float = Field(description="Product of the digits' confidences.")
    uncertain: bool = Field(description="Some digit is uncertain.")
    dropped: list[Box] = Field(
        description="Marks that are no digits (a dot, a comma, ...), left out of `text`."
    )
    model: str
    model_version: str
    latency_ms: float = Field(description="Server time for segmentation, preprocessing and inference.")
    logged: bool = Field(description="The reading was stored durably (database or outage spool).")


class NumberFeedback(BaseModel):
    """Either the number that was really written, or `not_number: true` for a writing that is no number."""

    true_text: TrueText | None = Field(None, description="The number really written, digits only.")
    # null is "not said", as for true_text (`{"true_text": "42", "not_number": null}` was a 422)
    not_number: StrictBool | None = Field(False, description="It is no number at all (a word, a smiley, ...); "
                                          "null is false.")  # fmt: skip

    @model_validator(mode="after")
    def _one_answer(self) -> NumberFeedback:
        self.not_number = bool(self.not_number)
        if (self.true_text is None) == (not self.not_number):
            raise ValueError("give either true_text (digits) or not_number: true")
        return self


class NumberFeedbackResponse(BaseModel):
    id: int | None = Field(description="The number's database id; null when addressed by uid and queued.")
    uid: str | None = None
    text: str | None = Field(description="The digits read; null while queued.")
    true_text: str | None = Field(description="The number really written; null for `not_number`.")
    not_number: bool = False
    correct: bool | None = Field(description="Whether the reading was right; null while queued.")
    stored: Literal["database", "spool"]
    queued: bool = Field(description="The database is unavailable: the answer waits in the spool.")


class NumberPage(BaseModel):
    items: list[StoredNumber]
    total: int
    page: int
    page_size: int


class FeedbackRequest(BaseModel):
    """Either the digit that was really drawn, or `not_digit: true` for a drawing that is no digit."""

    true_digit: StrictDigit | None = Field(None, description="What was really drawn (0-9).")
    # null is "not said", as for true_digit (`{"true_digit": 1, "not_digit": null}` was a 422)
    not_digit: StrictBool | None = Field(False, description="The drawing is not a digit (a letter, a scribble, "
                                         "...); null is false.")  # fmt: skip

    @model_validator(mode="after")
    def _one_answer(self) -> FeedbackRequest:
        self.not_digit = bool(self.not_digit)
        if (self.true_digit is None) == (not self.not_digit):
            raise ValueError("give either true_digit (0-9) or not_digit: true")
        return self


class FeedbackResponse(BaseModel):
    id: int | None
    uid: str | None = None
    true_digit: int | None = Field(description="Null when the answer is `not_digit`.")
    not_digit: bool = False
    correct: bool | None = Field(None, description="Whether the prediction was right; null while queued.")
    stored: Literal["database", "spool"]
    queued: bool = Field(description="The database is unavailable: the feedback waits in the spool.")


class PredictionPage(BaseModel):
    items: list[StoredPrediction]
    total: int
    page: int
    page_size: int


class DailyAccuracy(BaseModel):
    date: str
    labelled: int
    correct: int
    accuracy: float


class ModelStats(BaseModel):
    predictions: int
    labelled: int
    correct: int
    accuracy: float | None = Field(description="Accuracy on the labelled predictions; null when none.")
    confusion_matrix: list[list[int]] = Field(description="10x10: rows = true digit, columns = predicted.")
    daily: list[DailyAccuracy] = []


class StatsResponse(BaseModel):
    models: dict[str, ModelStats]
    total_predictions: int
    total_labelled: int


class LearnRequest(BaseModel):
    """`POST /api/v1/learn`'s optional body: the models to learn (default: every trained one)."""

    models: list[str] | None = Field(
        None, min_length=1, max_length=8, description="e.g. `[\"svm\", \"svm_pca\"]`: the CNN's fine-tune is the long part."
    )

    @field_validator("models")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        from digitlab.models.registry import MODEL_SPECS

        unknown = [name[:40] for name in value or () if name not in MODEL_SPECS]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r}: choose from {', '.join(MODEL_SPECS)}")
        return list(dict.fromkeys(value)) if value else None


class LearnStarted(BaseModel):
    job_id: str = Field(description="Follow the run at `status_url`.")
    status_url: str


class LearnJob(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    progress: float = Field(ge=0, le=1)
    message: str | None = Field(description="The last thing the run said (or why it failed).")
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None = Field(
        description="When done: data counts, `notes` (what the run said of its data: a disputed session, refused "
        "drawings) and, per model, what became of it."
    )


class ModelVersion(BaseModel):
    name: str
    version: str
    parent_version: str | None
    status: Literal["promoted", "candidate", "rejected", "retired"]
    reason: str | None = Field(description="Why it was rejected (or rolled back).")
    created_at: str
    promoted_at: str | None
    sha256: str
    metrics: dict[str, Any] = Field(description="MNIST test and held-out users' accuracy, and the parent's.")
    data: dict[str, Any] = Field(description="How many users' drawings it learned from, held out, left out.")


def clean_form_value(value: Any) -> Any:
    """HTML forms send empty strings for fields left blank: treat them as absent."""
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


#: a number (the range check then names 0-9), written as a number is: "07" and "-0" were read as 7 and 0
_DIGIT_TEXT = re.compile(r"^\s*(?:-?[1-9][0-9]{0,5}|0)\s*$")


def form_digit(value: Any) -> Any:
    """Form fields are text: '7' -> 7; anything else is left for strict validation to refuse."""
    if isinstance(value, str) and _DIGIT_TEXT.match(value):
        return int(value)
    return value
