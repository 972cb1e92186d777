"""What every page shares: the API client, the health monitor and its banner, styling, small widgets."""

from __future__ import annotations

import html
import io
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import streamlit as st

from digitlab.core.config import get_settings
from digitlab.ui import keys
from digitlab.ui.client import ApiError, ApiUnavailable, DigitlabClient, Health

ASSETS = Path(__file__).with_name("assets")
HEALTH_POLL_SECONDS = 2.0  # an outage shows on every page within this (+ one request)

STATUS_BADGE = {
    "ready": ("ready", "green", ":material/check_circle:"),
    "training": ("training…", "orange", ":material/hourglass_top:"),
    "missing": ("missing", "gray", ":material/block:"),
    "offline": ("service not reachable", "gray", ":material/cloud_off:"),
}

CSS = (ASSETS / "style.html").read_text()  #: the app's style sheet, on top of the theme in .streamlit/config.toml


# --- settings, client, session ----------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _client(api_url: str, token: str | None) -> DigitlabClient:
    return DigitlabClient(api_url, token=token)


def api_url() -> str:
    return get_settings().api_url


def client() -> DigitlabClient:
    settings = get_settings()
    return _client(settings.api_url, settings.admin_token)


def cached_api_call(cache_name: str, key: Any, call, size: int = 64, record: Any = None):
    """`(result, None)` or `(None, ApiError)`; answers are kept per session so reruns (every widget
    change) never send the same drawing again. The oldest entry goes when `size` is reached.

    `record` names the stored record the call updates (a drawing's id and model): the cached answer
    serves only when that record's last call was this picture. After Undo back to an earlier picture
    it is sent again (the record held the undone stroke), and a new drawing with the picture of an
    earlier one gets its own record (not the earlier one's answer, whose feedback would go there)."""
    cache: dict = st.session_state.setdefault(cache_name, {})
    sent: dict = st.session_state.setdefault(f"{cache_name}_sent", {})
    if key in cache and (record is None or sent.get(record) == key):
        return cache[key], None
    try:
        result = call()
    except ApiError as exc:
        return None, exc
    if record is not None:
        sent[record] = key
    if len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = result
    return result, None


def _last_key(cache_name: str, record: Any) -> Any:
    """The cache entry of `record`'s last call that came (see `cached_api_call`), or None."""
    return (st.session_state.get(f"{cache_name}_sent") or {}).get(record)


def last_answer(cache_name: str, record: Any) -> Any:
    """The answer to `record`'s last call that came, or None."""
    key = _last_key(cache_name, record)
    return None if key is None else (st.session_state.get(cache_name) or {}).get(key)


def holds(cache_name: str, record: Any, key: Any) -> bool:
    """Does `record` (see `cached_api_call`) still hold the picture of cache entry `key` (its last call)?"""
    return _last_key(cache_name, record) == key


def duration(seconds: float) -> str:
    """"45 s", "10 min", "1 h 5 min": how long something took, as a person says it ("607 s" made them count)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if (minutes := round(seconds / 60)) < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")


def score_html(confidence: float, uncertain: bool) -> str:
    """The confidence beside an answer: "97% sure", a plain "29% score" when it is low (never "29% sure"),
    and for a flagged answer "Not sure" first, the score after it as the model's (a big "100%" beside
    "unsure" read as certainty)."""
    pct = f"{confidence * 100:.0f}%"
    if uncertain:
        return f"<b>Not sure</b> · model's score {pct}"
    return f"<b>{pct}</b> {'sure' if confidence >= 0.5 else 'score'}"


def close_drawing(prefix: str) -> None:
    """The person answered what this drawing is: its record keeps that picture with the answer, and the
    next change of the picture starts a new record (it would otherwise move the answer onto a changed
    picture). See `canvas._drawing_id`."""
    drawing = st.session_state.get(f"{prefix}_drawing")
    if drawing is not None and not drawing.empty and drawing.drawing_id:
        answered = st.session_state.setdefault(f"{prefix}_answered", {})
        answered[drawing.digest] = (drawing.drawing_id, drawing.background_color)


def session_id() -> str:
    if "session_id" not in st.session_state:
        st.session_state["session_id"] = uuid.uuid4().hex
    return st.session_state["session_id"]


#: streamlit-drawable-canvas' own toolbar (upload, Undo, Redo, "Edit", "Reset canvas & history") is
#: transparent until hovered but still takes clicks and touches over the canvas' top right, and this
#: version has no option to leave it out. A phone never hovers: a tap there wiped the drawing or switched
#: drawing off (its "Edit" button, a pencil), and a stroke starting there was lost. The app has its own
#: Undo and Clear, so the toolbar is hidden: its style lives in the component's (open) shadow root, which
#: the app's CSS cannot reach, so this script puts a rule into every canvas' root, now and when one appears.
#:
#: A canvas wider than its column (Number's 840 px on a phone) scrolls sideways inside the component's own
#: `.dc-scroll`, but a finger on the canvas draws and a phone shows no scrollbar to drag: 58 % of it could
#: not be reached. Such a canvas (`data-dl-wide`, set here when it overflows) gets a strip under it, "swipe
#: here", where a finger scrolls it; a mouse has the scrollbar (styled, so it shows).
NO_CANVAS_TOOLBAR = (ASSETS / "no_canvas_toolbar.html").read_text()  #: the script that does it


def apply_style() -> None:
    st.html(CSS)
    st.html(NO_CANVAS_TOOLBAR + keys.SCRIPTS, unsafe_allow_javascript=True)  # one element: no gap on the page


# --- health --------------------------------------------------------------------------------------------
def check_health() -> Health | None:
    """Ask /health now; remember the answer (or the friendly error) in the session."""
    try:
        health = client().health()
    except ApiError as exc:
        st.session_state["api_error"] = str(exc)
        st.session_state["health"] = None
        return None
    st.session_state["api_error"] = None
    st.session_state["health"] = health
    return health


def health() -> Health | None:
    """The last known health (set by the monitor at the top of every run)."""
    return st.session_state.get("health")


def show_error(slot, error: ApiError, *, nothing: str, kept: str) -> None:
    """An answer's error as every page says it: nothing found in the image (`nothing`), the service away
    (`kept`: what is kept meanwhile), or the API's own one-line message; never a traceback."""
    if error.code == "empty_image" and "busy all over" in str(error):  # the API's reason, not "take it closer":
        slot.info(str(error), icon=":material/gesture:")  # the digit may be large already, the background the cause
    elif error.code == "empty_image":
        slot.info(nothing, icon=":material/gesture:")
    elif isinstance(error, ApiUnavailable):  # the banner names the service and its address; here only what is kept
        slot.warning(f"The prediction service is not answering right now. {kept}", icon=":material/cloud_off:")
    else:
        slot.warning(str(error), icon=":material/warning:")


def api_error() -> str | None:
    return st.session_state.get("api_error")


#: the API has answered this UI process (any visitor's session): a new visitor while it is frozen or gone later was
#: told it "is starting (it loads the models)" and to wait a few seconds (a tour, session 45)
API_ANSWERED = threading.Event()


@st.fragment(run_every=HEALTH_POLL_SECONDS)
def health_monitor(kept: str | None = None, canvas: str | None = None) -> None:
    """Polls /health; shows a notice while the API or its database is away; reruns the whole page when
    the API comes back (or goes away), so every page recovers by itself without a reload.

    The notice floats (`.st-key-dl_outage`) in the header, beside the navigation, in two short lines: appearing
    and going, it moves nothing on the page and covers nothing (the database's and "starting" covered the page's
    title and subtitle, or the bottom of a phone's screen). `kept`: what the page's canvas keeps ("drawing" on Draw and Compare,
    "writing" on Number), so the notice says so; `canvas`: the canvas' prefix ("draw"), to say "Your drawing" only
    when something is drawn on it (a fresh visit heard "Your drawing stays on the canvas." over an empty canvas)."""
    was_ok = st.session_state.get("api_ok")
    # the run this monitor asked for (below) starts with the check it just made: a frozen API's second
    # check took HEALTH_TIMEOUT again before the notice showed
    fresh = time.monotonic() - st.session_state.pop("health_rerun_at", float("-inf")) < 1.0
    state = health() if fresh else check_health()
    ok = state is not None
    st.session_state["api_ok"] = ok
    # the models' and database's states: shown outside this fragment too (a card said "training…" for good)
    seen, st.session_state["health_seen"] = st.session_state.get("health_seen"), (ok and (state.models, state.database))
    if (was_ok is not None and ok != was_ok) or (ok and seen and seen != st.session_state["health_seen"]):
        if ok and not was_ok:
            st.session_state["api_recovered_at"] = datetime.now()
        _models_cached.clear()
        st.session_state["health_rerun_at"] = time.monotonic()
        st.rerun(scope="app")
    if not ok and not st.session_state.get("api_seen") and not API_ANSWERED.is_set() and get_settings().api_started_beside:
        with st.container(key="dl_outage"):  # (in the header: style.html)
            st.info("**The prediction service is starting.**\n\nThe page connects by itself shortly.",
                    icon=":material/hourglass_top:")  # fmt: skip
    elif not ok:
        _log_away(started=bool(st.session_state.get("api_seen")))
        # plain words, no address: a newcomer was shown "not reachable at http://127.0.0.1:8000" (a tour);
        # the address and how to start the API go to the UI's log, where whoever runs it looks
        said = ("The page reconnects by itself." if not kept else f"Your {kept} stays on the canvas."
                if drawn(canvas) else f"What you {'write' if kept == 'writing' else 'draw'} stays on the canvas.")
        with st.container(key="dl_outage"):  # (in the header: style.html)
            st.error(f"**Predictions are unavailable — retrying.**\n\n{said}", icon=":material/cloud_off:")
    else:
        st.session_state["api_seen"] = True
        API_ANSWERED.set()
        _AWAY_LOGGED.clear()
    # (`spool` counts drawings, readings and answers alike, every visitor's: "Answers are queued (3 waiting)" was
    # said after one answer and two strokes on Number; the API does not tell answers apart)
    if ok and not state.database_ok:  # (back: "unavailable" was said until the queue was saved, ~20 s under load)
        waiting, back = (f" ({state.spool} waiting)" if state.spool else ""), state.database == "catching_up"
        with st.container(key="dl_outage"):  # (in the header, short: style.html)
            (st.info if back else st.warning)(
                f"**The database is back: saving the queue.**\n\nHistory fills in as it is saved{waiting}."
                if back else f"**Database unavailable; predictions work.**\n\nDrawings and answers are queued{waiting}.",
                icon=":material/database:",
            )  # fmt: skip


def drawn(canvas: str | None) -> bool:
    """Is something on the canvas with this prefix (as its page's last run saw it)?"""
    drawing = st.session_state.get(f"{canvas}_drawing") if canvas else None
    return drawing is not None and not drawing.empty


#: this UI process has logged the API's absence (once per outage, however many visitors see it)
_AWAY_LOGGED = threading.Event()


def _log_away(*, started: bool) -> None:
    """The API's address and, when this visitor never saw it answer, how to start it: in the UI's log
    (`digitlab ui`'s output), once per outage; the page says only that predictions are unavailable."""
    if _AWAY_LOGGED.is_set():
        return
    _AWAY_LOGGED.set()
    start = "" if started else f" Not started yet? {_how_to_start(api_url())}"
    logging.getLogger("digitlab.ui").warning("%s%s", api_error(), start)


def _how_to_start(url: str) -> str:
    """The command that starts the API this UI looks for (its port when it is not the default)."""
    try:
        port = urlsplit(url).port
    except ValueError:  # (not a port: said as the default's)
        port = 8000
    if port in (None, 8000):
        return "Run `digitlab serve` for the API, or `make run` for the API and this UI."
    return f"Run `DIGITLAB_PORT={port} digitlab serve` for the API."  # (`make run`: both on the default ports)


# --- model catalogue -----------------------------------------------------------------------------------
@st.cache_data(ttl=10, show_spinner=False)
def _models_cached(api_url: str) -> list[dict[str, Any]]:
    return client().models()


def model_catalog() -> tuple[list[dict[str, Any]], str | None]:
    """(models, error). Falls back to the last list this session saw when the API is away, without asking
    it again when this run's health check already found it away (a hung API held every page blank, the
    canvas too, for the read timeout)."""
    if st.session_state.get("api_ok") is False:
        return st.session_state.get("_last_models", []), "The prediction service is not reachable."
    try:
        models = _models_cached(api_url())
    except ApiError as exc:
        return st.session_state.get("_last_models", []), str(exc)
    st.session_state["_last_models"] = models
    return models, None


def display_name(models: list[dict[str, Any]], name: str) -> str:
    for m in models:
        if m.get("name") == name:
            return str(m.get("display_name") or name)
    return name


def not_ready_note(models: list[dict[str, Any]]) -> str | None:
    """A line for the page (not only a tooltip) naming the models that cannot answer yet, or None."""
    training = [display_name(models, m["name"]) for m in models if m.get("status") == "training"]
    missing = [display_name(models, m["name"]) for m in models if m.get("status") == "missing"]
    parts = []
    if training:
        joins = "they join as soon as they are" if len(training) > 1 else "it joins as soon as it is"
        parts.append(f"Still training: {', '.join(training)}; {joins} ready.")
    if missing:
        parts.append(f"Not trained: {', '.join(missing)}.")  # (the command is the Models page's operator note)
    return " ".join(parts) or None


#: how the operator gives the UI the API's admin key (for the operator's eyes: `for_the_operator`)
ADMIN_HOW = "Start `digitlab ui` with DIGITLAB_ADMIN_TOKEN set as for the API (the same key)."


def for_the_operator(notes: list[str]) -> None:
    """What only whoever runs the app can do (a command, a setting), folded away at the page's end: a person using it
    was told to run `digitlab train` or to start the UI with DIGITLAB_ADMIN_TOKEN (a newcomer's tour, session 47)."""
    notes = list(dict.fromkeys(n for n in notes if n))
    if notes:
        with st.expander("For whoever runs this app", icon=":material/terminal:"):
            st.markdown("\n".join(f"- {n}" for n in notes))


def names_text(models: list[dict[str, Any]], names: list[str]) -> str:
    """'SVM (RBF kernel)', 'SVM (RBF kernel) and Extra Trees', 'A, B and C' (display names)."""
    shown = [display_name(models, m) for m in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def disagreement(votes: dict[int, list[str]], models: list[dict[str, Any]]) -> str:
    """'The models disagree: **7** according to CNN (convolutional network) and SVM (RBF kernel); **1**
    according to Extra Trees.' Display names carry parentheses, so the sentence adds none around them."""
    parts = [f"**{digit}** according to {names_text(models, names)}" for digit, names in votes.items()]
    return "The models disagree: " + "; ".join(parts) + "."


#: the manifest's accuracy on held-out real handwriting by other writers (`evaluation.heldout.METRIC`)
REAL_HELDOUT = "real_heldout_accuracy"
MNIST_TEST = "mnist_test_accuracy"


def accuracy_of(model: dict[str, Any], metric: str = MNIST_TEST) -> float | None:
    value = (model.get("metrics") or {}).get(metric)
    return None if value is None else float(value)


# --- formatting ------------------------------------------------------------------------------------------
def a_digit(digit: int, *, bold: bool = False) -> str:
    """'a 7', 'an 8' (English wants "an" before "eight"); `bold`: 'an **8**' for markdown."""
    shown = f"**{digit}**" if bold else str(digit)
    return f"{'an' if int(digit) == 8 else 'a'} {shown}"


def runner_up_named(probabilities: list[float]) -> bool:
    """Is the runner-up probable enough (0.15) to be named beside the answer: "is it an 8 or a 9?"?"""
    return sorted(probabilities)[-2] >= 0.15


def named_digits(probabilities: list[float]) -> list[int]:
    """The digits a "not sure" question names: the likeliest, and the runner-up when it is close."""
    ranked = sorted(range(10), key=lambda d: probabilities[d], reverse=True)
    return ranked[: 2 if runner_up_named(probabilities) else 1]


def not_sure_sentence(probabilities: list[float]) -> str:
    """'Not sure — is it a 4?' or, when the runner-up is close, 'Not sure — is it an 8 or a 9?'."""
    return f"Not sure — is it {' or '.join(a_digit(d) for d in named_digits(probabilities))}?"


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def size_text(n: float | None) -> str:
    """Decimal units, like the training log (`7.5 MB` = 7,500,000 bytes of the artefact file)."""
    if n is None:
        return "—"
    for unit in ("bytes", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def browser_timezone() -> tuple[str, str]:
    """The browser's time zone (Streamlit reports it), else UTC; and how to name it ("local time", "UTC")."""
    try:
        name = st.context.timezone or "UTC"
        ZoneInfo(name)
    except (ValueError, KeyError, OSError, AttributeError):  # unknown or missing zone: show UTC, say so
        name = "UTC"
    return name, ("UTC" if name in ("UTC", "Etc/UTC") else "local time")


#: how a time is written everywhere (History's log is a DatetimeColumn, in moment.js' tokens)
TIME_FORMAT = "D MMM YYYY, HH:mm:ss"


def when_text(value: str | None) -> str:
    """An API time (UTC; naive means UTC) in the browser's time zone, written as the prediction log writes it
    (`TIME_FORMAT`: the numbers' table beside it said "02 Dec 2026, 06:00", the log "2 Dec 2026, 06:00:05")."""
    if not value:
        return "—"
    try:
        dt = datetime.fromisoformat(str(value))  # Python 3.11 reads a trailing "Z" too
    except ValueError:
        return str(value)
    dt = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    local = dt.astimezone(ZoneInfo(browser_timezone()[0]))
    return f"{local.day} {local:%b %Y, %H:%M:%S}"


def esc(text: Any) -> str:
    return html.escape(str(text))


def zoom_png(png: bytes, size: int = 140) -> bytes:
    """Scale a small greyscale PNG up with hard pixel edges (the browser would blur it)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        big = im.convert("L").resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    big.save(out, format="PNG")
    return out.getvalue()


def page_header(title: str, caption: str) -> None:
    """The page's title, without an anchor link: it was the first Tab stop after "Skip to main content", a link
    that never shows (the sections' headings have none either)."""
    st.title(title, anchor=False)
    st.caption(caption)


def counted_caption(first: int, last: int, total: int, noun: str) -> str:
    """ "1–25 of 46 predictions · newest first", "1 prediction · newest first", "all 3 numbers · newest first"
    ("1–1 of 1 predictions" read oddly)."""
    nouns = noun if total == 1 else noun + "s"
    if first == 1 and last == total:
        return f"{'all ' if total > 2 else ''}{total:,} {nouns} · newest first"
    return f"{first:,}–{last:,} of {total:,} {nouns} · newest first"
