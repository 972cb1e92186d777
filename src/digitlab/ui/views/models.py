"""Models: one card per model — what it is, how good, how fast, how big, when trained, and its status."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from digitlab.data import SPLIT_SIZES
from digitlab.ui import charts, common
from digitlab.ui.client import ApiError, ApiUnavailable


def _offline_catalogue() -> list[dict[str, Any]]:
    """Names and descriptions come with the package, so the page still says what each model is (not its version
    or state: the package's "version 1.0.0" and "status unknown" were shown for models that may not exist)."""
    from digitlab.models.registry import MODEL_SPECS

    return [
        {"name": s.name, "display_name": s.display_name, "description": s.description, "status": "offline"}
        for s in MODEL_SPECS.values()
    ]  # fmt: skip


#: why a card has no answer time, when the log could not be read without the admin token
NO_TOKEN_FOR_TIMES = ("The answer times come from the stored predictions, which the prediction service shows only to "
                      "its administrator.")  # (how: `OPERATOR`, at the page's end)  # fmt: skip
#: what only whoever runs the app can do, said at the page's end (`common.for_the_operator`): the cards and captions
#: named commands and settings to every visitor (a newcomer's tour, session 47). Filled by this run of the page.
OPERATOR: list[str] = []
LEARN_HOW = ("`digitlab learn` (where the API runs) learns from the labelled drawings; with the same "
             "DIGITLAB_ADMIN_TOKEN for the UI and the API a “Learn now” button shows on this page.")  # fmt: skip
#: ... and when it could, but this model answered none of the recent drawings
NO_RECENT_ANSWER = "No recent drawing was answered by this model."


#: fewer answers than this give no typical time: the card said "Median answer time 3 ms" from a single drawing
FEW_TIMES = 5


def few_times(count: int) -> str:
    """Said under the "—" of a model with fewer than `FEW_TIMES` answers to time."""
    drawings = "1 recent drawing" if count == 1 else f"{count} recent drawings"
    return f"Only {drawings} went to this model: too few for a typical answer time."


def _latencies() -> tuple[dict[str, tuple[float, int]], str]:
    """Median answer time per model and how many answers it comes from (from /stats when the API reports it, else
    from the recent log), and what a card without one should say (it showed "—" without a word when the UI had no
    admin token)."""
    try:
        stats = common.client().stats()
    except ApiError:
        return {}, ""
    per_model = stats.get("models", stats) if isinstance(stats.get("models"), dict) else stats
    out = {}
    for name, s in per_model.items():
        if isinstance(s, dict):
            value = s.get("median_latency_ms") or s.get("latency_ms") or s.get("mean_latency_ms")
            if value is not None:  # the count the API gives with it, else its predictions
                count = s.get("latency_count") or s.get("latency_samples") or s.get("predictions")
                out[name] = (float(value), int(count) if count is not None else FEW_TIMES)
    if out:
        return out, NO_RECENT_ANSWER
    try:
        items = common.client().predictions(page=1, page_size=500).get("items") or []
    except ApiError as exc:
        return {}, NO_TOKEN_FOR_TIMES if exc.code == "unauthorized" else ""
    by_model: dict[str, list[float]] = {}
    for item in items:  # drawings only: a photo costs 250-700 ms to read, and made the CNN look 20x slower (a tour)
        if item.model_name and item.latency_ms is not None and item.source != "upload":
            by_model.setdefault(item.model_name, []).append(item.latency_ms)
    return {k: (sorted(v)[len(v) // 2], len(v)) for k, v in by_model.items()}, NO_RECENT_ANSWER


@st.cache_data(ttl=30, show_spinner=False)
def latencies(api_url: str) -> tuple[dict[str, tuple[float, int]], str]:
    return _latencies()


@st.cache_data(ttl=15, show_spinner=False)
def versions(api_url: str, name: str) -> list[dict[str, Any]]:
    try:
        return common.client().model_versions(name)
    except ApiError:
        return []


def version_history(name: str) -> None:
    """The learned versions of one model: when, from how many drawings, users' accuracy before and after."""
    rows = versions(common.api_url(), name)
    if not rows:
        return
    with st.expander(f"Learned from users: {len(rows)} version(s)", icon=":material/school:"):
        # a line per version, its reason under it, wrapping to any width: a table (version, status, built,
        # drawings, other users, MNIST) showed a phone only its first three columns, the figures that say why a
        # version was or was not promoted out of sight behind a sideways swipe inside the card (a tour, session
        # 50); before that, the reason in a column pushed them out of a desktop's half-page card (session 27)
        lines = []
        for v in rows:
            metrics, drawings = v.get("metrics") or {}, (v.get("data") or {}).get("train")
            line = (f"**Version {v['version']}** · {v['status']} · {common.when_text(v['created_at'])}"
                    + (f" · from {drawings:,} drawing{'' if drawings == 1 else 's'}" if drawings is not None else "")
                    + f" · other users {common.pct(metrics.get('parent_user_holdout_accuracy'))} → "
                    f"{common.pct(metrics.get('user_holdout_accuracy'))}"
                    f" · MNIST {common.pct(metrics.get('mnist_test_accuracy'), 2)}")  # fmt: skip
            if v.get("reason"):
                line += f"  \n{str(v['status']).capitalize()}: {v['reason']}"
            lines.append(f"- {line}")
        st.markdown("\n".join(lines))
        st.caption("From N drawings: the users' drawings it learned from; other users: its accuracy on drawings of "
                   "people it did not learn from, before → after; MNIST: its accuracy on the MNIST test set. "
                   "Promoted only when it reads other people's drawings at least as well and keeps its MNIST "
                   "accuracy.")  # fmt: skip
        # (it said `digitlab models rollback`, which stops at "the following arguments are required: name")
        OPERATOR.append("`digitlab models rollback NAME` brings a model's previous version back (docs/learning.md).")


@st.fragment(run_every=2)
def learning_progress(job_id: str) -> None:
    try:
        job = common.client().learn_job(job_id)
    except ApiError as exc:
        st.warning(f"Cannot follow the learning run: {exc}")
        return
    if job["status"] in ("queued", "running"):
        st.progress(float(job.get("progress") or 0), text=job.get("message") or "Starting…")
        return
    # it has ended: the charts, cards and versions around were drawn before it did, so the whole page is drawn again
    # with its outcome, no longer polled ("Learning finished: promoted: cnn" over a CNN card still on the version
    # before, its MNIST figure and its "Learned from users" too, until the page was opened again: a tour, session 50)
    st.session_state["learn_ended"] = job
    st.session_state.pop("learn_job", None)
    versions.clear()
    st.rerun(scope="app")


def learning_outcome(job: dict[str, Any]) -> None:
    """What became of a learning run that has ended."""
    if job["status"] == "done" and not any(  # refused (too little data), or every model had learned it all
        m.get("status") in ("promoted", "rejected") for m in (job.get("result") or {}).get("models") or ()
    ):
        st.info(f"Nothing learned: {job.get('message')}", icon=":material/school:")
    elif job["status"] == "done":
        st.success(f"Learning finished: {job.get('message')}", icon=":material/school:")
    else:
        st.error(f"Learning stopped: {job.get('message')}", icon=":material/error:")
    notes = (job.get("result") or {}).get("notes") or []
    if notes:  # what the run said of the data: a session that labels 7s as 1s, drawings left out (they reached nobody)
        # (a session id is the client's text: no markup of its own)
        st.warning("  \n".join(re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", str(n)) for n in notes), icon=":material/flag:")


MNIST_TRAIN = SPLIT_SIZES["train"]  #: MNIST's training images: a model that learned from fewer is a quick one


def learn_now() -> None:
    """Admin only (the UI runs with DIGITLAB_ADMIN_TOKEN): start a learning run and follow it. "Learn now"
    asks first, in place; once started, the question goes away and the run's progress and outcome show
    where it was (a popover stayed open over the outcome, inviting a second click)."""
    from digitlab.core.config import get_settings

    if not get_settings().admin_token:  # (the button was simply not there, with no word why)
        st.caption("Learning from the drawings people labelled is started by whoever runs this app.")
        OPERATOR.append(LEARN_HOW)
        return
    if not st.session_state.get("learn_asking"):
        if st.button("Learn now", icon=":material/school:", key="learn_open",
                     help="Build new versions of every model from the labelled drawings (a few minutes)."):  # fmt: skip
            st.session_state["learn_asking"] = True
            st.rerun()
    else:
        with st.container(border=True, key="learn_question"):
            st.markdown("Build a new version of every model from the drawings people labelled? It takes a few "
                        "minutes of the server's CPU; a new version is served only if it is not worse than the "
                        "current one on drawings it did not learn from.")  # fmt: skip
            with st.container(horizontal=True):
                start = st.button("Start learning", icon=":material/play_arrow:", key="learn_now", type="primary")
                cancel = st.button("Cancel", key="learn_cancel")
        if start or cancel:
            st.session_state["learn_asking"] = False
            if start:
                try:
                    st.session_state.pop("learn_ended", None)  # (the run before's outcome)
                    st.session_state.pop("learn_joined", None)
                    st.session_state["learn_job"] = common.client().start_learning()["job_id"]
                except ApiError as exc:
                    running = re.search(r"/api/v1/learn/([0-9a-f]{32})", str(exc)) if exc.code == "learning_busy" else None
                    if running:  # (another browser's or the CLI's run: it said "follow it at /api/v1/learn/…")
                        st.session_state["learn_job"], st.session_state["learn_joined"] = running[1], True
                    else:
                        st.session_state["learn_refused"] = str(exc)
            st.rerun()
    refused = st.session_state.pop("learn_refused", None)
    if refused:
        st.warning(refused, icon=":material/warning:")
    if st.session_state.get("learn_joined"):  # (kept with the outcome: the page is drawn again when the run ends)
        st.info("A learning run started elsewhere is going on already: here is its progress."
                if st.session_state.get("learn_job") else "A learning run started elsewhere was going on: here is "
                "its outcome.", icon=":material/school:")  # fmt: skip
    if st.session_state.get("learn_job"):
        learning_progress(st.session_state["learn_job"])
    elif st.session_state.get("learn_ended"):
        learning_outcome(st.session_state["learn_ended"])


#: the charts at the top: (manifest metric, title, what the mistakes are counted per 1,000 of)
CHARTS = (
    ("mnist_test_accuracy", "MNIST test set", "test digits"),
    (common.REAL_HELDOUT, "Real handwriting of other writers", "real digits"),
)
REAL_HELP = ("On 2,804 digits written by people of the USPS and Semeion sets whom no model learned from, each as "
             "an upload and drawn on the canvas four ways: closer to what you draw than MNIST test.")  # fmt: skip
NO_REAL_HELP = "Not measured: a quick model, or one trained without the real handwriting sets."
REAL_HOW = ("`digitlab evaluate --real` measures a model on real handwriting (the sets in DIGITLAB_HANDWRITING_DIR); "
            "`digitlab train` trains with them.")  # fmt: skip


def mistakes_charts(models: list[dict[str, Any]]) -> None:
    """MNIST test beside real handwriting by writers no model learned from: MNIST says 99.6 % where people's
    own drawings get 95-98 %, and a user judges a model by what they draw (the page said MNIST only)."""
    shown = []
    for metric, title, unit in CHARTS:
        rows = [{"model": m.get("display_name") or m.get("name"), "accuracy": common.accuracy_of(m, metric)}
                for m in models if common.accuracy_of(m, metric) is not None]  # fmt: skip
        if rows:
            shown.append((rows, title, unit))
    places = st.columns(len(shown), gap="medium") if len(shown) > 1 else [st.container() for _ in shown]
    for place, (rows, title, unit) in zip(places, shown, strict=True):
        with place:
            st.altair_chart(charts.mistakes(rows, title=title, unit=unit), width="stretch",
                            alt=f"Mistakes per 1,000 {unit}: " + ", ".join(
                                f"{r['model']} {(1 - r['accuracy']) * 1000:.0f}" for r in rows))  # fmt: skip


def card(model: dict[str, Any], latency: tuple[float, int] | None, live_status: str | None,
         no_latency: str = "") -> None:  # fmt: skip
    """`latency`: the median answer time and how many answers it comes from (`_latencies`); `no_latency`: why there
    is none, said under the "—"."""
    if latency is not None and latency[1] < FEW_TIMES:
        latency, no_latency = None, few_times(latency[1])
    status = live_status or model.get("status") or "unknown"
    shown = common.esc(model.get("display_name") or model.get("name"))  # (the heading and the operator's notes)
    train = f"`digitlab train {model.get('name')}`"
    label, colour, icon = common.STATUS_BADGE.get(status, ("status unknown", "gray", ":material/help:"))
    metrics = model.get("metrics") or {}
    with st.container(border=True, key=f"model_card_{model.get('name')}"):
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            st.markdown(f"#### {shown}")
            st.badge(label, color=colour, icon=icon)
            if model.get("default"):
                st.badge("default", color="violet", icon=":material/star:")
        st.markdown(common.esc(model.get("description") or ""))
        with st.container(horizontal=True, gap="small"):
            st.metric("MNIST test accuracy", common.pct(metrics.get("mnist_test_accuracy"), 2),
                      help="On the official 10,000 MNIST test digits, never seen in training.")  # fmt: skip
            real = common.accuracy_of(model, common.REAL_HELDOUT)
            st.metric("Real handwriting", common.pct(real, 1), help=REAL_HELP if real is not None else NO_REAL_HELP)
            if real is None and status not in ("missing", "offline"):
                OPERATOR.append(REAL_HOW)
            st.metric("Median answer time", f"{latency[0]:.0f} ms" if latency is not None else "—",
                      help="Time the API spent on one drawing (pre-processing + model), from recent predictions "
                      f"(drawings, not uploaded photos; {FEW_TIMES} at least).")  # fmt: skip
        if latency is None and no_latency:
            st.caption(no_latency)
        extra = []
        if model.get("trained_at"):
            extra.append(f"trained {common.when_text(model['trained_at'])}")
        if model.get("training_seconds"):
            extra.append(f"in {common.duration(float(model['training_seconds']))}")
        samples = model.get("train_samples")
        if samples:  # a quick start (`DIGITLAB_TRAIN_LIMIT`) kept its weaker models with no word of it
            quick = samples < MNIST_TRAIN
            extra.append(f"learned from {samples:,} images" + (
                " only: a quick model, part of MNIST's digits plus drawn examples of other styles (a fully trained "
                "one learns from all 60,000)" if quick else ""))  # (3,000 asked: 4,000)
            if quick:
                OPERATOR.append(f"{train} trains {shown} "
                                "on all of MNIST (a quick model: `DIGITLAB_TRAIN_LIMIT`).")  # fmt: skip
        if model.get("size_bytes"):  # (a fourth figure beside the three above wrapped to a line of its own)
            extra.append(f"a {common.size_text(model['size_bytes'])} file")
        if model.get("version") and status != "missing":  # (the package's "1.0.0" of a model that is not there)
            extra.append(f"version {model['version']}")
        if model.get("asks"):  # its answers name two versions ("1.0.0+svm:1.0.0"): say why
            from digitlab.models.registry import MODEL_SPECS

            spec = MODEL_SPECS.get(model["asks"])
            extra.append(f"asks the {common.esc(spec.display_name if spec else model['asks'])} about the drawings "
                         "it doubts (its answers name both versions)")  # fmt: skip
        if metrics.get("drawn_accuracy") is not None:
            extra.append(f"{common.pct(metrics['drawn_accuracy'])} on re-drawn digits")
        if extra:
            st.caption(" · ".join(extra))
        matrix = model.get("confusion_matrix")
        if matrix:
            with st.expander("Confusion matrix on the MNIST test set", icon=":material/grid_on:"):
                st.altair_chart(charts.confusion(matrix, title="", height=260), width="stretch")
                st.caption(
                    "Rows: the true digit; columns: what the model said. Off-diagonal cells are mistakes."
                )
        elif status == "missing" and not model.get("error"):
            st.caption("Not trained yet.")
            OPERATOR.append(f"{train} trains {shown}.")
        if model.get("error"):  # an artefact that does not load (the version loaded before may still serve)
            said = model["error"] if status == "ready" else f"its artefact could not be loaded: {model['error']}"
            st.warning(f"{said[:1].upper()}{said[1:]}. It needs to be rebuilt by whoever runs this app.",
                       icon=":material/report:")  # fmt: skip
            OPERATOR.append(f"{train} rebuilds {shown}.")
        if status == "training":
            st.caption("Training now; the card fills in when it is done.")
        if status not in ("missing", "offline"):
            version_history(model.get("name"))


def main() -> None:
    OPERATOR.clear()
    common.page_header("Models", "The models behind the predictions, measured on the MNIST test set and on real "
                                 "handwriting of people no model learned from.")  # fmt: skip
    try:
        models = common.client().models()
    except ApiError as exc:
        said = "" if isinstance(exc, ApiUnavailable) else str(exc).rstrip(" .") + ". "  # (the banner says "away")
        st.info(f"{said}Live figures need the prediction service; meanwhile, here is what each model is.",
                icon=":material/cloud_off:")  # fmt: skip
        models = _offline_catalogue()
    health = common.health()
    lat, no_latency = latencies(common.api_url()) if health else ({}, "")
    if health:
        learn_now()
    mistakes_charts(models)
    for start in range(0, len(models), 2):  # row by row, so a phone shows them in the same order
        cols = st.columns(2, gap="medium")
        for col, model in zip(cols, models[start : start + 2], strict=False):
            with col:
                card(
                    model,
                    lat.get(model.get("name")),
                    health.models.get(model.get("name")) if health else None,
                    no_latency,
                )
    if no_latency == NO_TOKEN_FOR_TIMES:
        OPERATOR.append(common.ADMIN_HOW + " The cards then show their answer times.")
    common.for_the_operator(OPERATOR)


main()
