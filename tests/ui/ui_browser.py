"""Driving the Streamlit UI from playwright: open pages, draw with mouse or touch, time predictions."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from playwright.sync_api import Page, expect
from ui_strokes import DIGITS, points

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img" / "ui"
PREDICTION = '[data-testid="dl-prediction"]'
EMPTY = '[data-testid="dl-empty"]'
CANVAS = "canvas.upper-canvas"
#: A model the UI tests' API shows as still training (its files left out, its marker in place).
TRAINING_MODEL = "random_forest"

# Records, in the page, when the last stroke ended and when each new prediction card was painted.
PROBE_JS = """
(() => {
  if (window.__dl) return;
  const dl = window.__dl = {up: null, seen: {}, events: []};
  for (const type of ['mouseup', 'touchend', 'pointerup']) {
    document.addEventListener(type, () => { dl.up = performance.now(); }, true);
  }
  const scan = () => {
    for (const el of document.querySelectorAll('[data-drawing]')) {
      const key = el.getAttribute('data-drawing');
      if (dl.seen[key] === undefined) {
        dl.seen[key] = -1;
        requestAnimationFrame(() => { dl.seen[key] = performance.now(); dl.events.push({key, up: dl.up, t: dl.seen[key]}); });
      }
    }
  };
  new MutationObserver(scan).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['data-drawing']});
  scan();
})()
"""


#: the page's script run has ended: Streamlit's status widget shows only once a run has lasted 500 ms, so `wait_idle`
#: alone can return while a run goes on, its first elements shown and the rest not yet (a page's title is shown
#: with none of About's Tab stops after it: the first Tab stop test, once in a full run and once in ~35 runs beside
#: load, found the keyboard gone from "Skip to main content" out of the page, `document.body` focused)
RUN_ENDED = """() => document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state') === 'notRunning'"""


def open_page(page: Page, base_url: str, path: str = "", *, ready: str | None = None) -> None:
    page.goto(f"{base_url}/{path}")
    page.wait_for_selector('[data-testid="stAppViewContainer"]')
    if ready:
        page.wait_for_selector(ready, timeout=30_000)
    page.wait_for_function(RUN_ENDED, timeout=30_000)
    page.evaluate(PROBE_JS)
    wait_idle(page, settle=0.3)  # a stroke drawn while the canvas is still loading would be wiped


def wait_idle(page: Page, settle: float = 0.4, timeout: float = 20.0) -> None:
    """Until Streamlit has finished running the script (the status widget is gone) and a moment more."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.05)


def canvas_box(page: Page) -> dict:
    canvas = page.locator(CANVAS).first
    canvas.wait_for(state="visible", timeout=30_000)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box and box["width"] > 100, f"canvas not laid out: {box}"
    return box


def mouse_stroke(page: Page, stroke: list[tuple[float, float]], box: dict) -> None:
    pts = points(stroke, size=box["width"])
    page.mouse.move(box["x"] + pts[0][0], box["y"] + pts[0][1])
    page.mouse.down()
    for x, y in pts[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y)
    page.mouse.up()


class Touch:
    """Real touch events through the DevTools protocol (what a phone's finger produces)."""

    def __init__(self, page: Page):
        self.cdp = page.context.new_cdp_session(page)

    def stroke(self, stroke: list[tuple[float, float]], box: dict) -> None:
        pts = [(box["x"] + x, box["y"] + y) for x, y in points(stroke, size=box["width"])]
        send = self.cdp.send
        send(
            "Input.dispatchTouchEvent",
            {"type": "touchStart", "touchPoints": [{"x": pts[0][0], "y": pts[0][1]}]},
        )
        for x, y in pts[1:]:
            send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def draw_digit(page: Page, digit: int, *, touch: Touch | None = None, pause: float = 0.0) -> None:
    box = canvas_box(page)
    for stroke in DIGITS[digit]:
        if touch is not None:
            touch.stroke(stroke, box)
        else:
            mouse_stroke(page, stroke, box)
        if pause:
            time.sleep(pause)


def current_drawing(page: Page, selector: str = PREDICTION) -> str | None:
    el = page.locator(selector).first
    return el.get_attribute("data-drawing") if el.count() else None


def wait_new_prediction(
    page: Page, previous: str | None, selector: str = PREDICTION, timeout: float = 15.0
) -> str:
    """The `data-drawing` of the first prediction card that differs from `previous`."""
    page.wait_for_function(
        """([sel, prev]) => { const el = document.querySelector(sel);
             return el && el.getAttribute('data-drawing') && el.getAttribute('data-drawing') !== prev; }""",
        arg=[selector, previous],
        timeout=timeout * 1000,
    )
    return current_drawing(page, selector)


def stroke_latency_ms(page: Page, key: str, timeout: float = 5.0) -> float:
    """ms from the end of the stroke (pointer up) to the frame that showed the card for drawing `key`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = page.evaluate("k => window.__dl.events.filter(e => e.key === k)", key[:16])
        if events and events[0]["up"] is not None:
            return float(events[0]["t"] - events[0]["up"])
        time.sleep(0.02)
    raise AssertionError(f"no paint recorded for drawing {key}")


def shown_probabilities(page: Page) -> list[float]:
    """The probability chart's text alternative: 'Probabilities: 0 0.1%, 1 0.0%, …'."""
    label = page.locator('[aria-label^="Probabilities:"]').first
    expect(label).to_be_attached()
    text = label.get_attribute("aria-label").split(":", 1)[1]
    return [float(part.strip().split()[1].rstrip("%")) / 100 for part in text.split(",")]


def no_traceback(page: Page) -> None:
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "Exception" not in body, body[:2000]
    assert page.locator('[data-testid="stException"]').count() == 0


def screenshot(page: Page, path: Path, *, limit: int = 300_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    if path.stat().st_size > limit:  # rare: quantise to a palette, which keeps UI screenshots crisp
        from PIL import Image

        with Image.open(path) as im:
            im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    assert path.stat().st_size < limit, f"{path} is {path.stat().st_size} bytes"
    return path


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def click_tool(page: Page, prefix: str, name: str) -> None:
    """Click the page's own Undo / Clear button (not the canvas toolbar's icon buttons), once the app
    has been quiet long enough that no late canvas update races the click."""
    wait_idle(page, settle=0.4)
    button = page.locator(f".st-key-{prefix}_{name.lower()} button").first
    expect(button).to_be_enabled()
    button.click()
