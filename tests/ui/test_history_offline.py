"""History's filters, run by Streamlit's AppTest against a stand-in API (`fake_api.py`): no browser, no
server. The filter row at the top (model, answer, period) reads as page-wide: it applies to the Numbers
table too ("Answer: Wrong" left every number listed, right and unlabelled ones included)."""

from __future__ import annotations

import pytest
from fake_api import install, open_app, stored_number, stored_prediction

pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def history(monkeypatch):
    from digitlab.core.config import get_settings

    api, canvas = install(monkeypatch)
    api.stored_numbers = [
        stored_number(5, "0000000000000000", "0"),  # wrong
        stored_number(4, "81"),  # nobody said: neither right nor wrong
        stored_number(3, "307", "307", model="svm"),  # right
        stored_number(2, "20225", "2025", model="svm"),  # wrong
        stored_number(1, "1974", "1974", timestamp="2020-01-01T10:00:00"),  # right, long ago
    ]

    def open_history():
        at = open_app(monkeypatch, canvas, "history")
        assert not at.exception, at.exception
        return at

    yield api, open_history
    get_settings.cache_clear()


def _numbers_shown(at) -> list[str]:
    (table,) = at.table
    return [str(v) for v in table.value["Read"]]


def _captions(at) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def test_a_flagged_number_is_not_sure_in_the_table(history):
    """A smiley read as 63, flagged on the Number page, showed "94%" in the Sure column."""
    api, open_history = history
    api.stored_numbers[1]["uncertain"] = True
    at = open_history()
    assert list(at.table[0].value["Sure"])[:3] == ["90%", "not sure (90%)", "90%"]


def test_the_answer_filter_applies_to_the_numbers(history):
    _, open_history = history
    at = open_history()
    assert _numbers_shown(at) == ["0000000000000000", "81", "307", "20225", "1974"]  # no filter: all, newest first
    # st.table reads column names as Markdown: "#" became an empty heading, the id column had no name
    assert not [c for c in at.table[0].value.columns if str(c)[:1] in "#*_-+>`"], list(at.table[0].value.columns)

    at.button_group(key="hist_outcome").set_value("Wrong").run()
    assert not at.exception, at.exception
    assert _numbers_shown(at) == ["0000000000000000", "20225"]  # not the right ones, not the unlabelled 81
    assert set(at.table[0].value["Right?"]) == {"✗"}
    assert "2 numbers match the filters above" in _captions(at), _captions(at)

    at.button_group(key="hist_outcome").set_value("Right").run()
    assert _numbers_shown(at) == ["307", "1974"]


def test_the_model_and_period_filters_apply_to_the_numbers(history):
    _, open_history = history
    at = open_history()
    at.selectbox(key="hist_model").set_value("svm").run()
    assert _numbers_shown(at) == ["307", "20225"]

    at.selectbox(key="hist_model").set_value("All models").run()
    at.button_group(key="hist_period").set_value("Custom").run()
    from datetime import date

    at.date_input(key="hist_dates").set_value((date(2019, 12, 31), date(2020, 1, 2))).run()
    assert not at.exception, at.exception
    assert _numbers_shown(at) == ["1974"]


def test_nothing_matching_says_so(history):
    api, open_history = history
    api.stored_numbers = [stored_number(4, "81")]
    at = open_history()
    at.button_group(key="hist_outcome").set_value("Wrong").run()
    assert not at.table
    assert any("No numbers match these filters" in str(i.value) for i in at.info)


def test_the_log_shows_which_answers_were_not_sure(history):
    """The "Not sure" the Draw page showed is in the log too (it read as a confident answer before)."""
    api, open_history = history
    api.stored_predictions = [stored_prediction(3, 4, uncertain=True), stored_prediction(2, 7, drawn=7),
                              stored_prediction(1, 1, uncertain=None)]  # fmt: skip
    at = open_history()
    (log,) = at.dataframe
    assert list(log.value["sure?"]) == ["not sure", "sure", ""]  # "": stored before the flag was kept
    assert list(log.value["predicted"]) == [4, 7, 1]


def test_an_empty_log_says_why(history):
    """No wrong answers is not "nothing drawn yet": the message names the filter."""
    api, open_history = history
    api.stored_predictions = [stored_prediction(1, 7, drawn=7)]
    at = open_history()
    at.button_group(key="hist_outcome").set_value("Wrong").run()
    assert not at.exception, at.exception
    infos = " ".join(str(i.value) for i in at.info)
    assert "No wrong answers among the drawings yet" in infos and "Draw something" not in infos
    assert "Numbers have their own table below" in infos  # the wrong numbers listed below are not contradicted
    api.stored_predictions = []
    at = open_history()
    assert "Nothing here yet. Draw something on the Draw page!" in " ".join(str(i.value) for i in at.info)


def test_filters_and_the_model_picked_survive_a_visit_to_another_page(history):
    """Streamlit forgets a widget's value when a page run does not draw it: History's filters and the
    Draw page's model were reset by Draw -> History -> Draw, without a word."""
    _, open_history = history
    at = open_history()
    at.selectbox(key="hist_model").set_value("svm").run()
    at.button_group(key="hist_outcome").set_value("Wrong").run()
    at.switch_page("views/draw.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="draw_model").set_value("svm").run()
    at.switch_page("views/history.py").run()
    assert not at.exception and not at.warning, (at.exception, at.warning)
    assert at.selectbox(key="hist_model").value == "svm"
    assert at.button_group(key="hist_outcome").value == "Wrong"
    assert _numbers_shown(at) == ["20225"]
    at.switch_page("views/draw.py").run()
    assert at.selectbox(key="draw_model").value == "svm"


def test_the_model_picked_is_in_the_address_and_a_reload_keeps_it(history):
    """A reload went back to "Best available model": the choice lives in the URL (?model=svm), so a reload
    or a shared link keeps it; a name that is not a ready model is ignored."""
    from streamlit.testing.v1 import AppTest

    from digitlab.ui import launch

    _, open_history = history
    at = open_history()
    at.switch_page("views/draw.py").run()
    at.selectbox(key="draw_model").set_value("svm").run()
    assert at.query_params.get("model") in ("svm", ["svm"]), at.query_params

    def reload(address_model: str) -> AppTest:  # a new session whose address names a model
        fresh = AppTest.from_file(str(launch.APP), default_timeout=60)
        fresh.query_params["model"] = address_model
        fresh.run()  # (the stand-in canvas stays installed: the module is the one patched above)
        return fresh

    reloaded = reload("svm")
    assert not reloaded.exception and reloaded.selectbox(key="draw_model").value == "svm"
    other = reload("no_such_model")
    assert not other.exception and other.selectbox(key="draw_model").value == "__auto__"
    other.selectbox(key="draw_model").set_value("svm").run()
    other.selectbox(key="draw_model").set_value("__auto__").run()  # the best model: no parameter
    assert "model" not in other.query_params, other.query_params


def test_counts_read_like_sentences():
    from digitlab.ui.common import counted_caption

    assert counted_caption(1, 1, 1, "prediction") == "1 prediction · newest first"  # was "1–1 of 1 predictions"
    assert counted_caption(1, 3, 3, "number") == "all 3 numbers · newest first"
    assert counted_caption(26, 46, 46, "prediction") == "26–46 of 46 predictions · newest first"


def test_without_the_admin_token_history_says_how_to_start_the_ui_and_keeps_the_accuracy(history):
    """The UI started without the API's admin token: the log and the numbers are the admin's (401), the accuracy
    is not. History said "History is not available right now" (an outage, to a reader) and showed nothing."""
    from digitlab.ui.client import ApiError

    api, open_history = history
    api.locked = ApiError("The API keeps this for its admin, and this UI was started without the API's admin token "
                          "(or with another one): start `digitlab ui` with DIGITLAB_ADMIN_TOKEN set as for the API.",
                          code="unauthorized", status=401)  # fmt: skip
    api.stats_answer = {"models": {"cnn": {"predictions": 12, "labelled": 4, "correct": 3, "accuracy": 0.75}}}
    at = open_history()
    warnings = [str(w.value) for w in at.warning]
    assert len(warnings) == 1 and warnings[0].startswith("The prediction log is not shown: The API keeps this")
    assert "not available right now" not in "\n".join(warnings)
    assert [m.value for m in at.metric][:1] == ["12"], [m.value for m in at.metric]  # the accuracy stays
    (operator,) = [e for e in at.expander if e.label == "For whoever runs this app"]  # how to start the UI
    assert "DIGITLAB_ADMIN_TOKEN" in "\n".join(str(m.value) for m in operator.markdown)


def test_a_number_said_to_be_no_number_is_listed_so(history):
    api, open_history = history
    api.stored_numbers = [{**stored_number(7, "467"), "true_text": None, "not_number": True, "correct": False}]
    at = open_history()
    (table,) = at.table
    assert list(table.value["You wrote"]) == ["not a number"] and list(table.value["Right?"]) == ["✗"]


def test_a_thumbnail_follows_the_stroke_its_record_holds(monkeypatch):
    """A drawing's record takes each new stroke's picture under the same id: History kept showing the first
    stroke's picture (cached by id) beside the finished digit's answer (a newcomer's tour, session 30)."""
    from digitlab.ui import common
    from digitlab.ui.views import history

    pictures = iter([b"first stroke", b"whole digit"])

    class Client:
        def image(self, prediction_id, kind):
            return next(pictures)

    monkeypatch.setattr(common, "client", lambda: Client())
    history._thumbnail.clear()
    row = stored_prediction(6, 6).model_copy(update={"has_processed": True})
    first = history.thumbnails([row])[6]
    assert history.thumbnails([row])[6] == first  # (the same stroke: cached)
    later = row.model_copy(update={"uid": "u-next-stroke", "predicted_digit": 4})
    assert history.thumbnails([later])[6] != first


def test_the_accuracy_section_says_which_filters_apply_to_it(history):
    """With Period "Today" or Answer "Wrong" the Accuracy section stayed all-time and all answers, unsaid (a
    newcomer's tour, session 30)."""
    _api, open_history = history
    at = open_history()
    assert "Answer and Period apply to the log and the numbers above" in _captions(at)
    assert "UTC days" in _captions(at)


def test_a_filter_clicked_again_shows_its_default_chosen(history):
    """Clicking the chosen Answer or Period again deselected it: nothing highlighted, everything listed (a
    newcomer's tour, session 30). The default is then the choice, shown so."""
    _api, open_history = history
    at = open_history()
    at.button_group(key="hist_outcome").set_value(None).run()
    at.button_group(key="hist_period").set_value(None).run()
    assert not at.exception, at.exception
    assert at.button_group(key="hist_outcome").value == "All"
    assert at.button_group(key="hist_period").value == "All time"


def test_the_numbers_write_their_times_as_the_log_does(history):
    """The Numbers table said "01 Jan 2020, 10:00" under the log's "1 Jan 2020, 10:00:00" (its DatetimeColumn
    format, `common.TIME_FORMAT`): one way on the page (UTC here: no browser time zone)."""
    api, open_history = history
    api.stored_predictions = [stored_prediction(1, 4)]
    at = open_history()
    (times,) = [list(at.table[0].value[c]) for c in at.table[0].value.columns if str(c).startswith("When")]
    assert times[-1] == "1 Jan 2020, 10:00:00", times
    (log,) = at.dataframe
    assert '"format": "D MMM YYYY, HH:mm:ss"' in log.proto.columns, log.proto.columns


def test_the_log_says_where_each_prediction_came_from(history):
    """Canvas drawings, uploaded photos and the API's predictions were one list with nothing to tell them apart
    (a newcomer's tour, session 31)."""
    api, open_history = history
    api.stored_predictions = [stored_prediction(3, 4, source="upload"), stored_prediction(2, 7),
                              stored_prediction(1, 1, source="api")]  # fmt: skip
    at = open_history()
    (log,) = at.dataframe
    assert list(log.value["from"]) == ["photo", "canvas", "API"]


def test_a_short_last_page_keeps_the_tables_height(history, monkeypatch):
    """Paging to a short last page made the page shorter under the pager: the table scrolled out of sight (a
    tour, session 45). With several pages, every page's table is as tall as a full one; one page fits its rows."""
    import streamlit as st

    from digitlab.ui.views.history import PAGE_SIZE

    heights = []  # (AppTest's dataframe element does not carry its height)
    dataframe = st.dataframe
    monkeypatch.setattr(st, "dataframe", lambda *a, **k: heights.append(k.get("height")) or dataframe(*a, **k))
    api, open_history = history
    api.stored_predictions = [stored_prediction(i, i % 10) for i in range(PAGE_SIZE + 3, 0, -1)]
    at = open_history()
    (pager,) = at.get("pagination")
    pager.set_value(2).run()
    assert not at.exception, at.exception
    (log,) = at.dataframe
    assert len(log.value) == 3
    assert len(heights) == 2 and heights[0] == heights[1] and isinstance(heights[0], int), heights
    api.stored_predictions = api.stored_predictions[-3:]
    open_history()
    assert heights[2] == "auto", heights  # one page: as tall as its rows


def test_the_accuracy_per_day_chart_has_no_axis_title_to_cut_on_a_phone():
    """At 390 px the rotated y axis title "accuracy" began 2 px left of the chart's box and a tour saw
    "ccuracy"; the chart's title, "Accuracy per day", says what the percentages are."""
    from digitlab.ui import charts

    rows = [{"date": "2026-12-05", "model": "CNN", "accuracy": 0.9, "labelled": 10}]
    spec = charts.accuracy_over_time(rows).to_dict()
    assert spec["title"] == "Accuracy per day"
    assert spec["encoding"]["y"]["title"] is None, spec["encoding"]["y"]
    assert spec["encoding"]["y"]["axis"]["format"] == "%"  # the labels still say they are percentages


def test_the_confusion_matrix_of_all_models_says_it_counts_once_per_model(history):
    """A tour drew three 9s on Compare (3 models) and read 9 in row 9 under "Each row is what you drew"."""
    api, open_history = history
    one = [[0] * 10 for _ in range(10)]
    one[9][9] = 3
    api.stats_answer = {"models": {m: {"predictions": 3, "labelled": 3, "correct": 3, "accuracy": 1.0, "confusion_matrix": one}
                                   for m in ("cnn", "svm", "extra_trees")}}  # fmt: skip
    at = open_history()
    (picker,) = [s for s in at.selectbox if s.label == "Confusion matrix of"]
    assert picker.value == "all"
    assert "counts once per model" in _captions(at)
    picker.set_value("svm").run()
    assert "Each row is what you drew" in _captions(at) and "counts once per model" not in _captions(at)
