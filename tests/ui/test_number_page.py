"""The Number page end to end: write a 3-digit number stroke by stroke on the wide canvas, see it read
(boxes, one 28x28 image per digit), confirm it, and find it in History (and once in the store)."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect
from ui_browser import (
    CANVAS,
    SCREENSHOTS,
    Touch,
    canvas_box,
    mouse_stroke,
    no_traceback,
    open_page,
    screenshot,
    wait_idle,
)
from ui_strokes import DIGITS

pytestmark = pytest.mark.browser

NUMBER = '[data-testid="dl-number"]'


def wait_reading(page, text: str, timeout: int = 20_000) -> None:
    """Until the page shows `text` as the reading."""
    page.wait_for_function(
        "([sel, text]) => { const el = document.querySelector(sel); return el && el.getAttribute('data-text') === text; }",
        arg=[NUMBER, text], timeout=timeout,
    )  # fmt: skip


def square(box: dict, i: int) -> dict:
    """The `i`-th square of the wide canvas' `box`, from the left: where `write_number` writes its `i`-th digit."""
    side = box["height"]
    return {"x": box["x"] + i * side, "y": box["y"], "width": side, "height": side}


def write_number(page, text: str) -> None:
    """Each digit in its own 280 px square of the 840 x 280 canvas, one stroke at a time."""
    box = canvas_box(page)
    assert box["width"] >= 3 * box["height"] - 2, box
    for i, char in enumerate(text):
        cell = square(box, i)
        for stroke in DIGITS[int(char)]:
            mouse_stroke(page, stroke, cell)
            wait_idle(page, settle=0.2)  # read as you write: every stroke is a new reading


def test_write_read_confirm_then_history(desktop, ui_server, api_server):
    page = desktop
    open_page(page, ui_server.url, "number", ready=CANVAS)
    write_number(page, "307")

    wait_reading(page, "307")
    expect(page.get_by_text("What was read: one box per digit")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone's width: "307" broke into "30" over "7"
    wait_idle(page)
    lines = page.evaluate("""() => { const el = document.querySelector('[data-testid="dl-number-text"]');
        return el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight); }""")
    assert lines < 1.5, lines
    seen = page.locator('[data-testid="dl-digits-seen"] img')
    expect(seen).to_have_count(3)  # each digit's 28x28 input: in one row (columns stacked one per row here)
    tops = {round(seen.nth(i).bounding_box()["y"]) for i in range(3)}
    assert len(tops) == 1, tops
    page.set_viewport_size({"width": 1280, "height": 800})
    wait_idle(page)
    expect(page.locator('[data-testid="stImage"] img')).to_have_count(1)  # the boxes
    expect(seen).to_have_count(3)
    lefts = [seen.nth(i).bounding_box()["x"] for i in range(3)]  # side by side from the left, not spread over
    assert lefts[2] - lefts[0] < 400 and lefts[0] < 400, lefts  # the page's width (Draw's rule pushed each right)
    saved = page.get_by_text(re.compile(r"Saved to the history as number #\d+"))
    expect(saved).to_be_visible()
    number_id = int(re.search(r"#(\d+)", saved.inner_text()).group(1))

    answer = page.locator('input[aria-label="What did you write? (digits only)"]')
    expect(answer).to_have_value("307")  # offered: the reading
    answer.fill("307")
    page.get_by_role("button", name="Confirm").click()
    saved_text = re.compile(r"Saved: you wrote 307\. The reading was right\.")
    expect(page.locator('[data-testid="stMainBlockContainer"]').get_by_text(saved_text)).to_be_visible()
    expect(page.get_by_test_id("stToastText").get_by_text(saved_text)).to_be_visible()  # (the line is below the fold)
    no_traceback(page)

    # one record for the drawing, however many strokes were read live
    items = httpx.get(f"{api_server.url}/api/v1/numbers", timeout=5).json()["items"]
    mine = [n for n in items if n["id"] == number_id]
    assert len(mine) == 1 and mine[0]["true_text"] == "307" and mine[0]["correct"] is True
    assert mine[0]["source"] == "ui" and len(mine[0]["digits"]) == 3
    assert sum(1 for n in items if n["session_id"] == mine[0]["session_id"]) == 1

    open_page(page, ui_server.url, "history")
    expect(page.get_by_role("heading", name="Numbers")).to_be_visible()
    table = page.locator('[data-testid="stTable"]').filter(has_text="307").first
    expect(table).to_be_visible()
    expect(table).to_contain_text("✓")
    no_traceback(page)


def test_a_reading_during_a_database_outage_is_queued_and_confirmed(desktop, ui_server, api_server, ui_workdir):
    """The database is away (another process holds the SQLite file's write lock): an uploaded number is read
    and queued in the API's spool; "What did you write?" is queued too (by the reading's uid); once the
    lock is gone the number is stored once, with the answer."""
    import sqlite3
    import time

    from drawn_numbers import draw_number

    page = desktop
    before = {n["id"] for n in httpx.get(f"{api_server.url}/api/v1/numbers", timeout=5).json()["items"]}
    open_page(page, ui_server.url, "number", ready=CANVAS)
    holder = sqlite3.connect(ui_workdir / "ui.db", isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        page.get_by_text("…or upload a photo or scan of a written number").click()  # folded under the reading
        page.locator('.st-key-number_photo input[type="file"]').set_input_files(
            files=[{"name": "number.png", "mimeType": "image/png", "buffer": draw_number("42")}]
        )
        expect(page.get_by_text(re.compile(r"this reading is queued and saved when it is back"))).to_be_visible(
            timeout=30_000
        )
        text = page.locator(NUMBER).get_attribute("data-text")
        page.locator('input[aria-label="What did you write? (digits only)"]').fill("42")
        page.get_by_role("button", name="Confirm").click()
        later = re.compile(r"Saved later: you wrote 42\.")  # (a toast says it too)
        expect(page.locator('[data-testid="stMainBlockContainer"]').get_by_text(later)).to_be_visible(timeout=20_000)
        no_traceback(page)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + 60
    while httpx.get(f"{api_server.url}/health", timeout=5).json()["spool"] and time.monotonic() < deadline:
        time.sleep(0.5)
    items = httpx.get(f"{api_server.url}/api/v1/numbers", timeout=5).json()["items"]
    # (other tests of the session read and confirm numbers too: test_keyboard's "42" was counted as this one's)
    mine = [n for n in items if n["id"] not in before and n["true_text"] == "42" and n["text"] == text]
    assert len(mine) == 1 and mine[0]["source"] == "upload" and mine[0]["correct"] is (text == "42"), items[:3]


def test_a_stroke_during_an_outage_keeps_the_reading_before_it(desktop, ui_server, api_server):
    """The API goes away while a number is written: one more stroke left only "not answering" on the page. The
    reading before it stays, said to be of the writing before that stroke; once back, the whole writing is read."""
    page = desktop
    open_page(page, ui_server.url, "number", ready=CANVAS)
    write_number(page, "30")
    wait_reading(page, "30")
    api_server.stop()
    try:
        expect(page.get_by_text("Predictions are unavailable — retrying.").first).to_be_visible(
            timeout=10_000
        )
        # the writing stays, and the notice says so (it said "The page reconnects by itself.")
        expect(page.locator(".st-key-dl_outage")).to_contain_text("Your writing stays on the canvas.")
        for stroke in DIGITS[7]:
            mouse_stroke(page, stroke, square(canvas_box(page), 2))
        earlier = page.get_by_test_id("dl-number-earlier")
        expect(earlier).to_be_visible(timeout=20_000)
        expect(earlier).to_contain_text("Before your latest stroke it was read as 30")
        expect(page.get_by_text(re.compile(r"not answering right now"))).to_be_visible()
        expect(page.locator('[data-testid="dl-digits-seen"] img')).to_have_count(2)
        no_traceback(page)
        screenshot(page, SCREENSHOTS / "number-outage-1280x800.png")
    finally:
        api_server.start()
    wait_reading(page, "307", timeout=30_000)
    expect(page.get_by_test_id("dl-number-earlier")).to_have_count(0)
    no_traceback(page)


#: The wide canvas' own scroll box (in the component's shadow root): where it is, how far it is scrolled.
SCROLLER_JS = """() => { for (const h of document.querySelectorAll('[data-testid="stBidiComponentIsolated"]')) {
    const s = h.shadowRoot && h.shadowRoot.querySelector('.dc-scroll');
    if (s) { const r = s.getBoundingClientRect();
      return {left: s.scrollLeft, scroll: s.scrollWidth, client: s.clientWidth, wide: s.hasAttribute('data-dl-wide'),
              y: r.y, height: r.height}; } } return null; }"""


def test_phone_the_wide_canvas_scrolls_under_a_finger_and_is_drawn_on_all_along(phone, ui_server, api_server):
    """390x844: the 840 px canvas is wider than the screen. It was cut off at the edge and nothing scrolled
    it (a finger on the canvas draws; a phone has no scrollbar to drag): its right 58 % was out of reach.
    Now a strip under it scrolls it sideways, and the right end of the canvas is drawn on with a finger."""
    page = phone
    open_page(page, ui_server.url, "number", ready=CANVAS)
    page.wait_for_function(f"() => ({SCROLLER_JS})() !== null", timeout=10_000)
    page.wait_for_timeout(600)  # (the app marks a canvas wider than its column within 200 ms)
    before = page.evaluate(SCROLLER_JS)
    assert before["scroll"] >= 840 and before["client"] <= 390 and before["left"] == 0, before
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # the page itself does not scroll
    expect(page.get_by_text("swipe here to move along the canvas")).to_have_count(0)  # (drawn by CSS: no text node)
    touch = Touch(page)
    y = before["y"] + before["height"] - 18  # in the strip, under the canvas
    for _ in range(3):  # a finger swipes right to left along the strip
        touch.cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": 350, "y": y}]})
        for i in range(1, 16):
            point = {"x": 350 - 20 * i, "y": y}
            touch.cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        touch.cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(300)
    after = page.evaluate(SCROLLER_JS)
    assert after["left"] >= after["scroll"] - after["client"] - 1, after  # at the right end
    assert after["wide"] and after["height"] > 280 + 30, after  # (the strip: room under the canvas)
    box = page.locator(CANVAS).first.bounding_box()
    assert box["x"] + box["width"] <= 390, box  # the canvas' right edge is on the screen
    cell = {"x": box["x"] + box["width"] - box["height"], "y": box["y"], "width": box["height"], "height": box["height"]}
    for stroke in DIGITS[7]:  # a 7 in the rightmost 280 px of the canvas
        touch.stroke(stroke, cell)
    wait_reading(page, "7")
    wait_idle(page)
    newest = httpx.get(f"{api_server.url}/api/v1/numbers", timeout=5).json()["items"][0]
    assert newest["text"] == "7" and newest["digits"][0]["box"][0] >= 560 - 40, newest["digits"]  # drawn at the right
    page.evaluate("() => window.scrollTo(0, 0)")
    screenshot(page, SCREENSHOTS / "number-scrolled-390x844.png")
    no_traceback(page)


def test_confirm_tapped_as_the_finger_lifts_is_saved_on_a_phone(phone, ui_server, api_server):
    """On a phone, Confirm tapped 0.2-0.3 s after the last stroke was lost (4 of 4 in a newcomer's tour, session
    32): held for that stroke's reading, the tap's touch events were cancelled, and a cancelled touch makes no
    click. The settle time is stretched (`window.__dlSettleMs`) so that the tap lands within it on any machine."""
    page = phone
    page.add_init_script("window.__dlSettleMs = 4000")
    open_page(page, ui_server.url, "number", ready=CANVAS)
    touch = Touch(page)
    box = canvas_box(page)
    cell = {"x": box["x"], "y": box["y"], "width": box["height"], "height": box["height"]}
    touch.stroke(DIGITS[4][0], cell)
    expect(page.locator(NUMBER)).to_have_count(1, timeout=20_000)
    wait_idle(page, settle=4.5)
    touch.stroke(DIGITS[4][1], cell)  # the 4's last stroke, and Confirm tapped at once
    confirm = page.get_by_role("button", name="Confirm")
    confirm.tap()
    saved = re.compile(r"Saved: you wrote \d+\.")
    expect(page.locator('[data-testid="stMainBlockContainer"]').get_by_text(saved)).to_be_visible(timeout=20_000)
    text = page.locator(NUMBER).get_attribute("data-text")
    items = httpx.get(f"{api_server.url}/api/v1/numbers", timeout=5).json()["items"]
    assert items[0]["true_text"] == text, items[0]  # the whole 4's reading, confirmed
    no_traceback(page)


def test_portrait_tablet_the_canvas_fits_its_column_and_is_drawn_on_all_along(browser, ui_server, api_server):
    """820x1180 (a portrait tablet): the 840 px canvas sat in a 788 px column, its right 52 px reached through the
    swipe strip, under "On a phone, turn it sideways…". From 641 to 999 px wide it is drawn smaller (CSS `zoom`), whole
    in its column, with no strip and no phone advice; a finger's 7 at its right end is read there."""
    context = browser.new_context(viewport={"width": 820, "height": 1180}, device_scale_factor=1, is_mobile=True,
                                  has_touch=True)  # fmt: skip
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        open_page(page, ui_server.url, "number", ready=CANVAS)
        page.wait_for_function(f"() => ({SCROLLER_JS})() !== null", timeout=10_000)
        page.wait_for_timeout(600)  # (the app marks a canvas wider than its column within 200 ms)
        column = page.locator('[data-testid="stMainBlockContainer"] [data-testid="stVerticalBlock"]').first.bounding_box()
        box = page.locator(CANVAS).first.bounding_box()
        print(f"\n820x1180: column x {column['x']:.0f}-{column['x'] + column['width']:.0f}, canvas x "
              f"{box['x']:.0f}-{box['x'] + box['width']:.0f} ({box['width']:.0f}x{box['height']:.0f})")  # fmt: skip
        assert column["x"] <= box["x"] and box["x"] + box["width"] <= column["x"] + column["width"] + 0.5, (box, column)
        assert box["width"] >= 0.9 * 840 and abs(box["width"] - 3 * box["height"]) < 2, box  # smaller, same shape
        assert not page.evaluate(SCROLLER_JS)["wide"]  # no swipe strip
        expect(page.locator(".st-key-number_hint")).to_be_hidden()
        cell = {"x": box["x"] + box["width"] - box["height"], "y": box["y"], "width": box["height"], "height": box["height"]}
        touch = Touch(page)
        for stroke in DIGITS[7]:  # a 7 in the rightmost third of the canvas
            touch.stroke(stroke, cell)
        wait_reading(page, "7")
        wait_idle(page)
        newest = httpx.get(f"{api_server.url}/api/v1/numbers", timeout=5).json()["items"][0]
        assert newest["text"] == "7" and newest["digits"][0]["box"][0] >= 560 - 40, newest["digits"]  # drawn at the right
        no_traceback(page)
    finally:
        context.close()
