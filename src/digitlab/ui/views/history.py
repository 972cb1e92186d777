"""History (the original Report view, grown up): the prediction log, accuracy, confusion, trends, export."""

from __future__ import annotations

import base64
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from digitlab.store.records import StoredPrediction
from digitlab.ui import charts, common, history_cards
from digitlab.ui.client import ApiError, ApiUnavailable

PAGE_SIZE = 25
ROW_HEIGHT = 42  # px: a thumbnail of the 28x28 input fits
PERIODS = {"All time": None, "Today": 0, "7 days": 7, "30 days": 30, "Custom": "custom"}
OUTCOMES = {"All": None, "Right": True, "Wrong": False}


@st.cache_data(max_entries=5000, show_spinner=False)
def _thumbnail(api_url: str, prediction_id: int, kind: str, uid: str | None) -> str:
    """`uid`: the stroke the record holds now (a drawing's record takes each new stroke's picture under its id:
    History showed the first stroke's picture beside the finished digit's answer, a newcomer's tour, session 30)."""
    png = common.client().image(prediction_id, kind)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnails(items: list[StoredPrediction]) -> dict[int, str | None]:
    url = common.api_url()

    def one(item: StoredPrediction) -> tuple[int, str | None]:
        pid = item.id
        kind = "processed" if item.has_processed else "input" if item.has_image else None
        if kind is None:
            return pid, None
        try:
            return pid, _thumbnail(url, pid, kind, item.uid)
        except ApiError:
            return pid, None

    with ThreadPoolExecutor(max_workers=6) as pool:
        return dict(pool.map(one, items))


def _timezone() -> tuple[str, str]:
    return common.browser_timezone()


def _keep_one(key: str, default: str) -> None:
    """The chosen option clicked again deselects it: none was highlighted while the log showed everything (a
    newcomer's tour, session 30). Then the default is the choice, and shown so."""
    if st.session_state.get(key) is None:
        st.session_state[key] = default


def filters(models: list[dict[str, Any]], stats_models: list[str]) -> dict[str, Any]:
    names = list(dict.fromkeys([m["name"] for m in models if m.get("name")] + stats_models))
    with st.container(horizontal=True, gap="medium", vertical_alignment="bottom", key="hist_filters"):
        model = st.selectbox("Model", ["All models", *names], key="hist_model", width=230, persist_state="session",
                             format_func=lambda n: n if n == "All models" else common.display_name(models, n))  # fmt: skip
        outcome = st.pills("Answer", list(OUTCOMES), default="All", key="hist_outcome", persist_state="session",
                           on_change=_keep_one, args=("hist_outcome", "All"),
                           help="Right / wrong needs what was really drawn or written: give it on the Draw or "
                           "Number page. Applies to the prediction log and the Numbers.")  # fmt: skip
        period = st.pills("Period", list(PERIODS), default="All time", key="hist_period",
                          persist_state="session", on_change=_keep_one, args=("hist_period", "All time"))
    since = until = None
    zone = ZoneInfo(_timezone()[0])
    today = datetime.now(zone).date()
    if period == "Custom":
        picked = st.date_input(
            "Dates", value=(today - timedelta(days=7), today), max_value=today, key="hist_dates",
            persist_state="session",
        )
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            since, until = picked[0], picked[1] + timedelta(days=1)
        elif isinstance(picked, (tuple, list)) and len(picked) == 1:
            since = picked[0]
    elif PERIODS.get(period) is not None:
        since = today - timedelta(days=int(PERIODS[period]))
    if since is not None:  # the person's midnight, so "Today" means their today
        since = datetime.combine(since, datetime.min.time(), tzinfo=zone)
    if until is not None:
        until = datetime.combine(until, datetime.min.time(), tzinfo=zone)
    return {
        "model": None if model in (None, "All models") else model,
        "correct": OUTCOMES.get(outcome or "All"),
        "since": since,
        "until": until,
    }


#: the log's height when it has several pages: a full page's, as "auto" draws it (ten rows, then it scrolls), so that
#: a short last page keeps the pager where it was (the page grew shorter under it, and the table scrolled away)
PAGED_HEIGHT = 11 * ROW_HEIGHT + 3


def log_table(page: dict[str, Any], models: list[dict[str, Any]], *, paged: bool = False) -> None:
    items = page.get("items") or []
    thumbs = thumbnails(items)
    tz, tz_label = _timezone()
    rows = []
    for item in items:
        drawn, correct, ts = item.drawn_digit, item.correct, item.timestamp
        rows.append({
            "#": item.id,
            "drawing": thumbs.get(item.id),
            "when": pd.Timestamp(ts).tz_convert(tz).tz_localize(None) if ts else None,
            "model": common.display_name(models, item.model_name or "?"),
            "predicted": item.predicted_digit,
            "sure?": "not sure" if item.uncertain else "" if item.uncertain is None else "sure",
            "you drew": "not a digit" if item.not_digit else "—" if drawn is None else str(drawn),
            "right?": "—" if correct is None else ("✓ right" if correct else "✗ wrong"),
            "confidence": None if item.probability is None else 100 * item.probability,
            "latency": item.latency_ms,
            "from": SOURCES.get(item.source or "", item.source or "—"),  # (canvas, photos and API were one list)
        })  # fmt: skip
    df = pd.DataFrame(rows)
    with st.container(key="hist_log_cards"):  # a phone's (style.html: the grid cut its fifth column's header)
        st.markdown(history_cards.log_cards_html(rows, tz_label), unsafe_allow_html=True)
    with st.container(key="hist_log_grid"):
        log_grid(df, paged=paged, tz_label=tz_label)


def log_grid(df: pd.DataFrame, *, paged: bool, tz_label: str) -> None:
    """The log as a grid (from 641 px up): sortable, with the table's own "Download as CSV"."""
    st.dataframe(
        df,
        hide_index=True,
        row_height=ROW_HEIGHT,
        height=PAGED_HEIGHT if paged else "auto",
        key="hist_table",
        column_order=[
            "drawing",
            "predicted",
            "sure?",
            "you drew",
            "right?",
            "confidence",
            "model",
            "when",
            "from",
            "latency",
            "#",
        ],
        column_config={
            "#": st.column_config.NumberColumn("#", width=60, format="%d"),
            "drawing": st.column_config.ImageColumn(
                "drawing", width=70, help="The 28×28 image the model saw"
            ),
            "when": st.column_config.DatetimeColumn(
                f"when ({tz_label})", format=common.TIME_FORMAT, width=170
            ),
            "model": st.column_config.TextColumn("model", width=170),
            "predicted": st.column_config.NumberColumn("predicted", format="%d", width=80),
            "sure?": st.column_config.TextColumn(
                "sure?", width=80, help="\"not sure\": the answer was shown as \"Not sure — is it a …?\""
            ),
            "you drew": st.column_config.TextColumn("you drew", width=80),
            "right?": st.column_config.TextColumn("right?", width=80),
            "confidence": st.column_config.ProgressColumn(
                "confidence", format="%.0f%%", min_value=0, max_value=100, width=110
            ),
            "latency": st.column_config.NumberColumn("latency", format="%.0f ms", width=80),
            "from": st.column_config.TextColumn("from", width=80, help="Drawn on the canvas, an uploaded photo or "
                                                "scan, or sent to the API by a program"),
        },
    )


#: where a stored prediction came from (its `source`), as the log says it
SOURCES = {"ui": "canvas", "upload": "photo", "api": "API"}


def stats_section(stats: dict[str, Any], models: list[dict[str, Any]], model_filter: str | None) -> None:
    per_model: dict[str, dict[str, Any]] = (
        stats.get("models", stats) if isinstance(stats.get("models"), dict) else stats
    )
    per_model = {k: v for k, v in per_model.items() if isinstance(v, dict)}
    if model_filter:
        per_model = {k: v for k, v in per_model.items() if k == model_filter}
    labelled = sum(int(v.get("labelled") or 0) for v in per_model.values())
    total = sum(int(v.get("predictions") or 0) for v in per_model.values())
    correct = sum(int(v.get("correct") or round((v.get("accuracy") or 0) * (v.get("labelled") or 0)))
                  for v in per_model.values())  # fmt: skip
    with st.container(horizontal=True, gap="small", key="hist_metrics"):
        st.metric("Predictions", f"{total:,}", border=True,
                  help="One per drawing and model that answered it: a drawing on Compare counts once per model.")
        st.metric("Labelled", f"{labelled:,}", border=True,
                  help="Predictions whose author said what was drawn (every user's answers), counted like "
                  "Predictions. The CSV download has one row per labelled drawing (however many models answered it; "
                  "none for one labelled with two digits) and one per digit of a confirmed number: other counts.")  # fmt: skip
        st.metric("Accuracy on labelled", common.pct(correct / labelled) if labelled else "—", border=True,
                  help="Share of labelled predictions the model got right, counted like Predictions: a drawing "
                  "answered on Compare counts once per model. Drawings only: each number says right or wrong in "
                  "the Numbers table above.")  # fmt: skip
    if not labelled:
        st.info("No labelled drawings yet: answer “What did you draw?” on the Draw page and accuracy, the confusion "
                "matrix and trends appear here.", icon=":material/touch_app:")  # fmt: skip
        return
    acc_rows = [
        {
            "model": common.display_name(models, k),
            "accuracy": float(v["accuracy"]),
            "labelled": int(v["labelled"]),
        }
        for k, v in per_model.items()
        if v.get("labelled") and v.get("accuracy") is not None
    ]
    c1, c2 = st.columns([1, 1], gap="large")
    with c1:
        st.altair_chart(charts.accuracy_by_model(acc_rows), width="stretch")
        daily = [
            {"date": d["date"], "model": common.display_name(models, k), "accuracy": float(d["accuracy"]),
             "labelled": int(d.get("labelled") or 0)}
            for k, v in per_model.items() for d in (v.get("daily") or v.get("accuracy_over_time") or [])
            if d.get("accuracy") is not None
        ]  # fmt: skip
        if daily:
            st.altair_chart(charts.accuracy_over_time(daily), width="stretch")
    with c2:
        names = [k for k, v in per_model.items() if v.get("labelled")]
        options = ["all", *names] if len(names) > 1 else names
        pick = st.selectbox("Confusion matrix of", options, key="hist_cm_model", persist_state="session",
                            format_func=lambda n: "all models together" if n == "all" else common.display_name(models, n))  # fmt: skip
        chosen = names if pick == "all" else [pick]
        matrix = [[0] * 10 for _ in range(10)]
        for k in chosen:
            for t, row in enumerate(per_model[k].get("confusion_matrix") or []):
                for p, n in enumerate(row):
                    matrix[t][p] += int(n)
        st.altair_chart(
            charts.confusion(matrix, title="True digit (rows) vs predicted (columns)"), width="stretch"
        )
        st.caption("Each row is what you drew; the diagonal is right, everything else is a mistake."
                   + (" All models together: a drawing answered by several models (Compare) counts once per model."
                      if pick == "all" else ""))  # (a tour read three 9s drawn on Compare as 9 in row 9)  # fmt: skip


def empty_log_message(f: dict[str, Any]) -> str:
    """What an empty prediction log means: nothing drawn yet, or nothing that matches the filters."""
    if f.get("correct") is not None:
        outcome = "right" if f["correct"] else "wrong"
        # (it said "No wrong answers here yet" above a Numbers table of wrong numbers: a newcomer's tour, session 34)
        return (f"No {outcome} answers among the drawings yet: a drawing's answer is right or wrong once you say what "
                "you drew (on the Draw page, under the answer). Numbers have their own table below.")  # fmt: skip
    if any(f.get(k) is not None for k in ("model", "since", "until")):
        return "No predictions match these filters. Try another model or period."
    return "Nothing here yet. Draw something on the Draw page!"


def number_correct(n: dict[str, Any]) -> bool | None:
    """Right (the reading was what they wrote), wrong, or None when nobody said what was written."""
    if n.get("not_number"):
        return False  # no number there to read
    truth = n.get("true_text")
    if truth in (None, ""):
        return None
    return bool(n["correct"]) if n.get("correct") is not None else truth == n.get("text")


def numbers_section(models: list[dict], f: dict[str, Any] | None = None) -> None:
    """Numbers read on the Number page (or by `/read`): newest first, with what was written; the page's
    filters (model, answer, period) apply here too."""
    f = f or {}
    filtered = any(f.get(k) is not None for k in ("model", "correct", "since", "until"))
    try:
        page = common.client().numbers(page=1, page_size=PAGE_SIZE, model=f.get("model"), correct=f.get("correct"),
                                       since=f.get("since"), until=f.get("until"))  # fmt: skip
    except ApiError as exc:
        st.caption(f"Numbers are not available right now: {exc}" if exc.code != "unauthorized" else
                   f"Numbers are not shown: {exc}")  # fmt: skip
        return
    st.subheader("Numbers", anchor=False)
    total = int(page.get("total") or 0)
    items = page["items"]
    if not items:
        if filtered:
            st.info("No numbers match these filters.", icon=":material/filter_alt:")
        else:
            st.info("No numbers yet. Write one on the Number page!", icon=":material/pin:")
        return
    rows = [
        {
            "Read": n.get("text"),
            "You wrote": "not a number" if n.get("not_number") else n.get("true_text") or "",
            "Right?": {True: "✓", False: "✗"}.get(number_correct(n), ""),
            "Digits": len(n.get("digits") or []),
            # a flagged reading says so, as on the Number page (a smiley read as 63 showed "94%" here)
            "Sure": f"not sure ({(n.get('confidence') or 0) * 100:.0f}%)" if n.get("uncertain")
            else f"{(n.get('confidence') or 0) * 100:.0f}%",
            "Model": common.display_name(models, n.get("model_name") or "?"),
            f"When ({_timezone()[1]})": common.when_text(n.get("timestamp")),
            "No.": n.get("id"),  # ("#" became an empty <h1>: st.table reads column names as Markdown)
        }
        for n in items
    ]
    with st.container(key="hist_numbers"):  # (on a phone, cards instead: style.html)
        st.table(pd.DataFrame(rows), hide_index=True)  # a plain table: a handful of short rows; the id last
    with st.container(key="hist_number_cards"):
        st.markdown(history_cards.number_cards_html(rows), unsafe_allow_html=True)
    caption = common.counted_caption(1, len(items), total, "number")
    verb = " matches" if total == 1 else " match"  # ("1 number match the filters above")
    st.caption(caption.replace(" · ", f"{verb} the filters above · ", 1) if filtered else caption)


def export_button() -> None:
    def data() -> bytes:
        try:
            return common.client().export_csv()
        except ApiError as exc:
            return f"# export failed: {exc}\n".encode()

    st.download_button(
        "Download labelled drawings (CSV)", data=data, file_name="digitlab-labelled.csv", mime="text/csv",
        icon=":material/download:", key="hist_export",
        help="Every labelled drawing in the store, whatever the filters above: one row per labelled drawing "
             "(however many models answered it) and one per digit of a confirmed number; the label, then the 784 "
             "pixels (0–255) of the 28×28 image, like MNIST.",
    )  # fmt: skip


def prediction_log(page: dict[str, Any], models: list[dict], f: dict[str, Any], page_no: int, pager_key: str) -> None:
    total = int(page.get("total") or 0)
    st.subheader("Prediction log", anchor=False)
    if not total:
        st.info(empty_log_message(f), icon=":material/filter_alt:" if any(f.values()) else ":material/draw:")
        return
    pages = max(1, -(-total // PAGE_SIZE))
    log_table(page, models, paged=pages > 1)
    shown = st.session_state.get("hist_log_shown")  # (pager, page) of the last run: a page turned with this pager?
    st.session_state["hist_log_shown"] = (pager_key, page_no)
    if shown and shown[0] == pager_key and shown[1] != page_no:
        with st.container(key="hist_log_turned"):  # (hidden: a script only) the phone's cards back on the screen
            st.html(history_cards.page_turned_script(f"{shown[1]}-{page_no}-{time.time():.3f}"),
                    unsafe_allow_javascript=True)  # fmt: skip
    first = (page_no - 1) * PAGE_SIZE + 1
    st.caption(common.counted_caption(first, min(total, page_no * PAGE_SIZE), total, "prediction"))
    if pages > 1:
        st.pagination(pages, key=pager_key)


def _not_available(exc: ApiError) -> None:
    """The page's own line; the service's absence is the banner's to say (it was said twice, word for word)."""
    said = "it comes back with the prediction service." if isinstance(exc, ApiUnavailable) else str(exc)
    st.warning(f"History is not available right now: {said}", icon=":material/cloud_off:")


def main() -> None:
    common.page_header("History", "Every prediction, what you said it was, and how the models are doing on your "
                       "drawings.")  # fmt: skip
    models, _ = common.model_catalog()
    client = common.client()
    try:
        stats = client.stats()
    except ApiError as exc:
        _not_available(exc)
        return
    stats_names = [k for k, v in (stats.get("models", stats) or {}).items() if isinstance(v, dict)]
    f = filters(models, stats_names)
    # New filters start again at page 1: the pager gets a new key (setting its value would warn).
    pager_key = "hist_page_" + hashlib.sha1(repr(sorted(f.items(), key=str)).encode()).hexdigest()[:10]
    page_no = int(st.session_state.get(pager_key) or 1)
    operator: list[str] = []  # what only whoever runs the app can do, folded at the page's end
    try:
        page = client.predictions(page=page_no, page_size=PAGE_SIZE, **f)
    except ApiError as exc:
        if exc.code != "unauthorized":
            _not_available(exc)
            return
        # the API keeps its records for its admin, and this UI was started without its token: not an outage
        # (it said "not available right now" and hid the accuracy too, which needs no token)
        st.warning(f"The prediction log is not shown: {exc}", icon=":material/lock:")
        operator = [common.ADMIN_HOW]
    else:
        prediction_log(page, models, f, page_no, pager_key)
        export_button()
        numbers_section(models, f)
    st.subheader("Accuracy", anchor=False)
    st.caption("Of all time and every answer, per model (the Model filter applies here; Answer and Period apply to the "
               "log and the numbers above). Days are UTC days.")  # (it changed nothing with "Today" or "Wrong", unsaid)
    stats_section(stats, models, f["model"])
    common.for_the_operator(operator)


main()
