"""Compare: one drawing, every ready model side by side, and whether they agree."""

from __future__ import annotations

import base64

import streamlit as st

from digitlab.ui import answers, charts, common, ink, keys, uploads
from digitlab.ui.canvas import FOLLOWS_ANSWER, Drawing, adopt, drawing_canvas, drawing_on
from digitlab.ui.client import LIVE_PATIENCE, ApiError, ApiUnavailable, Comparison

CACHE_SIZE = 32


def compare(drawing: Drawing) -> tuple[Comparison | None, ApiError | None]:
    return common.cached_api_call(
        "compare_cache", drawing.digest,
        lambda: common.client().predict_all(
            drawing.png, pen_color=drawing.pen_color, background_color=drawing.background_color,
            session_id=common.session_id(), drawing_id=drawing.drawing_id, patience=LIVE_PATIENCE,
        ),
        size=CACHE_SIZE, record=drawing.drawing_id,
    )  # fmt: skip


def compare_photo(photo) -> tuple[Comparison | None, ApiError | None]:
    """An uploaded photo or scan, read by every model once per file; stored as source "upload" (Compare could
    only be used with a pointer: its one input was the canvas)."""
    def call():
        data, fields = uploads.upload_request(photo)
        return common.client().predict_all(data, session_id=common.session_id(), patience=LIVE_PATIENCE, **fields)

    return common.cached_api_call("compare_cache", ("photo", photo.file_id), call, size=CACHE_SIZE)


def mean_probabilities(result: Comparison) -> list[float]:
    n = len(result.predictions)
    return [sum(p.probabilities[d] for p in result.predictions) / n for d in range(10)]


def verdict(result: Comparison, models: list[dict], answer: int | str | None = None) -> None:
    """Whether the models agree, and, like the Draw page, when they are not sure (any model flags its
    answer as uncertain: an unclear digit, or no digit at all). `answer`: what the person said they drew;
    a green "agree" stayed beside "All 5 models were wrong" (a tour, session 44)."""
    n = len(result.predictions)
    if not n:
        st.warning("No model is ready yet.", icon=":material/hourglass_top:")
        return
    unsure = [p.model for p in result.predictions if p.uncertain]
    weak = min(p.confidence for p in result.predictions) < 0.5  # agreeing at 29 % is no verdict
    digit = result.predictions[0].digit
    if result.agree and answer is not None and answer != "Not a digit" and int(answer) != digit:
        who = "The only ready model" if n == 1 else f"All {n} models"
        st.warning(f"{who} said **{digit}**, but you drew {common.a_digit(int(answer), bold=True)}.",
                   icon=":material/close:")  # fmt: skip
    elif result.agree:
        said = f"{digit}" if not unsure else f"{digit}, but not sure"
        if n == 1:
            text = f"The only ready model says **{said}**."
        elif unsure:  # "agree: it is an 8" above "every model is unsure" would contradict itself
            trust = "none of them trusts it" if len(unsure) == n else "not all of them trust it"
            text = f"All {n} models say **{digit}**, but {trust}."
        elif weak:
            text = f"All {n} models say **{digit}**, but some of them only weakly."
        else:
            text = f"All {n} models agree: it is {common.a_digit(digit, bold=True)}."
        (st.info if unsure or weak else st.success)(text, icon=":material/handshake:")
    else:
        st.warning(common.disagreement(result.votes, models), icon=":material/call_split:")
    if unsure:
        verb = "is" if len(unsure) == 1 else "are"
        who = "every model is" if len(unsure) == n else f"{common.names_text(models, unsure)} {verb}"
        mean = mean_probabilities(result)
        advice = ("if it is one of them, say which below; if not, it may not be a digit at all." if
                  common.runner_up_named(mean) else "it may not be a digit at all. Draw one digit, large.")
        named = common.named_digits(mean)
        if all(p.digit in named for p in result.predictions if p.uncertain):
            st.info(f"{common.not_sure_sentence(mean)} Here {who} unsure: {advice}", icon=":material/help:")
        else:  # the question is all the models' probabilities together: "Not sure — is it a 3? Here Extra Trees is
            # unsure" was said of Extra Trees' 5 (a tour), so each unsure model is named with its own answer
            st.info(f"Not sure — {unsure_of_their_own(result, models)}; all models together lean to "
                    f"{' or '.join(common.a_digit(d) for d in named)}: {advice}", icon=":material/help:")  # fmt: skip


def unsure_of_their_own(result: Comparison, models: list[dict]) -> str:
    """"SVM is unsure of its 5", "CNN is unsure of its 3 and SVM of its 5", "every model is unsure of its answer"
    (the cards show each one's)."""
    unsure = [p for p in result.predictions if p.uncertain]
    if len(unsure) == len(result.predictions) > 1:
        return "every model is unsure of its answer"
    said = [f"{common.display_name(models, p.model)} {'is unsure ' if not i else ''}of its {p.digit}"
            for i, p in enumerate(unsure)]  # fmt: skip
    return said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]


def _mark(digit: int, answer: int | str | None) -> str:
    """Right or wrong by the person's answer, beside a card's digit: after "I drew a 3" the cards still showed
    their 5s unmarked, as if nothing had been said (a tour; the line above said it, the cards did not)."""
    if answer is None or answer == "Not a digit":
        return ""
    if int(answer) == digit:
        return '<span class="dl-card-mark dl-right" title="right" aria-label="right">✓</span>'
    return '<span class="dl-card-mark dl-wrong" title="wrong" aria-label="wrong">✗</span>'


def cards(result: Comparison, models: list[dict], digest: str, answer: int | str | None = None) -> None:
    majority = next(iter(result.votes)) if result.predictions else None
    with st.grid("auto", min_column_width=135, gap="small", key="cmp_cards"):
        for p in result.predictions:
            odd = " dl-odd" if p.digit != majority or p.uncertain else ""
            score = common.score_html(p.confidence, p.uncertain)
            latency = f"{p.latency_ms:.0f}&nbsp;ms" if p.latency_ms is not None else "—"
            with st.container(border=True, key=f"cmp_card_{p.model}"):
                st.markdown(
                    f"""<div data-testid="dl-compare-card" data-drawing="{digest[:16]}" data-model="{
                        p.model
                    }" data-digit="{p.digit}"><div class="dl-small dl-card-name">{common.esc(common.display_name(models, p.model))}</div>
                    <div class="dl-card-digit{odd}">{p.digit}{_mark(p.digit, answer)}</div>
                    <div class="dl-small">{score} · {latency}</div></div>""",
                    unsafe_allow_html=True,
                )


def flag_note(result: Comparison, models: list[dict]) -> str | None:
    """Why a card at a lower score is not "Not sure" while one at a higher score is (a tour: Random Forest at
    "41% score" unflagged beside Extra Trees "Not sure" at 42%). By design: the flag weighs the model's score
    with a second opinion's probability of that model's answer, against the model's own threshold
    (docs/uncertainty.md); the two trees ask the same second opinion, so they had named different digits."""
    shown = {p.model: round(p.confidence * 100) for p in result.predictions}
    sure = sorted((p for p in result.predictions if not p.uncertain), key=lambda p: shown[p.model])
    if not sure:
        return None
    low = sure[0]
    above = sorted((p for p in result.predictions if p.uncertain and shown[p.model] >= shown[low.model]),
                   key=lambda p: shown[p.model])  # fmt: skip
    if not above:
        return None
    high = above[0]
    return (f"Why is {common.display_name(models, high.model)} at {shown[high.model]}% \"Not sure\" and "
            f"{common.display_name(models, low.model)} at {shown[low.model]}% not? \"Not sure\" is each model's own "
            "call, not its score alone: a second opinion checks how likely the model's answer is, and each model has "
            "its own threshold. An answer the second opinion finds likely passes with a low score; one it doubts is "
            "flagged even with a higher score.")  # fmt: skip


@st.fragment
def compare_area() -> None:
    send_unsent()
    models, _ = common.model_catalog()
    with st.container(key="compare_layout"):  # a phone: canvas, tools, the answers, then the rest (common.CSS)
        left, right = st.columns([1, 1.6], gap="large")
    with left:
        drawing = drawing_canvas("compare", hint="Draw one digit, 0–9")
        # under the tools, small, the caption beside it: under the uploader it was cut by a 1366x768 window's
        # bottom edge (a tour); on a phone after the answers, the chart and the rest (style.html)
        seen = st.container(key="compare_seen").empty()
        with st.container(key="compare_extras"):  # (on a phone after the answers: they pushed them below the fold)
            note = common.not_ready_note(models)
            if note:
                st.caption(f":material/hourglass_top: {note}")
            uploads.forget_photo_drawn_over("compare_photo", drawing)
            photo = uploads.digit_photo_picker("compare_photo", "every model reads")
    with right:
        slot = st.empty()  # the whole result goes into this one element, written once it is all built
        if photo is not None:
            with st.spinner("Reading your photo…"):
                result, error = compare_photo(photo)
            digest, follows, nothing = uploads.photo_drawing_id(photo), False, uploads.NOTHING_IN_PHOTO
            st.session_state.setdefault("cmp_photo_digests", set()).add(digest)  # (a waiting answer says "the photo")
        elif drawing.empty:
            with slot.container():
                st.markdown(
                    '<div class="dl-placeholder" data-testid="dl-empty">Draw a digit on the canvas to see every '
                    "model's answer side by side.</div>",
                    unsafe_allow_html=True,
                )
                if drawing_on("draw"):  # the digit just drawn on Draw, one click away
                    st.button("Compare the digit from Draw", icon=":material/draw:", key="cmp_from_draw",
                              on_click=adopt, args=("compare", "draw"))  # fmt: skip
                show_waiting_answers()  # (cleared during an outage: the answer still waits, and is sent)
            return
        else:
            result, error = compare(drawing)
            digest, nothing = drawing.digest, ink.nothing_drawn(drawing)
            follows = drawing.drawing_id is not None and st.session_state.get("compare_follows_answer") == drawing.drawing_id
        if error is not None:  # (the outage banner says which service and where)
            with slot.container():
                common.show_error(st, error, nothing=nothing, kept=f"Your {'photo' if photo else 'drawing'} is kept.")
                if isinstance(error, ApiUnavailable):
                    show_waiting_answers()
            return
        rows = [
            {"model": common.display_name(models, p.model), "digit": str(d), "probability": float(q)}
            for p in result.predictions
            for d, q in enumerate(p.probabilities)
        ]
        chart = charts.compare(rows) if rows else None
        with slot.container(key="cmp_result"):
            answer = given_answer(result, digest)
            verdict(result, models, answer)
            # the question right under the verdict, before the cards: under them the "Saved" line was below the
            # fold at 1366x768, and on a phone the question was ~1 screen below the canvas (a newcomer's tour);
            # under the chart it began at the window's bottom edge at 1280x800 (a tour, session 27)
            answer_for_all(result, digest, follows_answer=follows)
            cards(result, models, digest, answer)
            why = flag_note(result, models)
            if why:
                st.caption(f":material/help: {why}")
            if chart is not None:
                with st.container(key="cmp_chart"):
                    st.altair_chart(chart, width="stretch")
    if result.processed_png:
        png = base64.b64encode(common.zoom_png(result.processed_png, 56)).decode("ascii")
        seen.markdown(f'<figure class="dl-seen-inline" data-testid="dl-compare-seen"><img src="data:image/png;base64,'
                      f'{png}" width="56" height="56" alt="the 28×28 image every model read">'
                      "<figcaption>What every model saw</figcaption></figure>", unsafe_allow_html=True)  # fmt: skip


ANSWERS = [*range(10), "Not a digit"]


def _send_answer(key: str, result: Comparison, digest: str) -> None:
    """The chosen answer to every model's record of this drawing (each model's answer is stored). While
    the service is away it waits in the session and is sent once it is back (`send_unsent`), as on Draw;
    the chosen answer clicked again sends it again when it is not stored yet (it only stayed put: an
    answer refused once could not be sent again)."""
    answer = st.session_state.get(key)
    given = st.session_state.get(f"{key}_result")
    if answer is None:  # the chosen answer clicked again: it stays the answer
        if not given:
            return
        answer = st.session_state[key] = given[1]
        if given[0] in ("saved", "queued"):
            return
    unsent: dict = st.session_state.setdefault("cmp_unsent", {})  # key -> (result, digest, answer)
    shown = st.session_state.get("compare_drawing")
    try:
        outcomes, deleted = [], 0
        for p in result.predictions:
            try:
                if answer == "Not a digit":
                    outcomes.append(common.client().feedback(p, None, not_digit=True))
                else:
                    outcomes.append(common.client().feedback(p, int(answer)))
            except ApiError as exc:  # one record deleted in History: the others still get the answer (none did)
                if isinstance(exc, ApiUnavailable) or exc.code != "prediction_not_found":
                    raise
                deleted += 1
    except ApiUnavailable as exc:
        st.session_state[f"{key}_result"] = ("unsent", answer, exc.code)  # (why it waits: `answers.waiting`)
        unsent[key] = (result, digest, answer)
        if shown is not None and shown.digest == digest:  # answered all the same: a further stroke is a
            common.close_drawing("compare")  # new drawing (as on Draw)
        return
    except ApiError as exc:
        st.session_state[f"{key}_result"] = ("error", answer, str(exc))
        unsent.pop(key, None)
        return
    unsent.pop(key, None)
    missed = [o.message for o in outcomes if not o.saved and not o.queued]
    if missed:  # (a record the API did not keep: nothing to label)
        st.session_state[f"{key}_result"] = ("error", answer, missed[0])
        return
    if not outcomes:
        gone_all = "this drawing's records were deleted (on the History page), so there is nothing left to label"
        st.session_state[f"{key}_result"] = ("error", answer, gone_all)
        return
    gone = f"{deleted} of the {len(result.predictions)} models' records of it had been deleted." if deleted else ""
    st.session_state[f"{key}_result"] = ("queued" if any(o.queued for o in outcomes) else "saved", answer, gone)
    if shown is not None and shown.digest == digest:  # (not a drawing no longer on the canvas)
        common.close_drawing("compare")


def show_waiting_answers() -> None:
    """The answers waiting for the service (`cmp_unsent`), said under its notice when the picture cannot be read:
    a stroke after answering during an outage took "Not saved yet: you drew a 5 …" off the page with the cards,
    leaving only "not answering" (a tour, session 49; Draw's since session 47)."""
    photos = st.session_state.get("cmp_photo_digests") or set()
    for key, (_result, digest, answer) in (st.session_state.get("cmp_unsent") or {}).items():
        what = "not a digit" if answer == "Not a digit" else f"you drew {common.a_digit(answer, bold=True)}"
        which = "the photo you answered" if digest in photos else "the drawing as it was when you answered"
        why = (st.session_state.get(f"{key}_result") or ("", "", ""))[2]  # (the code it was kept by)
        answers.show("unsent", f"{what} ({which})", message=why)


def send_unsent() -> None:
    """Answers given while the service was away, sent once it is back (the monitor reruns the page then),
    with a toast: the answer panel may be out of sight, or gone with its drawing."""
    unsent: dict = st.session_state.get("cmp_unsent") or {}
    if not unsent or not st.session_state.get("api_ok"):
        return
    for key, (result, digest, answer) in list(unsent.items()):
        if st.session_state.get(key) is None:
            st.session_state[key] = answer  # (the pill's own state is gone when it is not on the page)
        _send_answer(key, result, digest)
        outcome = st.session_state.get(f"{key}_result")
        if outcome and outcome[0] in ("saved", "queued"):
            what = "not a digit" if answer == "Not a digit" else common.a_digit(answer)
            st.toast(f"Your earlier answer is saved: every model's record of the drawing is stored as {what}.",
                     icon=":material/check_circle:", duration="long")  # fmt: skip


def _verdict(result: Comparison, answer) -> str:
    """How the models did against the answer (the agreement sentence above it said nothing of that)."""
    if answer == "Not a digit":
        return "It is kept out of the digit accuracy."
    right = sum(p.digit == int(answer) for p in result.predictions)
    n = len(result.predictions)
    if right == n:
        return "Every model was right." if n > 1 else "The model was right."
    if right == 0:
        return f"All {n} models were wrong." if n > 1 else "The model was wrong."
    return f"{right} of {n} models {'was' if right == 1 else 'were'} right."


def answer_key(result: Comparison, digest: str) -> str:
    """The answer's session key: the drawing's and its records' (the same picture drawn again after Clear, or
    taken from Draw again, is a new drawing: it showed the earlier one's answer as saved, a new answer ignored
    (a tour, session 31))."""
    record = next((str(p.uid or p.id) for p in result.predictions if p.uid or p.id is not None), "")
    return f"cmp_fb_{digest[:12]}_{record[:12]}"


def given_answer(result: Comparison, digest: str) -> int | str | None:
    """What the person said this drawing is, once they answered (saved or not yet)."""
    outcome = st.session_state.get(f"{answer_key(result, digest)}_result")
    return outcome[1] if outcome else None


def answer_for_all(result: Comparison, digest: str, *, follows_answer: bool = False) -> None:
    """"What did you draw?" for the drawing: every model's stored answer gets it (they were stored with
    no way to label them). `follows_answer`: the picture changed after an answer, so it is a new drawing:
    said until it is answered, as on Draw (a stroke after answering started a new drawing unsaid)."""
    if not result.predictions:
        return
    key = answer_key(result, digest)
    st.pills("What did you draw?", ANSWERS, key=key, on_change=_send_answer, args=(key, result, digest),
             persist_state="session",  # (after a visit to another page no answer was highlighted; Draw keeps it)
             help="One click saves the true digit with every model's answer, for the History page's accuracy "
             f"and for learning. {keys.PICK_HELP}")  # fmt: skip
    outcome = st.session_state.get(f"{key}_result")
    with st.container(key="cmp_outcome"):  # as tall before the answer as after it: the "Saved" box pushed the cards
        if not outcome:  # down 75 px as it appeared (a tour; style.html)
            if follows_answer:
                st.caption(FOLLOWS_ANSWER)
            else:  # (not on a phone, where the first card's place on the first screen comes first: style.html)
                st.container(key="cmp_hint").caption(
                    "One click saves it with every model's answer, for the History page and for learning.")
            return
        _outcome(result, outcome)


def _outcome(result: Comparison, outcome: tuple) -> None:
    kind, answer = outcome[:2]
    what = "not a digit" if answer == "Not a digit" else f"you drew {common.a_digit(answer, bold=True)}"
    deleted = outcome[2] if kind in ("saved", "queued") and len(outcome) > 2 else ""  # some records were gone
    verdict = f"{_verdict(result, answer)} {deleted}".strip()
    answers.show(kind, what, verdict, outcome[2] if kind in ("error", "unsent") else "",
                 again="Click your answer again to send it again.",
                 saved="Saved with the other models' answers" if deleted else "Saved with every model's answer")


common.page_header(
    "Compare models", "One drawing, every ready model: their answers, how sure they are, how fast."
)
compare_area()
