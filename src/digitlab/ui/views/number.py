"""Number: write a whole number on a wide canvas (or upload a photo of one); it is read after every stroke,
with a box over each digit, each digit's 28x28 input and confidence; then "What did you write?"."""

from __future__ import annotations

import base64
import unicodedata

import streamlit as st

from digitlab.ui import answers, common, ink, uploads
from digitlab.ui.canvas import drawing_canvas
from digitlab.ui.client import LIVE_PATIENCE, ApiError, ApiUnavailable
from digitlab.ui.number_preview import boxed

CANVAS_WIDTH = 840
CANVAS_HEIGHT = 280
CACHE_SIZE = 32




def read(image: bytes, key: str, filename: str, **fields) -> tuple[dict | None, ApiError | None]:
    return common.cached_api_call(
        "number_cache", key,
        lambda: common.client().read(image, filename=filename, session_id=common.session_id(), **fields),
        size=CACHE_SIZE, record=fields.get("drawing_id"),
    )  # fmt: skip


def show_reading(answer: dict, image: bytes, key: str, *, photo: bool = False) -> None:
    """The reading, its confirmation, the boxes and each digit's 28x28. `photo`: an uploaded photo's, said
    above it (its reading showed under an empty canvas as if the canvas had been read; Draw says so too)."""
    text = answer.get("text") or ""
    if photo:
        st.markdown('<div class="dl-source" data-testid="dl-photo-note">This reading is for your uploaded photo; '
                    "write on the canvas (or remove the photo) to use the canvas again.</div>",
                    unsafe_allow_html=True)  # fmt: skip
    unsure = " dl-unsure" if answer.get("uncertain") else ""
    # one line up to a dozen digits (smaller past six); longer readings wrap rather than leave the card
    unsure += " dl-very-long" if len(text) > 12 else " dl-long" if len(text) > 6 else ""
    model = common.display_name(common.model_catalog()[0], answer.get("model", ""))
    # a phone turned sideways shows the reading floating over the page and the question under the canvas, below
    # the screen: the link (shown there only, `style.html`) takes you to it (the Left list of sessions 34-42)
    to_answer = ('<a class="dl-to-answer" href="#dl-answer" target="_self" data-testid="dl-to-answer">Is it right? ↓</a>'
                 if answer.get("logged") else "")  # fmt: skip
    st.markdown(
        f"""<div class="dl-result dl-number-row" data-testid="dl-number" data-text="{common.esc(text)}">
          <div class="dl-digit dl-number{unsure}" data-testid="dl-number-text">{common.esc(text) or "–"}</div>
          <div class="dl-meta"><span>{_number_score(answer)}</span>
            <span>{common.esc(model)} · {answer.get("latency_ms", 0):.0f}&nbsp;ms</span></div>{to_answer}</div>
        <span id="dl-answer" class="dl-anchor"></span>""",
        unsafe_allow_html=True,
    )
    feedback(answer, key)  # right under the reading: no scrolling to confirm (it was ~550 px below the fold)
    st.image(boxed(image, answer["digits"]), caption="What was read: one box per digit", width="content")
    # one slot each, written in every run, empty or not: a reading's "Not sure" stayed under the next, sure one
    # (a phone, fast strokes: 3 of 9), left by a page run the next stroke cut short and never cleared
    seen, left_out_note, unsure_note = st.empty(), st.empty(), st.empty()
    if answer["digits"]:
        seen.markdown(_digits_seen(answer["digits"]), unsafe_allow_html=True)
    if answer.get("dropped"):
        left_out = len(answer["dropped"])
        what = "1 mark that is no digit" if left_out == 1 else f"{left_out} marks that are no digits"
        left_out_note.caption(f"Left out {what} (a dot, a comma, …).")
    unsure = sum(1 for d in answer["digits"] if d.get("uncertain"))
    if unsure:
        which = "the digit" if len(answer["digits"]) == 1 else "all the digits" if unsure == len(answer["digits"]) \
            else "the digits with an orange box"
        unsure_note.info(f"Not sure of {which}: write digits larger, with a little space between them. It may not "
                         "be a number at all.", icon=":material/help:")  # fmt: skip


def show_earlier(answer: dict) -> None:
    """The last reading of this writing, before the stroke the service was away for: one more stroke during an
    outage took the reading off the page, leaving only "not answering"."""
    text = answer.get("text") or "–"
    st.markdown(f'<div class="dl-source" data-testid="dl-number-earlier">Before your latest stroke it was read as '
                f"<b>{common.esc(text)}</b>; the whole writing is read when the service is back.</div>",
                unsafe_allow_html=True)  # fmt: skip
    if answer.get("digits"):
        st.markdown(_digits_seen(answer["digits"]), unsafe_allow_html=True)


#: Under the reading of a writing changed after the person confirmed it: the answer stayed with the number
#: confirmed (the box quietly followed the new reading, with no word of where the answer went)
FOLLOWS_CONFIRMED = (":material/info: The writing changed after you confirmed it: your answer stays with the number you "
                     "confirmed, and this changed writing is a new reading. Confirm again if it is what you meant.")


def _digits_seen(digits: list[dict]) -> str:
    """Each digit's 28x28 input and score in one row that wraps (in columns they stacked one per row on a
    phone, six digits filling two screens)."""
    cells = []
    for d in digits:
        seen = base64.b64encode(common.zoom_png(base64.b64decode(d["processed_image"]), 84)).decode()
        mark = " ⚠" if d.get("uncertain") else ""
        cells.append(f'<figure class="dl-seen"><img src="data:image/png;base64,{seen}" width="84" height="84" '
                     f'alt="the model\'s input for {int(d["digit"])}"><figcaption><b>{int(d["digit"])}</b> · '
                     f'{d["confidence"] * 100:.0f}%{mark}</figcaption></figure>')  # fmt: skip
    return f'<div class="dl-seen-row" data-testid="dl-digits-seen">{"".join(cells)}</div>'


def _number_score(answer: dict) -> str:
    """As Draw says it: a flagged reading is "Not sure" first, its score after it as the model's (a big "94%
    sure of the whole number" in orange beside a smiley read as 63 was read as certainty)."""
    pct = f"{answer.get('confidence', 0) * 100:.0f}%"
    if answer.get("uncertain"):
        return f"<b>Not sure</b> · model's score {pct} for the whole number"
    return f"<b>{pct}</b> sure of the whole number"


def _offer_reading(answer: dict, key: str, done) -> str | None:
    """Put the reading into "What did you write?" unless the person typed their own there: a correction
    typed before one more stroke was silently replaced by the next reading. A note when it was kept."""
    box, offered_key, kept_key = f"num_truth_{key}", f"num_offered_{key}", f"num_kept_{key}"
    reading = answer.get("text") or ""
    if answer.get("digits") and all(d.get("uncertain") for d in answer["digits"]):
        reading = ""  # no digit is sure ("it may not be a number at all": a big X read "2355"): one Enter saved it
    # every reading this drawing was offered: a run cut short by the next stroke can offer one the browser
    # never showed, and the box then came back with an older one, taken for a typed correction ("Kept what
    # you typed, 00" when nothing was typed; Confirm would have saved it)
    offered: tuple = st.session_state.get(offered_key) or ()
    typed = st.session_state.get(box)
    if typed is None and f"num_typed_{key}" in st.session_state:  # the box's state went with a visit to
        typed = st.session_state[box] = st.session_state[f"num_typed_{key}"]  # another page: typed 388 became 38
    new_reading = reading not in offered
    if new_reading:
        st.session_state[offered_key] = (*offered, reading)
    if done:  # confirmed (or waiting to be sent): the box holds the answer
        if typed is None:
            st.session_state[box] = done[0]
        return None
    if typed is not None and not "".join(str(typed).split()):
        # emptied: nothing typed, so the next reading fills it (it said "Kept what you typed, ****" and the
        # box stayed empty; a newcomer's tour, session 27). Not the same reading again: Enter in the emptied
        # box would have confirmed the reading instead of asking for digits
        if new_reading:
            st.session_state[box] = reading
            st.session_state.pop(kept_key, None)
        return None
    if typed is None or "".join(str(typed).split()) in (*offered, reading):
        st.session_state[box] = reading  # untouched: it follows the reading
        st.session_state.pop(kept_key, None)
        return None
    if offered and offered[-1] != reading:
        st.session_state[kept_key] = True
    if st.session_state.get(kept_key):
        return (f":material/edit_note: Kept what you typed, **{common.esc(typed)}**; the new reading is "
                f"**{reading or '–'}**. Confirm saves what is in the box.")  # fmt: skip
    return None


def ascii_digits(typed: object) -> str:
    """What was typed, without spaces, its digits as 0-9: a full-width keyboard's "２０４８" passed the page's
    check and the API refused it with a message about a pattern (Confirm again could never work)."""
    text = "".join(str(typed or "").split())
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


#: the answer "it is no number at all" in the page's state (`num_done_<key>`, `num_unsent`): never digits
NOT_A_NUMBER = "not a number"


def _remember_typed(key: str) -> None:
    """What the person typed, kept beside the box: Streamlit drops a widget's state while another page shows."""
    st.session_state[f"num_typed_{key}"] = st.session_state.get(f"num_truth_{key}")


def _send(answer: dict, key: str, truth: str) -> str:
    """The answer to the API; its outcome kept for the page (`num_done_<key>`): "saved", "queued",
    "unsent" (the service is away: sent when it is back, `send_unsent`) or "error" (shown until the
    person confirms again)."""
    unsent: dict = st.session_state.setdefault("num_unsent", {})  # key -> (reading, truth)
    shown = st.session_state.get("number_drawing")
    mine = shown is not None and shown.drawing_id == key  # the canvas' drawing, not a photo or an older one
    try:
        none = truth == NOT_A_NUMBER
        stored = common.client().number_feedback(answer, None if none else truth, not_number=none)
    except ApiUnavailable as exc:
        st.session_state[f"num_done_{key}"] = (truth, "unsent", exc.code)  # (why it waits: `answers.waiting`)
        unsent[key] = (answer, truth)
        if mine:  # answered all the same: a further stroke is a new reading (as on Draw)
            common.close_drawing("number")
        return "unsent"
    except ApiError as exc:
        st.session_state[f"num_done_{key}"] = (truth, "error", str(exc))
        unsent.pop(key, None)
        return "error"
    unsent.pop(key, None)
    if mine:
        common.close_drawing("number")  # a further stroke is a new reading, not this confirmed one
    kind = "queued" if stored.get("queued") else "saved"
    st.session_state[f"num_done_{key}"] = (truth, kind, "")
    return kind


def send_unsent() -> None:
    """Answers confirmed while the service was away, sent once it is back (the monitor reruns the page)."""
    unsent: dict = st.session_state.get("num_unsent") or {}
    if not unsent or not st.session_state.get("api_ok"):
        return
    for key, (answer, truth) in list(unsent.items()):
        if _send(answer, key, truth) in ("saved", "queued"):
            st.toast(f"Your earlier answer is saved: {_what(truth)}.", icon=":material/check_circle:",
                     duration="long")  # fmt: skip


def _what(truth: str) -> str:
    return "it is **not a number**" if truth == NOT_A_NUMBER else f"you wrote **{truth}**"


def _outcome(truth: str, kind: str, message: str, answer: dict) -> tuple[str, str]:
    """(kind of notice, its text) for an answer's outcome."""
    right = truth == answer.get("text")
    verdict = "The reading was right." if right else f"It was read as {answer.get('text')}."
    if truth == NOT_A_NUMBER:
        return answers.notice(kind, _what(truth), "", message, again="Click Not a number again to send it again.")
    return answers.notice(kind, _what(truth), verdict, message, again="Confirm again to send it again.")


def _keep_click(key: str) -> tuple[str, str] | None:
    """A Confirm or Not a number clicked while the reading of a further stroke was on its way, which did not come
    (the service away): kept, with what was typed, for when the reading comes (`feedback`). Its form was not
    drawn in that run, so the click was lost without a word and the reading stored unanswered."""
    if st.session_state.get(f"num_none_{key}"):
        st.session_state[f"num_clicked_{key}"] = (NOT_A_NUMBER, NOT_A_NUMBER)
    elif st.session_state.get(f"num_confirm_{key}"):
        typed = st.session_state.get(f"num_truth_{key}", st.session_state.get(f"num_typed_{key}"))
        st.session_state[f"num_clicked_{key}"] = ("confirm", ascii_digits(typed or ""))
    return st.session_state.get(f"num_clicked_{key}")


def feedback(answer: dict, key: str) -> None:
    number_id = answer.get("id")
    if not answer.get("logged"):
        st.caption(":material/cloud_off: This reading could not be saved, so it cannot be confirmed.")
        return
    done = st.session_state.get(f"num_done_{key}")  # (truth, kind, message) once confirmed: shown again when back
    note = _offer_reading(answer, key, done)
    # no form: what is typed reaches the page when the box loses focus, so the next reading can keep it;
    # Enter in the box clicks Confirm (`keys`: a lone text box's Enter only hands its text over)
    with st.container(horizontal=True, vertical_alignment="bottom", gap="small", key=f"num_form_{key}"):
        st.text_input("What did you write? (digits only)", max_chars=32, key=f"num_truth_{key}",
                      on_change=_remember_typed, args=(key,),
                      help="Digits only; Enter or Confirm saves your answer with the reading.")  # fmt: skip
        sent = st.button("Confirm", icon=":material/check:", key=f"num_confirm_{key}")
        # (Draw has "Not a digit": here a smiley read as "467" could only be confirmed as 467 or left unsaid)
        nothing = st.button("Not a number", icon=":material/block:", key=f"num_none_{key}",
                            help="It is no number at all (a word, a drawing, a scribble)")  # fmt: skip
    clicked = st.session_state.pop(f"num_clicked_{key}", None)  # (`_keep_click`)
    kept = clicked is not None and not (sent or nothing)  # (a click now says what is meant now)
    if kept:
        sent, nothing = clicked[0] == "confirm", clicked[0] == NOT_A_NUMBER
    if note:
        st.caption(note)
    if sent or nothing:
        typed = clicked[1] if kept else st.session_state.get(f"num_truth_{key}")
        truth = NOT_A_NUMBER if nothing else ascii_digits(typed)
        if not nothing and not (truth.isascii() and truth.isdigit()):  # (the answer given before stays shown:
            st.warning("Type the number with digits only, e.g. 2024.", icon=":material/warning:")  # it was hidden)
        else:
            if not (done and done[0] == truth and done[1] in ("saved", "queued")):  # (Enter, then a click: once)
                _send(answer, key, truth)
            done = st.session_state.get(f"num_done_{key}")
            kind, text = _outcome(*done, answer)
            # the line below the form is under the fold at 1280x800: the outcome shows where the click was too
            st.toast(text, icon=answers.icon(kind))
    if done:
        kind, text = _outcome(*done, answer)
        getattr(st, kind)(text, icon=answers.icon(kind))
    elif st.session_state.get("number_follows_answer") == key:  # (as Draw says it: the box quietly followed)
        st.caption(FOLLOWS_CONFIRMED)
    elif number_id is not None:
        st.caption(f":material/database: Saved to the history as number #{number_id}.")
    else:
        st.caption(":material/schedule: The database is unavailable: this reading is queued and saved when it is "
                   "back.")  # fmt: skip


@st.fragment
def number_area() -> None:
    send_unsent()
    with st.container(key="number_hint"):  # narrow screens only (common.CSS): the page's caption says the rest
        st.caption("On a phone, turn it sideways, or swipe the strip under the canvas to reach all of it.")
    drawing = drawing_canvas("number", hint=None, width=CANVAS_WIDTH, height=CANVAS_HEIGHT)
    result = st.container()  # the reading right under the canvas; the upload folded away below it
    uploads.forget_photo_drawn_over("number_photo", drawing)
    photo = uploads.photo_picker("…or upload a photo or scan of a written number",
                                "A photo or scan of a written number", "number_photo", "is read")  # fmt: skip
    with result:
        _reading(drawing, photo)


def _reading(drawing, photo) -> None:
    """The reading of the photo (when there is one) or of the canvas, with its boxes and the answer form."""
    if photo is not None:
        image, fields = uploads.upload_request(photo)
        answer, error = read(image, ("photo", photo.file_id), fields.pop("filename"), **fields)
        key = f"photo_{photo.file_id}"
    elif drawing.empty:
        st.markdown(
            '<div class="dl-placeholder" data-testid="dl-empty">Write a number on the canvas.<br>'
            "It is read every time you lift the pen.</div>",
            unsafe_allow_html=True,
        )
        return
    else:
        image, did = drawing.png, drawing.drawing_id  # the canvas' id: one record per drawing
        with st.spinner("Reading your writing…"):  # (shown after 0.5 s: a locked database holds the first 5 s)
            answer, error = read(image, drawing.digest, "number.png", drawing_id=did, patience=LIVE_PATIENCE,
                                 pen_color=drawing.pen_color, background_color=drawing.background_color)  # fmt: skip
        key = did
    if error is not None:
        nothing = ("No number found in this photo: take it closer, the digits large." if photo is not None
                   else ink.nothing_drawn(drawing, "Nothing to read yet: write larger digits."))  # fmt: skip
        clicked = _keep_click(key)
        common.show_error(st, error, nothing=nothing,
                          kept="Your writing is kept; it is read as soon as the service is back"
                          + (f", and your answer ({_what(clicked[1])}) is saved with it." if clicked else "."))  # fmt: skip
        earlier = common.last_answer("number_cache", key) if isinstance(error, ApiUnavailable) else None
        if earlier is not None:
            show_earlier(earlier)
        return
    show_reading(answer, image, key, photo=photo is not None)


common.page_header("Write a number", "Write several digits — a year, a PIN, a house number — and watch them being read "
                   "digit by digit. Then say what you wrote.")  # fmt: skip
number_area()
