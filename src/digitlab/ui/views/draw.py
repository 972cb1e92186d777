"""Draw: a canvas; the prediction appears when a stroke ends; one click tells the model what it was.
A photo or scan of a digit can be uploaded instead: it gets the same answer panel and feedback."""

from __future__ import annotations

import base64
import hashlib

import streamlit as st

from digitlab.ui import answers, charts, common, ink, keys, uploads
from digitlab.ui.canvas import FOLLOWS_ANSWER, Drawing, drawing_canvas
from digitlab.ui.client import LIVE_PATIENCE, ApiError, ApiUnavailable, Prediction

AUTO = "__auto__"
MODEL_PARAM = "model"  #: the address's query parameter naming the chosen model
CACHE_SIZE = 64


def _model_options(models: list[dict]) -> tuple[list[str], dict[str, str], str]:
    """The ready models, each labelled with one measure for all (`picker_measure`), and that measure."""
    health = common.health()
    ready = (
        set(health.ready_models) if health else {m.get("name") for m in models if m.get("status") == "ready"}
    )
    labels = {AUTO: "Best available model"}
    served = [m for m in models if m.get("name") in ready]
    measure = picker_measure(served)
    for m in served:
        labels[m["name"]] = _label(m, real=measure == common.REAL_HELDOUT)
    return [AUTO, *(m["name"] for m in served)], labels, measure


def picker_measure(models: list[dict]) -> str:
    """One measure for every model in the picker: held-out real handwriting (closest to what a person draws)
    when each has it, else MNIST test's for all. Mixed, "CNN · 97.6 % on real handwriting" beside "SVM ·
    98.6 % on MNIST" (a quick SVM) read as if the SVM were the better one."""
    if models and all(common.accuracy_of(m, common.REAL_HELDOUT) is not None for m in models):
        return common.REAL_HELDOUT
    return common.MNIST_TEST


def _label(model: dict, *, real: bool) -> str:
    """'SVM (RBF kernel) · 97.3 % on real handwriting', or '… · 98.6 % on MNIST' (the measure named)."""
    name = model.get("display_name") or model.get("name")
    value = common.accuracy_of(model, common.REAL_HELDOUT if real else common.MNIST_TEST)
    if value is None:
        return str(name)
    return f"{name} · {common.pct(value)} on {'real handwriting' if real else 'MNIST'}"


def model_picker(models: list[dict]) -> str | None:
    options, labels, measure = _model_options(models)
    _from_address(options)
    current = st.session_state.get("draw_model")
    if current not in options:  # a model went away (or this is the first run)
        st.session_state.pop("draw_model", None)
    not_ready = [m for m in models if m.get("name") not in options and m.get("name")]
    help_text = (
        "Accuracy on held-out real handwriting by people the models never learned from (closer to what you draw)."
        if measure == common.REAL_HELDOUT
        else "Accuracy on the 10,000 MNIST test digits, for every model alike: not every model here is measured "
        "on real handwriting (a quick one is not), which is closer to what you draw."
    ) + " The Models page tells more."
    if not_ready:
        help_text += " Not available now: " + ", ".join(
            f"{m.get('display_name') or m['name']} ({m.get('status', 'missing')})" for m in not_ready) + "."  # fmt: skip
    choice = st.selectbox(
        "Model", options, format_func=lambda o: labels.get(o, o), key="draw_model", help=help_text,
        persist_state="session",  # kept through a visit to another page, like the pen
    )
    _keep_in_address(choice)
    return None if choice in (None, AUTO) else choice


def _from_address(options: list[str]) -> None:
    """A session's first run takes the model named in the address (`?model=svm`), if it is ready."""
    named = st.query_params.get(MODEL_PARAM)
    if "draw_model" not in st.session_state and named in options:
        st.session_state["draw_model"] = named


def _keep_in_address(choice: str | None) -> None:
    """The choice in the address: a reload kept nothing (back to the best model), and a link can share it.
    (The selectbox's own binding wrote its label, "SVM · 97.3 % on real handwriting", which changes with
    every build.)"""
    if choice in (None, AUTO):
        if MODEL_PARAM in st.query_params:
            del st.query_params[MODEL_PARAM]
    elif st.query_params.get(MODEL_PARAM) != choice:
        st.query_params[MODEL_PARAM] = choice


def predict(drawing: Drawing, model: str | None) -> tuple[Prediction | None, ApiError | None]:
    """One API call per distinct (drawing, model); errors are not cached so the next rerun retries."""
    return common.cached_api_call(
        "draw_cache", (drawing.digest, model),
        lambda: common.client().predict(
            drawing.png, model, pen_color=drawing.pen_color, background_color=drawing.background_color,
            session_id=common.session_id(), drawing_id=drawing.drawing_id, patience=LIVE_PATIENCE,
        ),
        size=CACHE_SIZE, record=(drawing.drawing_id, model) if drawing.drawing_id else None,
    )  # fmt: skip


def predict_photo(photo, model: str | None) -> tuple[Prediction | None, ApiError | None]:
    """An uploaded photo or scan, predicted once per (file, model) like a drawing; stored as source "upload"."""
    def call():
        data, fields = uploads.upload_request(photo)
        return common.client().predict(data, model, session_id=common.session_id(), **fields)

    return common.cached_api_call("draw_cache", ("photo", photo.file_id, model), call, size=CACHE_SIZE)


def photo_picker():
    return uploads.digit_photo_picker("draw_photo", "the model reads")


NOT_A_DIGIT = "Not a digit"
DROPPED = "Your answer was not saved: the drawing changed (Undo or Clear) as you clicked. Answer the drawing on the canvas."
ANSWERS = [*range(10), NOT_A_DIGIT]


def send_feedback(key: str, prediction: Prediction, digest: str, *, spread: bool = True, rev: int | None = None) -> None:
    """The answer chosen under `prediction` (the picture with this digest) to the API; its outcome for the page.
    With `spread`, the other models' records of the same picture get it too (`_answer_other_models`). `rev`: the
    canvas' revision when the answers were shown; an Undo or Clear since (`canvas._set_drawing`) means the click
    was on the earlier picture's answers (`keys` holds such a click back; should one come through, it is not
    sent: it labelled the cleared drawing, or the drawing that a further stroke then took over)."""
    answer = st.session_state.get(key)
    if rev is not None and answer is not None and st.session_state.get("draw_rev", 0) != rev:
        given = st.session_state.get(f"{key}_result")  # (answered already: that answer stays, and no word)
        st.session_state[key] = given[2] if given else None
        if not given:  # said by `show_result`, not here: an element shown by a callback in a fragment's run
            st.session_state["draw_answer_dropped"] = True  # replaced the page's first one, its style sheet
        return
    if answer is None:  # the chosen answer clicked again: it stays the answer (it is stored; none cannot be)
        given = st.session_state.get(f"{key}_result")
        if given is not None:
            st.session_state[key] = given[2]
        return
    unsent: dict = st.session_state.setdefault("draw_unsent", {})  # key -> (prediction, digest, answer)
    try:
        if answer == NOT_A_DIGIT:
            result = common.client().feedback(prediction, None, not_digit=True)
        else:
            result = common.client().feedback(prediction, int(answer))
        st.session_state[f"{key}_result"] = ("saved" if result.saved else "queued" if result.queued else "info",
                                             result.message, answer)  # fmt: skip
        unsent.pop(key, None)
        shown = st.session_state.get("draw_drawing")
        if shown is not None and shown.digest == digest and _stroke_on_its_way(shown):
            st.session_state["draw_answer_follows"] = (shown.drawing_id, answer, digest)  # (`draw_area`)
        elif shown is not None and shown.digest == digest:  # (not when it was the photo, or a picture drawn over)
            if spread:
                _answer_other_models(prediction, shown, answer)
            common.close_drawing("draw")
        st.session_state.setdefault("draw_answers", {})[digest] = answer
    except ApiUnavailable as exc:  # sent again when the service is back (`send_unsent`)
        st.session_state[f"{key}_result"] = ("unsent", exc.code, answer)  # (why it waits: `answers.waiting`)
        unsent[key] = (prediction, digest, answer)
        shown = st.session_state.get("draw_drawing")
        if shown is not None and shown.digest == digest:  # answered all the same: a further stroke is a new
            common.close_drawing("draw")  # drawing (it moved the answer onto the changed picture, and the
            # answered picture was lost, once the service was back)
    except ApiError as exc:
        st.session_state[f"{key}_result"] = ("error", str(exc), answer)
        unsent.pop(key, None)


def _stroke_on_its_way(shown) -> bool:
    """Does the canvas hold more strokes than the answered picture (the person clicked an answer a moment after
    a last stroke, before its run)? The answer is then the whole drawing's: it follows to that stroke's
    prediction. (It was the earlier picture's: a 4's first stroke, an L, was stored as a 4, and the whole 4 as a
    new drawing with no answer.)"""
    try:  # (the component's value, as the browser last sent it: its run may not have come yet)
        return len(st.session_state["draw_canvas"]["drawing"]["raw"]["objects"]) > shown.strokes
    except (KeyError, TypeError):
        return False


def _answer_other_models(prediction: Prediction, shown, answer) -> None:
    """The picture on the canvas was also predicted by other models before the answer (the person switched
    the model, then answered): their records of it get the answer too, as Compare's do. Only records that
    still hold this picture (`cached_api_call`'s record bookkeeping), each once."""
    cache: dict = st.session_state.get("draw_cache") or {}
    done = {prediction.model}
    for cache_key, other in list(cache.items()):
        if len(cache_key) != 2:  # ("photo", file, model): an uploaded photo's answer, not the canvas'
            continue
        digest, requested = cache_key
        if digest != shown.digest or other is None or other.model in done or not shown.drawing_id:
            continue
        if not common.holds("draw_cache", (shown.drawing_id, requested), cache_key):  # it holds another picture
            continue
        done.add(other.model)
        key = f"fb_{(other.uid or digest)[:12]}_{other.model}"
        given = st.session_state.get(f"{key}_result")
        if given is not None and given[2] == answer and given[0] in ("saved", "queued"):
            continue
        st.session_state[key] = answer
        send_feedback(key, other, digest, spread=False)


def show_waiting_answers() -> None:
    """The answers waiting for the service (`draw_unsent`), said under its notice when the picture on the canvas
    cannot be read: a stroke after answering during an outage took "Not saved yet: you drew a 3 …" off the page
    with the result and the pills, leaving only "not answering" (the answer was still sent when it was back)."""
    photos = st.session_state.get("draw_photo_digests") or set()
    for key, (_prediction, digest, answer) in (st.session_state.get("draw_unsent") or {}).items():
        what = "not a digit" if answer == NOT_A_DIGIT else f"you drew {common.a_digit(answer, bold=True)}"
        which = "the photo you answered" if digest in photos else "the drawing as it was when you answered"
        why = (st.session_state.get(f"{key}_result") or ("", ""))[1]  # (the code it was kept by)
        answers.show("unsent", f"{what} ({which})", message=why)


def send_unsent() -> None:
    """Answers given while the service was away, sent once it is back (it reruns the page then): also
    those of a picture no longer on screen (the person drew on; the answer was silently lost)."""
    unsent: dict = st.session_state.get("draw_unsent") or {}
    if not unsent or not st.session_state.get("api_ok"):
        return
    shown = st.session_state.get("draw_drawing")
    for key, (prediction, digest, answer) in list(unsent.items()):
        if st.session_state.get(key) is None:
            st.session_state[key] = answer  # (the pill's own state is gone when it is not on the page)
        send_feedback(key, prediction, digest)
        outcome = st.session_state.get(f"{key}_result")
        if outcome and outcome[0] in ("saved", "queued") and (shown is None or shown.digest != digest):
            what = "not a digit" if answer == NOT_A_DIGIT else f"a {answer}"
            st.toast(f"Your earlier answer is saved: the picture you answered is stored as {what}.",
                     icon=":material/check_circle:", duration="long")  # (its answer panel is no longer on the page to say so)


def answer_html(
    prediction: Prediction, models: list[dict], digest: str, *, photo: bool = False, several: bool = False,
    small: bool = False,
) -> str:  # fmt: skip
    """The answer card, the 28×28 image the model saw, the "not sure" note and the probability bars, as
    one HTML block: written in one piece, they always show the same result. `photo`: the answer is for an
    uploaded photo (its advice speaks of the photo, and of the Number page for a whole number). `several`:
    the drawing looks like several digits side by side (`ink.several_digits`): only then does a drawing's
    advice send it to the Number page (a smiley's did too)."""
    name = common.display_name(models, prediction.model)
    unsure = " dl-unsure" if prediction.uncertain else ""
    score = common.score_html(prediction.confidence, prediction.uncertain)
    latency = f" · {prediction.latency_ms:.0f}&nbsp;ms" if prediction.latency_ms is not None else ""
    seen = ""
    if prediction.processed_png:
        big = common.zoom_png(prediction.processed_png, 96)  # hard pixel edges at its natural size
        uri = "data:image/png;base64," + base64.b64encode(big).decode("ascii")
        seen = (f'<figure class="dl-seen"><img src="{uri}" alt="The 28×28 image the model saw">'
                "<figcaption>What the model saw (28×28)</figcaption></figure>")  # fmt: skip
    note = ""
    if prediction.uncertain:
        if photo:
            advice = ("It may not be one digit: take the photo closer, one digit filling it. Several digits? The "
                      "<b>Number</b> page reads whole numbers.")  # fmt: skip
        elif several:
            advice = ("It looks like several digits: draw one, large. A whole number goes on the <b>Number</b> "
                      "page.")  # fmt: skip (3 lines on a phone pushed "Saved" off the screen: a tour)
        elif small:
            advice = "It is drawn small: draw one digit large, filling most of the canvas."
        elif common.runner_up_named(prediction.probabilities):  # "a 1 or a 7?": a long-flag 1 was told it
            advice = "If it is one of them, say which below: the models learn from such answers."  # may be no digit
        else:
            advice = "It may not be a digit at all: draw one digit, large."
        note = (f'<div class="dl-note" data-testid="dl-unsure">{common.not_sure_sentence(prediction.probabilities)} '
                f"{advice}</div>")  # fmt: skip
    source = ('<div class="dl-source" data-testid="dl-photo-note">This answer is for your uploaded photo; draw on '
              "the canvas (or remove the photo) to use the canvas again.</div>" if photo else "")  # fmt: skip
    return f"""<div class="dl-answer" data-testid="dl-prediction" data-drawing="{digest[:16]}">{source}
        <div class="dl-result"><div class="dl-digit{unsure}" data-testid="dl-digit">{prediction.digit}</div>
          <div class="dl-meta"><span>{score}</span>
            <span>{common.esc(name)}{latency}</span></div>{seen}</div>
        {note}{charts.probabilities_html(prediction.probabilities, prediction.digit)}</div>"""


def show_result(
    prediction: Prediction,
    models: list[dict],
    digest: str,
    slot,
    *,
    follows_answer: bool = False,
    photo: bool = False,
    several: bool = False,
    small: bool = False,
) -> None:
    """The answer, "What did you draw?" and what became of the answer. `follows_answer`: the picture was
    changed after an answer (a new drawing), said under it until it is answered. `photo`: an uploaded photo's.
    `several`, `small`: the drawing looks like several digits, or is small (`answer_html`)."""
    slot.markdown(
        answer_html(prediction, models, digest, photo=photo, several=several, small=small), unsafe_allow_html=True
    )

    key = f"fb_{(prediction.uid or digest)[:12]}_{prediction.model}"  # per record: a twin shows no "Saved"
    given = st.session_state.setdefault("draw_answers", {})  # picture digest -> the answer given for it
    if key not in st.session_state and digest in given:
        # the same picture answered with another model: the answer is the picture's, so this model's
        # record gets it too (switching the model asked again, and its record stayed unlabelled)
        st.session_state[key] = given[digest]
        send_feedback(key, prediction, digest)
    st.pills(
        "What did you draw?", ANSWERS, key=key, on_change=send_feedback, args=(key, prediction, digest),
        kwargs={"rev": None if photo else st.session_state.get("draw_rev", 0)},
        help="One click saves the true digit with this drawing, so the History page can measure accuracy and "
        f"the models can learn from it. 'Not a digit' teaches the check that catches scribbles. {keys.PICK_HELP}",
    )  # fmt: skip
    if st.session_state.pop("draw_answer_dropped", False):
        st.toast(DROPPED, icon=":material/info:")
    with st.empty():  # always one element here: a photo's or an earlier line cannot linger below
        outcome = st.session_state.get(f"{key}_result")
        if outcome:
            kind, message, answer = outcome
            if answer == NOT_A_DIGIT:
                what, verdict = "not a digit", "It is kept out of the digit accuracy."
            else:
                what = f"you drew {common.a_digit(answer, bold=True)}"
                verdict = "The model was right." if answer == prediction.digit else f"The model said {prediction.digit}."
            if kind == "info":
                st.info(message)
            else:
                answers.show(kind, what, verdict, message)
        elif follows_answer:
            st.caption(FOLLOWS_ANSWER)
        elif prediction.id is not None:
            st.caption(f":material/database: Saved to the history as #{prediction.id}.")
        elif prediction.logged:
            st.caption(":material/schedule: The database is unavailable: this drawing is queued and saved when it is "
                       "back.")  # fmt: skip


@st.fragment
def draw_area() -> None:
    send_unsent()
    models, _ = common.model_catalog()
    with st.container(key="draw_layout"):  # (a phone shows the answer before the options: common.CSS)
        left, right = st.columns([1, 1.25], gap="large")
    with left:
        drawing = drawing_canvas("draw", hint="Draw one digit, 0–9, big")
        with st.container(key="draw_options"):
            model = model_picker(models)
            note = common.not_ready_note(models)
            if note:
                st.caption(f":material/hourglass_top: {note}")
            uploads.forget_photo_drawn_over("draw_photo", drawing)
            photo = photo_picker()
    with right:
        # the answer, its buttons and notes in one element, replaced whole on every run: a trailing
        # element of the previous answer (the photo's caption) could outlive an interrupted run
        slot = st.empty().container(key="draw_result")  # (a phone shows the chart after the question: common.CSS)
        with slot:
            if photo is not None:
                show_photo_answer(photo, model, models, slot)
                return
            if drawing.empty:
                st.session_state.pop("draw_answers", None)  # a new drawing starts: earlier answers stay theirs
                slot.markdown(
                    '<div class="dl-placeholder" data-testid="dl-empty">Draw a digit on the canvas.<br>'
                    "The answer shows up here as soon as you lift the pen.</div>",
                    unsafe_allow_html=True,
                )
                show_waiting_answers()  # (cleared during an outage: the answer still waits, and is sent)
                return
            with st.spinner("Reading your drawing…"):  # (shown after 0.5 s: the first prediction while the database
                prediction, error = predict(drawing, model)  # is locked waits 5 s, under "Draw a digit")
            if error is not None:
                common.show_error(slot, error, nothing=ink.nothing_drawn(drawing),
                                  kept="Your drawing is kept; it is recognised as soon as the service is back.")  # fmt: skip
                if isinstance(error, ApiUnavailable):
                    show_waiting_answers()
                return
            follow = st.session_state.get("draw_answer_follows")  # an answer clicked as this stroke was on its way
            if follow is not None and follow[0] == drawing.drawing_id and follow[2] != drawing.digest:
                st.session_state.pop("draw_answer_follows")
                st.session_state.setdefault("draw_answers", {})[drawing.digest] = follow[1]  # (`show_result` sends it)
            follows = drawing.drawing_id is not None and st.session_state.get("draw_follows_answer") == drawing.drawing_id
            several = prediction.uncertain and ink.several_digits(
                drawing.png, drawing.pen_color, drawing.background_color
            )
            small = prediction.uncertain and ink.drawn_small(drawing.png, drawing.pen_color, drawing.background_color)
            show_result(prediction, models, drawing.digest, slot, follows_answer=follows, several=several, small=small)


def show_photo_answer(photo, model: str | None, models: list[dict], slot) -> None:
    with st.spinner("Reading your photo…"):  # (a 7 MB photo took 2.6 s, under "Draw a digit on the canvas")
        prediction, error = predict_photo(photo, model)
    if error is not None:  # the API's one-line message (unreadable image, too large, …), never a traceback
        common.show_error(slot, error, nothing=uploads.NOTHING_IN_PHOTO,
                          kept="Your photo is kept; it is recognised as soon as the service is back.")  # fmt: skip
        if isinstance(error, ApiUnavailable):  # (an answer waiting went unsaid under it, as a drawing's did once)
            show_waiting_answers()
        return
    digest = hashlib.sha1(photo.getvalue()).hexdigest()
    st.session_state.setdefault("draw_photo_digests", set()).add(digest)  # (a waiting answer says "the photo")
    show_result(prediction, models, digest, slot, photo=True)


common.page_header("Draw a digit", "Draw a digit with the mouse or a finger: it is recognised when you lift the "
                   "pen. Then tell the model whether it was right.")  # fmt: skip
draw_area()
