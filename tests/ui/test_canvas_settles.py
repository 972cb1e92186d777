"""Undo and Clear on the real `drawing_canvas`, its component replaced by one whose report lags like the browser's:
the run a click starts comes before the canvas reports the strokes it was given (AppTest, no browser).

Found by a newcomer's tour (session 21): after Clear the answer buttons of the cleared drawing stayed beside a blank
canvas, and a click on one labelled the cleared drawing (stored "you drew an 8" for a 3)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from fake_api import digest, install, png

pytest.importorskip("streamlit.testing.v1")


class LaggingCanvas:
    """`st_canvas` that reports whatever the test last `draw`s, whatever `initial_drawing` it is handed."""

    def __init__(self) -> None:
        self.objects: list = []
        self.picture: bytes | None = None

    def draw(self, objects: list, picture: bytes | None) -> None:
        self.objects, self.picture = objects, picture

    def __call__(self, **_: object):
        return SimpleNamespace(json_data={"objects": list(self.objects)}, image_bytes=self.picture)


def stroke(n: int) -> dict:
    return {"type": "path", "path": [["M", n, n], ["L", n + 40, n + 90]]}


@pytest.fixture
def page(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from digitlab.core.config import get_settings
    from digitlab.ui import launch

    api, _ = install(monkeypatch)
    at = AppTest.from_file(str(launch.APP), default_timeout=60)
    at.run()  # (imports the canvas module, inside a Streamlit run)
    lagging = LaggingCanvas()
    monkeypatch.setattr(sys.modules["digitlab.ui.canvas"], "st_canvas", lagging)
    yield api, lagging, at
    get_settings.cache_clear()


def _answer_buttons(at) -> list:
    return [b for b in at.button_group if b.key and b.key.startswith("fb_")]


def _shown_drawing(at) -> str | None:
    for m in at.markdown:
        text = str(m.value)
        if 'data-testid="dl-prediction"' in text:
            return text.split('data-drawing="', 1)[1].split('"', 1)[0]
    return None


def _placeholder(at) -> bool:
    return any('data-testid="dl-empty"' in str(m.value) for m in at.markdown)


def test_clear_shows_the_blank_canvas_at_once_and_leaves_nothing_to_answer(page):
    api, canvas, at = page
    first = png(shade=10)
    canvas.draw([stroke(1)], first)
    at.run()
    assert _shown_drawing(at) == digest(first)[:16] and _answer_buttons(at)

    at.button(key="draw_clear").click().run()  # the canvas has not reported its blank page yet
    assert not at.exception, at.exception
    assert _placeholder(at) and _shown_drawing(at) is None
    assert not _answer_buttons(at)  # (they were there, and a click labelled the cleared drawing)

    canvas.draw([], None)  # now it has
    at.run()
    assert _placeholder(at) and not _answer_buttons(at)
    assert api.feedback_calls == []

    second = png(shade=20)  # and the next stroke is read as usual
    canvas.draw([stroke(5)], second)
    at.run()
    assert _shown_drawing(at) == digest(second)[:16]


def test_undo_shows_the_earlier_picture_at_once(page):
    _api, canvas, at = page
    one, two = png(shade=30), png(shade=40)
    canvas.draw([stroke(1)], one)
    at.run()
    canvas.draw([stroke(1), stroke(2)], two)
    at.run()
    assert _shown_drawing(at) == digest(two)[:16]

    at.button(key="draw_undo").click().run()  # the canvas still reports both strokes
    assert not at.exception, at.exception
    assert _shown_drawing(at) == digest(one)[:16]  # the picture of the first stroke (its record follows it back)

    canvas.draw([stroke(1)], one)
    at.run()
    assert _shown_drawing(at) == digest(one)[:16]


def test_compare_takes_the_digit_drawn_on_draw_at_a_click(page):
    """A newcomer drew on Draw, opened Compare and found its canvas blank: "Compare the digit from Draw" loads
    the strokes into Compare's canvas and every model answers that picture at once, as a drawing of its own."""
    api, canvas, at = page
    first = png(shade=10)
    canvas.draw([stroke(1)], first)
    at.run()
    draw_id = api.sent_fields[-1]["drawing_id"]
    canvas.draw([], None)  # Compare's canvas starts blank
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    assert _placeholder(at) and not api.compared

    at.button(key="cmp_from_draw").click().run()  # the canvas has not reported the loaded strokes yet
    assert not at.exception, at.exception
    assert [picture for picture, _ in api.compared] == [first]  # at once, on Draw's picture
    compare_id = api.compared[0][1]["drawing_id"]
    assert compare_id and compare_id != draw_id  # its own records: Draw's answer stays with Draw's
    assert not _placeholder(at)

    canvas.draw([stroke(1)], first)  # now it has: the same drawing, no second request
    at.run()
    assert len(api.compared) == 1 and not _placeholder(at)
    canvas.draw([stroke(1), stroke(2)], png(shade=20))  # a stroke more on Compare: the same drawing goes on
    at.run()
    assert [fields["drawing_id"] for _, fields in api.compared] == [compare_id, compare_id]


def test_an_answer_clicked_as_a_last_stroke_is_on_its_way_is_the_whole_drawing_s(page):
    """A tour clicked "4" a moment after the 4's second stroke: the run of the click came before the stroke's,
    so the answer went to the first stroke's picture (an L stored as a 4) and the whole 4 became a new drawing
    with no answer. The canvas holds more strokes than the answered picture: the answer follows the drawing."""
    api, canvas, at = page
    one, two = png(shade=50), png(shade=60)
    canvas.draw([stroke(1)], one)
    at.run()
    at.session_state["draw_canvas"] = {"drawing": {"raw": {"objects": [stroke(1), stroke(2)]}}}  # its run not yet
    _answer_buttons(at)[0].set_value(4).run()
    assert not at.exception, at.exception
    canvas.draw([stroke(1), stroke(2)], two)  # the stroke's run
    at.run()
    assert not at.exception, at.exception
    assert _shown_drawing(at) == digest(two)[:16]
    assert api.feedback_calls == [(101, 4), (102, 4)], api.feedback_calls
    ids = [fields.get("drawing_id") for fields in api.sent_fields]
    assert len(set(ids[-2:])) == 1, ids  # one drawing, one record: the whole 4 with its answer
    assert any("you drew a **4**" in str(e.value) for e in at.success), [str(e.value) for e in at.success]


def test_an_answer_on_the_earlier_pictures_buttons_after_an_undo_is_not_sent(page):
    """`keys` holds back an answer clicked right after Undo or Clear; should one come through (an Undo's run
    begun, its page not shown yet), it is the earlier picture's and is not sent: it labelled the drawing's
    record, which a further stroke then took over with that answer (a newcomer's tour, session 30)."""
    api, canvas, at = page
    canvas.draw([stroke(1), stroke(2)], png(shade=70))
    at.run()
    earlier = _answer_buttons(at)[0]
    at.session_state["draw_rev"] = at.session_state["draw_rev"] + 1 if "draw_rev" in at.session_state else 1
    earlier.set_value(7).run()  # (as if Undo's callback ran first: the canvas' revision moved on)
    assert not at.exception, at.exception
    assert api.feedback_calls == []
    assert any("not saved" in str(t.value) for t in at.toast), [str(t.value) for t in at.toast]
    _answer_buttons(at)[0].set_value(7).run()  # the answers shown now are sent
    assert api.feedback_calls and api.feedback_calls[-1][1] == 7
