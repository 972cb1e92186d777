"""A newcomer's tour (session 49): what became of an answer to an unsure drawing on the screen, unscrolled, in a
laptop's short window (1366x768, 1280x720) and on a phone (390x844) whose "not sure" note is long."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from ui_browser import (
    CANVAS,
    PREDICTION,
    Touch,
    canvas_box,
    mouse_stroke,
    no_traceback,
    open_page,
    wait_idle,
    wait_new_prediction,
)
from ui_strokes import DIGITS, side_by_side

pytestmark = pytest.mark.browser

LINE = [[(0.1, 0.5), (0.9, 0.5)]]  # a dash: no digit, read unsure


def _answer_the_shown_digit(page, *, tap: bool) -> dict:
    """Click (tap) the pill of the digit the model said ("The model was right.": the longest "Saved" line), and
    return the box around the "Saved" line once it shows, the page unscrolled."""
    wait_new_prediction(page, None, PREDICTION)
    expect(page.locator('[data-testid="dl-unsure"]')).to_be_visible()
    wait_idle(page, settle=1.0)
    digit = page.locator('[data-testid="dl-digit"]').inner_text().strip()
    pill = page.locator('[class*="st-key-fb_"] button').filter(has_text=digit).first
    pill.tap() if tap else pill.click()
    saved = page.locator('[data-testid="stMainBlockContainer"]').get_by_text("Saved: you drew")
    expect(saved).to_be_visible()
    wait_idle(page, settle=0.5)
    assert page.evaluate("() => window.scrollY") == 0
    no_traceback(page)
    return saved.locator("xpath=ancestor::*[@data-testid='stAlert']").first.bounding_box()  # (its box, whole)


@pytest.mark.parametrize("width,height", [(1366, 768), (1280, 720)])
def test_short_window_unsure_drawing_saved_line_in_the_window(browser, ui_server, width, height):
    """After answering an unsure drawing (its note above the chart) "Saved: you drew …" was at y 725-784: under the
    bottom edge of a 1280x720 window, cut at 1366x768. Now 661-706 in both (Draw's bars shorter there)."""
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        open_page(page, ui_server.url, "", ready=CANVAS)
        box = canvas_box(page)
        for stroke in LINE:
            mouse_stroke(page, stroke, box)
        saved = _answer_the_shown_digit(page, tap=False)
        print(f"\n{width}x{height}: saved {saved['y']:.0f}-{saved['y'] + saved['height']:.0f}")
        assert saved["y"] + saved["height"] <= height, saved
    finally:
        context.close()


def test_phone_several_digits_note_leaves_the_saved_line_on_the_screen(phone, ui_server):
    """A "12" on Draw: its note ("… It looks like more than one digit: this page reads one at a time, …") took
    three lines and "Saved: you drew a 7. The model was right. Thank you!" two: y 804-857 of 844. Now 774-826."""
    page = phone
    open_page(page, ui_server.url, "", ready=CANVAS)
    touch, box = Touch(page), canvas_box(page)
    for stroke in side_by_side(DIGITS[1], DIGITS[2]):
        touch.stroke(stroke, box)
    saved = _answer_the_shown_digit(page, tap=True)
    print(f"\nphone 12: saved {saved['y']:.0f}-{saved['y'] + saved['height']:.0f}")
    assert saved["y"] + saved["height"] <= 844, saved
