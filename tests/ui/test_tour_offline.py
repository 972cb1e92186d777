"""Leftovers of a newcomer's tour (session 49), run by Streamlit's AppTest against a stand-in API and canvas
(`fake_api.py`): no browser, no server."""

from __future__ import annotations

import pytest
from fake_api import install, open_app, png

pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def fake(monkeypatch):
    from digitlab.core.config import get_settings

    api, canvas = install(monkeypatch)

    def open_page(page: str):
        at = open_app(monkeypatch, canvas, page)
        assert not at.exception, at.exception
        return at

    yield api, canvas, open_page
    get_settings.cache_clear()


def _said(at) -> str:
    """What the page says, without the outage banner (whose monitor does retry)."""
    out = []
    for kind in ("error", "warning", "info", "success", "markdown", "caption", "toast"):
        out += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(t for t in out if "Predictions are unavailable — retrying" not in t)


def _compare_pills(at) -> list:
    return [b for b in at.button_group if b.key and b.key.startswith("cmp_fb_")]


def test_compare_a_stroke_after_an_answer_waiting_for_the_service_keeps_it_said(fake):
    """Compare a 5, the service goes away, click "5": "Not saved yet …". A stroke then took that line off the page
    with the cards, leaving only "not answering" (the tour: the answer was sent when the service came back, with
    nothing on the page saying it waited). Draw says it since session 47; Compare now too, and after Clear."""
    api, canvas, open_page = fake
    canvas.set("compare", png(), drawing_id="c1")
    at = open_page("compare")
    api.up = False
    (pills,) = _compare_pills(at)
    pills.set_value(5).run()
    assert "Not saved yet: you drew a **5**" in _said(at), _said(at)
    canvas.set("compare", png(shade=4), strokes=2, drawing_id="c2")  # a stroke: a new drawing after the answer
    at.run()
    assert not at.exception, at.exception
    said = _said(at)
    assert "The prediction service is not answering right now" in said, said
    assert not _compare_pills(at), said
    assert "Not saved yet: you drew a **5** (the drawing as it was when you answered)" in said, said
    canvas.set("compare", None)  # cleared: the answer still waits
    at.run()
    assert "Not saved yet: you drew a **5**" in _said(at), _said(at)
    assert not api.feedback_calls
    api.up = True
    at.run()  # the monitor finds the service back: the answer is sent to every model's record, and said so
    assert not at.exception, at.exception
    assert sorted(api.feedback_calls) == [(101, 5), (102, 5)], api.feedback_calls
    said = _said(at)
    assert "Not saved yet" not in said, said
    assert any("Your earlier answer is saved" in str(t.value) for t in at.toast), said
