"""Issue 13, the pages as a user meets them: the answer, its chart and its 28×28 image always show one
result; a drawing survives a trip to another page; Compare says when it is unsure; models still training
are named on the page. (Same API and UI as test_browser.py; the outage notice is tested there.)"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect
from ui_browser import (
    CANVAS,
    EMPTY,
    PREDICTION,
    SCREENSHOTS,
    TRAINING_MODEL,
    canvas_box,
    click_tool,
    current_drawing,
    mouse_stroke,
    no_traceback,
    open_page,
    screenshot,
    wait_idle,
    wait_new_prediction,
)
from ui_strokes import DIGITS, NOT_A_DIGIT

pytestmark = pytest.mark.browser

# Checks, at every change of the page, that each answer block holds its own chart and image and that
# the digit it shows is the chart's highest bar; counts the charts on the page.
AGREEMENT_PROBE = """
(() => {
  const dl = window.__agree = {checks: 0, problems: [], maxCharts: 0, keys: new Set()};
  const check = () => {
    dl.checks++;
    dl.maxCharts = Math.max(dl.maxCharts, document.querySelectorAll('[data-testid="dl-chart"]').length);
    for (const answer of document.querySelectorAll('[data-testid="dl-prediction"]')) {
      const key = answer.getAttribute('data-drawing');
      dl.keys.add(key);
      const digit = answer.querySelector('[data-testid="dl-digit"]');
      const chart = answer.querySelector('[data-testid="dl-chart"]');
      const image = answer.querySelector('img');
      if (!digit || !chart || !image) { dl.problems.push(key + ': card without its own chart or image'); continue; }
      const probs = chart.getAttribute('aria-label').split(':')[1].split(',').map(s => parseFloat(s.trim().split(' ')[1]));
      const top = probs.indexOf(Math.max(...probs));
      if (String(top) !== digit.textContent.trim()) dl.problems.push(key + ': card ' + digit.textContent + ', chart ' + top);
    }
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
})()
"""


def nav(page, name: str, title: str) -> None:
    """Go to another page through the app's own navigation (no reload: the session stays)."""
    page.get_by_role("link", name=name, exact=True).first.click()
    expect(page.locator("h1").filter(has_text=title)).to_be_visible(timeout=15_000)
    wait_idle(page, settle=0.4)


def newest_id(api_url: str) -> int:
    items = httpx.get(f"{api_url}/api/v1/predictions", params={"page_size": 1}, timeout=5).json()["items"]
    return items[0]["id"] if items else 0


def test_answer_chart_and_image_always_show_one_result(desktop, ui_server):
    """Issue 13.4: stroke after stroke, the card's digit is the highest bar of the chart beside it, and the
    page never holds two charts, at any moment the DOM changes."""
    page = desktop
    open_page(page, ui_server.url, "", ready=CANVAS)
    page.evaluate(AGREEMENT_PROBE)
    previous = current_drawing(page)
    for digit in (4, 1, 8):
        box = canvas_box(page)
        for stroke in DIGITS[digit]:
            mouse_stroke(page, stroke, box)
            previous = wait_new_prediction(page, previous)
            wait_idle(page, settle=0.15)
        click_tool(page, "draw", "Clear")
        expect(page.locator(EMPTY)).to_be_visible()
    probe = page.evaluate("() => ({...window.__agree, keys: window.__agree.keys.size})")
    assert probe["keys"] >= 5 and probe["checks"] > 10, probe
    assert probe["problems"] == [], probe["problems"]
    assert probe["maxCharts"] == 1, probe
    no_traceback(page)


def test_drawing_and_answer_survive_navigation(desktop, ui_server, api_server):
    """Issue 13.5: Draw -> History -> Draw keeps the strokes on the canvas and the same answer, without
    sending the drawing again (no second record)."""
    page = desktop
    open_page(page, ui_server.url, "", ready=CANVAS)
    mouse_stroke(page, DIGITS[7][0], canvas_box(page))
    key = wait_new_prediction(page, current_drawing(page))
    wait_idle(page)
    saved = page.get_by_text(re.compile(r"Saved to the history as #\d+"))
    expect(saved).to_be_visible()
    text = saved.inner_text()
    last = newest_id(api_server.url)

    nav(page, "History", "History")
    expect(page.locator(CANVAS)).to_have_count(0)
    nav(page, "Draw", "Draw a digit")
    expect(page.locator(PREDICTION)).to_have_attribute("data-drawing", key, timeout=15_000)
    expect(page.get_by_text(text)).to_be_visible()
    expect(page.locator(".st-key-draw_undo button").first).to_be_enabled()  # the strokes are back on the canvas
    wait_idle(page, settle=0.8)
    assert current_drawing(page) == key and newest_id(api_server.url) == last
    # the first click back on the page answers the restored drawing (the answer vanished: "Draw a digit...")
    page.locator('[class*="st-key-fb_"] button').filter(has_text=re.compile(r"^4$")).first.click()
    expect(page.get_by_text(re.compile(r"Saved: you drew a 4"))).to_be_visible(timeout=15_000)
    expect(page.locator(PREDICTION)).to_have_attribute("data-drawing", key)
    expect(page.locator(EMPTY)).to_have_count(0)
    row = httpx.get(f"{api_server.url}/api/v1/predictions/{last}", timeout=5).json()
    assert row["drawn_digit"] == 4 and newest_id(api_server.url) == last
    # and the restored drawing goes on like any other: one more stroke, a new answer
    mouse_stroke(page, DIGITS[4][1], canvas_box(page))
    assert wait_new_prediction(page, key) != key
    click_tool(page, "draw", "Clear")
    expect(page.locator(EMPTY)).to_be_visible()
    no_traceback(page)


def _draw_not_a_digit(page) -> None:
    box = canvas_box(page)
    for stroke in NOT_A_DIGIT:
        mouse_stroke(page, stroke, box)
        wait_idle(page, settle=0.2)


def test_compare_and_draw_say_when_unsure(desktop, ui_server):
    """Issue 13.7: a '#' is no digit; Compare says it is not sure, as Draw does, in one plain sentence."""
    page = desktop
    open_page(page, ui_server.url, "compare", ready=CANVAS)
    _draw_not_a_digit(page)
    cards = page.locator('[data-testid="dl-compare-card"]')
    expect(cards.first).to_be_visible(timeout=15_000)
    wait_idle(page, settle=0.6)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text(re.compile(r"Not sure — is it an? \d.*may not be a digit at all"))).to_be_visible()
    card = cards.first.inner_text()
    assert re.search(r"Not sure · model's score \d+%", card) and "% sure" not in card, card  # "Not sure" first
    verdict = main.get_by_text(re.compile(r"All \d+ models (agree|say)|The only ready model|The models disagree"))
    assert "agree: it is" not in verdict.first.inner_text()  # not "they agree" above "every model is unsure"
    verdicts = main.locator('[data-testid="stAlert"]').all_inner_texts()
    assert verdicts and not any(re.search(r"\([^()]*\(", v) for v in verdicts), verdicts  # no nested parentheses
    page.mouse.move(0, 799)  # no hover toolbar in the picture
    wait_idle(page, settle=0.3)
    screenshot(page, SCREENSHOTS / "compare-unsure-1280x800.png")
    click_tool(page, "compare", "Clear")

    open_page(page, ui_server.url, "", ready=CANVAS)
    _draw_not_a_digit(page)
    expect(page.locator('[data-testid="dl-unsure"]')).to_contain_text(re.compile(r"Not sure — is it an? \d"))
    assert re.search(r"Not sure · model's score \d+%", page.locator(PREDICTION).inner_text())  # not "99% sure"
    click_tool(page, "draw", "Clear")
    no_traceback(page)


def test_models_still_training_are_named_on_the_page(desktop, ui_server):
    """Issue 13.8: a model in training is named on Draw and Compare (not only in the picker's tooltip)."""
    page = desktop
    for path in ("", "compare"):
        open_page(page, ui_server.url, path, ready=CANVAS)
        expect(page.get_by_text(re.compile(r"Still training: Random Forest"))).to_be_visible()
    open_page(page, ui_server.url, "models", ready="h1")
    expect(page.locator(f".st-key-model_card_{TRAINING_MODEL}").get_by_text("training…")).to_be_visible()
    no_traceback(page)
