"""The notices of the health monitor cover nothing on the page: "The prediction service is starting" (under `digitlab
run`) and the database's (unavailable, then saving what was queued) floated over the page's title and subtitle on a
wide screen and over the bottom of the window on a phone; like the API's absence they sit in the header, beside the
navigation. The UI talks to a stand-in API here (its /health says what the test wants), started only after the UI:
until then the service "is starting"."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from ui_browser import CANVAS, no_traceback, open_page

from conftest import Server, _clean_env, free_port

pytestmark = pytest.mark.browser

MODELS = [{"name": "cnn", "display_name": "CNN", "status": "ready", "metrics": {"mnist_test_accuracy": 0.99}}]


class StandIn(BaseHTTPRequestHandler):
    database = "ok"  # what /health says of the database

    def do_GET(self):
        body = {"/health": {"status": "ok", "models": {"cnn": "ready"}, "database": StandIn.database, "spool": 12},
                "/api/v1/models": MODELS}.get(self.path.split("?")[0])  # fmt: skip
        data = json.dumps(body if body is not None else {"detail": "not here"}).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # (quiet)
        pass


@pytest.fixture
def beside(ui_workdir):
    """A UI started as `digitlab run` starts it (`DIGITLAB_API_STARTED_BESIDE`), its API not answering yet;
    `start()` starts the stand-in API."""
    api_port = free_port()
    servers: list[ThreadingHTTPServer] = []

    def start() -> None:
        httpd = ThreadingHTTPServer(("127.0.0.1", api_port), StandIn)
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    with socket.socket() as taken:  # (the API's port, kept from the UI's pick until the UI is up)
        taken.bind(("127.0.0.1", api_port))
        port = free_port()
    env = _clean_env(DIGITLAB_API_URL=f"http://127.0.0.1:{api_port}", DIGITLAB_API_STARTED_BESIDE="1")
    ui = Server("ui-beside", ["ui", "--port", str(port)], env, ui_workdir, "/_stcore/health", port).start()
    ui.start_api = start
    yield ui
    ui.stop()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _apart(a: dict, b: dict) -> bool:
    return (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or a["y"] + a["height"] <= b["y"]
            or b["y"] + b["height"] <= a["y"])  # fmt: skip


def _covers_nothing(page, said: str) -> None:
    """The notice saying `said` is in the header, clear of the page's title, subtitle and canvas and of the
    navigation (the links, or the » menu on a phone)."""
    notice = page.locator(".st-key-dl_outage")
    expect(notice).to_contain_text(said, timeout=15_000)
    page.wait_for_timeout(300)
    over = notice.bounding_box()
    header = page.locator("header").first.bounding_box()
    title, sub = (page.locator(s).first.bounding_box() for s in ("h1", '[data-testid="stCaptionContainer"]'))
    print(f"\n{page.viewport_size['width']} px, {said!r}: notice y {over['y']:.0f}-{over['y'] + over['height']:.0f}, "
          f"header to {header['y'] + header['height']:.0f}, title y {title['y']:.0f}, subtitle to "
          f"{sub['y'] + sub['height']:.0f}")  # fmt: skip
    assert over["y"] >= 0 and over["y"] + over["height"] <= header["y"] + header["height"], (said, over, header)
    parts = [page.locator("h1").first, page.locator('[data-testid="stCaptionContainer"]').first,
             page.locator(CANVAS).first, *page.locator("header a:visible, header button:visible").all()]  # fmt: skip
    for part in parts:
        seen = part.bounding_box()
        assert seen is not None and _apart(seen, over), (said, seen, over)


@pytest.fixture
def tablet(browser):
    """A window from 768 to 879 px wide (a portrait tablet, a narrow window): the navigation's links beside the notice
    left it room for its first line only, its second ("Answers are queued (12 waiting)." then) hidden."""
    context = browser.new_context(viewport={"width": 768, "height": 1024}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _both_lines(page, said: str) -> None:
    """At 768, 820 and 879 px the notice saying `said` shows its two lines and covers nothing."""
    for width in (768, 820, 879):
        page.set_viewport_size({"width": width, "height": 1024})
        lines = page.locator(".st-key-dl_outage p")
        expect(lines.first).to_contain_text(said, timeout=15_000)
        expect(lines.nth(1)).to_be_visible()
        _covers_nothing(page, said)


def test_the_starting_and_database_notices_cover_nothing(beside, desktop, phone, tablet):
    pages = (desktop, phone)
    open_page(tablet, beside.url, ready=CANVAS)
    _both_lines(tablet, "The prediction service is starting")
    for page in pages:
        open_page(page, beside.url, ready=CANVAS)
        _covers_nothing(page, "The prediction service is starting")
    StandIn.database = "unavailable"
    beside.start_api()
    for page in pages:
        _covers_nothing(page, "Database unavailable")
    _both_lines(tablet, "Database unavailable")
    StandIn.database = "catching_up"
    for page in pages:
        _covers_nothing(page, "The database is back")
        no_traceback(page)
    _both_lines(tablet, "The database is back")
    no_traceback(tablet)
