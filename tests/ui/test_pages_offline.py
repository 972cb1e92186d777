"""Every page runs without the API (Streamlit's AppTest, no browser): a friendly message, no exception,
and the About and Models pages still explain what they can offline."""

from __future__ import annotations

import socket

import pytest

from digitlab.ui import launch

pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def dead_api(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DIGITLAB_API_URL", f"http://127.0.0.1:{port}")
    from digitlab.core.config import get_settings

    get_settings.cache_clear()
    yield f"http://127.0.0.1:{port}"
    get_settings.cache_clear()


def _text(at) -> str:
    parts = []
    for kind in ("error", "warning", "info", "markdown", "caption", "title", "subheader", "header"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


@pytest.mark.parametrize("page", ["draw", "number", "compare", "history", "models", "about"])
def test_every_page_survives_the_api_being_down(dead_api, page, monkeypatch, caplog):
    """The page says plainly that predictions are unavailable and it retries; the API's address and how to start
    it go to the UI's log, once (a newcomer was shown "not reachable at http://127.0.0.1:8000", a tour)."""
    import threading

    from streamlit.testing.v1 import AppTest

    from digitlab.ui import common

    monkeypatch.setattr(common, "_AWAY_LOGGED", threading.Event())  # (not logged yet: earlier tests' outages were)
    at = AppTest.from_file(str(launch.APP), default_timeout=60)
    at.run()
    if page != "draw":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "Predictions are unavailable — retrying." in text, text[:1000]
    assert dead_api not in text and "127.0.0.1" not in text and "digitlab serve" not in text, text[:1000]
    logged = [r.getMessage() for r in caplog.records if r.name == "digitlab.ui"]
    port = dead_api.rsplit(":", 1)[1]
    assert len(logged) == 1 and f"not reachable at {dead_api}" in logged[0], logged
    assert f"Not started yet? Run `DIGITLAB_PORT={port} digitlab serve` for the API." in logged[0]  # the API it expects
    assert "make run" not in logged[0]  # (it starts an API and a UI on the default ports, not this UI's API)
    # a page with a canvas keeps what is on it (Number keeps the writing: it was told "The page reconnects by itself."),
    # said of what is to come while nothing is drawn (a fresh visit heard "Your drawing stays on the canvas.")
    kept = {"draw": "What you draw stays on the canvas.", "compare": "What you draw stays on the canvas.",
            "number": "What you write stays on the canvas."}.get(page, "The page reconnects by itself.")  # fmt: skip
    (banner,) = [str(e.value) for e in at.error if "Predictions are unavailable" in str(e.value)]
    assert kept in banner and ("canvas" in banner) is (page in ("draw", "number", "compare")), banner
    if page == "models":
        assert "Support vector machine" in text  # the packaged descriptions, offline
        assert "version 1.0.0" not in text  # (the package's, said of models that may not exist)
        assert "Live figures need the prediction service; meanwhile" in text
        assert "service (The" not in text  # (the banner's sentence was said again, in brackets)
    if page == "history":  # the service's absence said once, by the banner
        assert text.count("unavailable") == 1 and "comes back with the prediction service" in text, text
    if page == "about":
        assert "MNIST" in text and "From your drawing to a digit" in text


def test_beside_an_api_that_digitlab_run_is_starting_the_page_says_it_is_starting(dead_api, monkeypatch):
    """`digitlab run` starts the UI seconds before the API answers: a newcomer opening it then was told in red
    that the service is not reachable and to run `digitlab serve` (its port taken by the API starting)."""
    import threading

    from streamlit.testing.v1 import AppTest

    from digitlab.core.config import get_settings
    from digitlab.ui import common

    monkeypatch.setenv("DIGITLAB_API_STARTED_BESIDE", "1")
    get_settings.cache_clear()
    monkeypatch.setattr(common, "API_ANSWERED", threading.Event())  # (not answered yet: earlier tests' sessions saw it)
    at = AppTest.from_file(str(launch.APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "The prediction service is starting" in text and not at.error, text[:600]
    assert "digitlab serve" not in text and "not reachable" not in text


def test_a_new_visitor_while_the_api_is_away_later_is_not_told_it_is_starting(dead_api, monkeypatch):
    """Once the API has answered this UI, a visitor arriving while it is frozen or gone was still told it "is
    starting (it loads the models)" and to wait a few seconds (a tour, session 45): it is said to be away."""
    import threading

    from streamlit.testing.v1 import AppTest

    from digitlab.core.config import get_settings
    from digitlab.ui import common

    monkeypatch.setenv("DIGITLAB_API_STARTED_BESIDE", "1")
    get_settings.cache_clear()
    monkeypatch.setattr(common, "API_ANSWERED", threading.Event())
    common.API_ANSWERED.set()  # (another visitor's session saw it answer)
    at = AppTest.from_file(str(launch.APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "is starting" not in text and "Predictions are unavailable" in text and at.error, text[:600]


def test_a_pen_the_colour_of_the_background_is_said_so():
    """#111111 on #000000: a 4 filling the canvas was told to "draw a larger digit"."""
    from types import SimpleNamespace

    from digitlab.ui.ink import nothing_drawn

    dark = SimpleNamespace(pen_color="#111111", background_color="#000000")
    assert "nearly the colour of the background" in nothing_drawn(dark)
    plain = SimpleNamespace(pen_color="#1F2340", background_color="#FFFFFF")
    assert nothing_drawn(plain) == "Nothing to recognise yet: draw a larger digit."
    assert nothing_drawn(SimpleNamespace(pen_color=None, background_color="#FFFFFF")).startswith("Nothing")
