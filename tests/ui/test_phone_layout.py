"""Phone layout (390x844, touch): what a person needs is on the screen without scrolling. The Pen popover
fits under the tools (it ran past the bottom of the screen: the Background swatch half shown, its caption
out of sight), and Compare shows the verdict and "What did you draw?" right under the canvas' tools, then the
cards, before the chart and "What every model saw" (which pushed every card below the fold); Draw asks "What did
you draw?" right under the digit, before the chart, with every answer and the "Saved" line on the screen."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from ui_browser import (
    CANVAS,
    PREDICTION,
    SCREENSHOTS,
    Touch,
    canvas_box,
    draw_digit,
    no_traceback,
    open_page,
    screenshot,
    wait_idle,
    wait_new_prediction,
)
from ui_strokes import DIGITS, side_by_side

pytestmark = pytest.mark.browser

HEIGHT = 844
CAPTION = "Changing the background starts a new drawing."


def _top(page, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not on the page"
    return box["y"]


@pytest.mark.parametrize("path,prefix", [("", "draw"), ("compare", "compare"), ("number", "number")])
def test_phone_the_pen_popover_fits_the_screen(phone, ui_server, path, prefix):
    page = phone
    open_page(page, ui_server.url, path, ready=CANVAS)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.locator(f".st-key-{prefix}_tools [data-testid=stPopoverButton]:visible").tap()
    body = page.locator('[data-testid="stPopoverBody"]')
    expect(body).to_be_visible()
    caption = body.get_by_text(CAPTION)
    expect(caption).to_be_visible()
    wait_idle(page, settle=0.5)
    inner = body.bounding_box()
    assert inner["y"] >= 0 and inner["y"] + inner["height"] <= HEIGHT, inner  # the popover on the screen
    for element in (caption, body.locator('[data-testid="stColorPicker"]').last):  # the Background swatch too
        box = element.bounding_box()
        assert box["y"] >= inner["y"] and box["y"] + box["height"] <= min(HEIGHT, inner["y"] + inner["height"]), (
            box, inner)  # fmt: skip
    if prefix == "draw":
        screenshot(page, SCREENSHOTS / "draw-pen-390x844.png")
    no_traceback(page)


def test_phone_compare_shows_the_answers_before_the_rest(phone, ui_server):
    page = phone
    open_page(page, ui_server.url, "compare", ready=CANVAS)
    draw_digit(page, 4, touch=Touch(page))
    page.wait_for_selector('[data-testid="dl-compare-card"]')
    main = page.locator('[data-testid="stMainBlockContainer"]')
    chart = main.locator('[data-testid="stVegaLiteChart"]')
    seen = main.get_by_text("What every model saw")
    expect(chart).to_be_visible()
    expect(seen).to_be_visible()
    wait_idle(page, settle=1.0)
    page.evaluate("() => window.scrollTo(0, 0)")
    tools = _top(page, ".st-key-compare_tools")
    verdict = main.locator('[data-testid="stAlert"]').first.bounding_box()
    pills = main.locator('[data-testid="stButtonGroup"]').first.bounding_box()
    first_card = page.locator('[data-testid="dl-compare-card"]').first.bounding_box()
    assert tools < verdict["y"] < pills["y"] < first_card["y"], (tools, verdict, pills, first_card)
    # the verdict and "What did you draw?" on the screen, the cards starting on it: under the cards the question
    # began at y 1044, ~1 screen below the canvas (a newcomer's tour)
    assert pills["y"] + pills["height"] <= HEIGHT and first_card["y"] < HEIGHT, (pills, first_card)
    cards = page.locator('[data-testid="dl-compare-card"]')
    last_card = max(cards.nth(i).bounding_box()["y"] for i in range(cards.count()))
    order = {"What did you draw?": pills["y"], "last card": last_card, "chart": chart.bounding_box()["y"],
             "What every model saw": seen.bounding_box()["y"]}  # fmt: skip
    assert list(order.values()) == sorted(order.values()), order  # the answers first, then the rest
    no_traceback(page)


@pytest.fixture
def sideways(browser):
    """A phone turned sideways (844x390, touch)."""
    context = browser.new_context(viewport={"width": 844, "height": 390}, device_scale_factor=1, is_mobile=True,
                                  has_touch=True)  # fmt: skip
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def test_a_phone_turned_sideways_shows_the_whole_number_canvas(sideways, ui_server):
    """The Number page asks a phone to be turned sideways; at 844x390 its 840 px canvas still ran past the screen
    (x 16 to 856: the right end reached only by the swipe strip)."""
    page = sideways
    open_page(page, ui_server.url, "number", ready=CANVAS)
    box = page.locator(CANVAS).first.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 844, box
    assert page.locator(".dc-scroll[data-dl-wide]").count() == 0  # no "swipe here" strip
    expect(page.get_by_text("turn it sideways")).to_be_hidden()  # (it is turned: the line only took room)
    no_traceback(page)
    open_page(page, ui_server.url, "", ready=CANVAS)  # the other pages keep their margin (they had 2 px too)
    margin = page.locator('[data-testid="stMainBlockContainer"]').first.evaluate(
        "el => parseFloat(getComputedStyle(el).paddingLeft)")
    assert margin >= 8, margin
    page.set_viewport_size({"width": 683, "height": 384})  # a laptop at 200 % zoom: the canvas cannot fit; the
    open_page(page, ui_server.url, "number", ready=CANVAS)  # text touched the window's edge (a tour, session 45)
    margin = page.locator('[data-testid="stMainBlockContainer"]').first.evaluate(
        "el => parseFloat(getComputedStyle(el).paddingLeft)")
    assert margin >= 8, margin


@pytest.mark.parametrize("text", ["1", "307"])
def test_a_phone_turned_sideways_shows_the_reading_while_writing(sideways, ui_server, text):
    """Turned sideways (844x390) the reading came under the 280 px canvas, below the screen: out of sight while
    writing (a newcomer's tour, session 34). It floats at the top right now, above the canvas, on one line."""
    from test_number_page import write_number

    page = sideways
    open_page(page, ui_server.url, "number", ready=CANVAS)
    write_number(page, text)
    reading = page.locator('[data-testid="dl-number"]')
    expect(reading).to_be_attached()
    wait_idle(page, settle=0.5)
    page.evaluate("() => window.scrollTo(0, 0)")
    card, canvas = reading.bounding_box(), page.locator(CANVAS).first.bounding_box()
    header = page.locator('[data-testid="stHeader"]').bounding_box()
    assert 0 <= card["x"] and card["x"] + card["width"] <= 844, card  # on the screen
    assert header["y"] + header["height"] <= card["y"] + 1, (header, card)  # below the navigation, not under it
    assert card["y"] + card["height"] <= canvas["y"] + 1, (card, canvas)  # not over the canvas being written on
    assert card["height"] < 60, card  # one line
    expect(page.get_by_role("button", name="Confirm")).to_be_attached()  # the answer form stays below
    if text == "307":
        screenshot(page, SCREENSHOTS / "number-sideways-844x390.png")
    no_traceback(page)


def test_a_phone_turned_sideways_takes_you_to_the_question_from_the_reading(sideways, ui_server):
    """Sideways, the question and Confirm were under the canvas, below the screen, with no hint they were there
    (left since session 34): the floating reading links to them."""
    from test_number_page import write_number

    page = sideways
    open_page(page, ui_server.url, "number", ready=CANVAS)
    write_number(page, "307")
    confirm = page.get_by_role("button", name="Confirm")
    expect(confirm).to_be_attached()
    wait_idle(page, settle=0.5)
    assert confirm.bounding_box()["y"] > 390  # below the screen
    page.locator('[data-testid="dl-to-answer"]').click()
    expect(confirm).to_be_in_viewport()
    box, reading = confirm.bounding_box(), page.locator('[data-testid="dl-number"]').bounding_box()
    assert box["y"] + box["height"] <= 390 and reading["y"] + reading["height"] <= box["y"] + 1, (box, reading)
    no_traceback(page)



@pytest.mark.parametrize("size", [(1366, 768), (1280, 720)])
def test_a_laptop_window_shows_the_number_question_under_the_reading(browser, ui_server, size):
    """At 1366x768 the Number page put "What did you write?" at the window's bottom edge and Confirm under it (a
    newcomer's tour, session 31): the question and its buttons are on the screen without scrolling now. The
    phone's advice (turn it sideways, swipe) shows on a phone only."""
    from test_number_page import write_number

    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        open_page(page, ui_server.url, "number", ready=CANVAS)
        expect(page.get_by_text("turn it sideways")).to_be_hidden()
        write_number(page, "12")
        confirm = page.get_by_role("button", name="Confirm")
        expect(confirm).to_be_visible()
        expect(page.locator('[data-testid="dl-to-answer"]')).to_be_hidden()  # (a phone turned sideways's link)
        page.evaluate("() => window.scrollTo(0, 0)")
        for element in (confirm, page.get_by_role("button", name="Not a number"),
                        page.locator('input[aria-label="What did you write? (digits only)"]')):  # fmt: skip
            box = element.bounding_box()
            assert box is not None and box["y"] + box["height"] <= height, (size, box)
        no_traceback(page)
    finally:
        context.close()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True,
                                has_touch=True)  # fmt: skip
    try:
        page = phone.new_page()
        open_page(page, ui_server.url, "number", ready=CANVAS)
        expect(page.get_by_text("turn it sideways")).to_be_visible()
    finally:
        phone.close()


ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Mobile "
           "Safari/537.36")


@pytest.mark.parametrize("agent", [ANDROID, None], ids=["android", "narrow-window"])
def test_a_page_picked_in_the_narrow_screen_menu_closes_the_menu(browser, ui_server, agent):
    """On a narrow screen the page menu opens over the page, and it stayed open over the page picked (a
    newcomer's tour, session 34: Streamlit closes it for a browser that says it is a phone's), hiding the page picked."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=agent is not None,
                                  has_touch=agent is not None, **({"user_agent": agent} if agent else {}))  # fmt: skip
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        open_page(page, ui_server.url, ready=CANVAS)
        menu = page.locator('[data-testid="stSidebar"]')

        def menu_right() -> float:
            box = menu.bounding_box()
            return box["x"] + box["width"]

        page.locator('[data-testid="stExpandSidebarButton"]').click()
        page.wait_for_function("() => document.querySelector('[data-testid=stSidebar]').getBoundingClientRect().right > 200")
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Number").click()
        expect(page.get_by_role("heading", name="Write a number")).to_be_visible()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=stSidebar]').getBoundingClientRect().right <= 1", timeout=5000
        )
        title = page.get_by_role("heading", name="Write a number").bounding_box()
        assert title["x"] >= menu_right(), (title, menu_right())  # the page picked is in sight
        no_traceback(page)
    finally:
        context.close()


@pytest.mark.parametrize("path", ["", "compare"])
def test_a_tablet_or_a_narrow_window_shows_the_whole_canvas(browser, ui_server, path):
    """Between the phone's stacked layout (640 px) and about 1,000 px the canvas' column was narrower than its
    280 px canvas: a portrait tablet (768 px) showed 251 px of Compare's, with a "swipe here" strip, and Draw's
    was cut up to 740 px (a tour, session 45). The canvas' column keeps the canvas' width."""
    context = browser.new_context(viewport={"width": 768, "height": 1024}, device_scale_factor=1, is_mobile=True,
                                  has_touch=True)  # fmt: skip
    page = context.new_page()
    page.set_default_timeout(20_000)
    open_page(page, ui_server.url, path, ready=CANVAS)
    shown = {}
    for width in (641, 700, 768, 834, 880, 960, 1024):
        page.set_viewport_size({"width": width, "height": 1024})
        wait_idle(page, settle=0.8)
        shown[width] = page.locator(CANVAS).first.evaluate(
            "c => { const s = c.closest('.dc-scroll'); return [Math.round(s.getBoundingClientRect().width), "
            "s.hasAttribute('data-dl-wide'), document.documentElement.scrollWidth]; }")
    cut = {w: s for w, s in shown.items() if s[0] < 280 or s[1] or s[2] > w}
    assert not cut, f"canvas shown width, swipe strip, page width by window width: {cut}"
    no_traceback(page)
    context.close()


def _bottom(box: dict) -> float:
    return box["y"] + box["height"]


@pytest.mark.parametrize("shape", ["4", "unsure"])
def test_phone_draw_asks_what_you_drew_on_the_first_screen(phone, ui_server, shape):
    """Draw on a phone after drawing: the canvas, the result card and the top of the chart filled the screen;
    "What did you draw?" began at y 977 (pills 976-1074, ~313 px lower for an unsure drawing) and "Saved: you
    drew a 4" came below the screen too. The question and its outcome come right under the digit now, before the
    chart and the 28x28 image."""
    page = phone
    open_page(page, ui_server.url, "", ready=CANVAS)
    touch = Touch(page)
    if shape == "4":
        draw_digit(page, 4, touch=touch)
    else:  # two digits side by side: one digit's page is unsure of it
        box = canvas_box(page)
        for stroke in side_by_side(DIGITS[1], DIGITS[7]):
            touch.stroke(stroke, box)
    wait_new_prediction(page, None, PREDICTION)
    main = page.locator('[data-testid="stMainBlockContainer"]')
    pills = main.locator('[class*="st-key-fb_"]').first
    expect(pills).to_be_visible()
    wait_idle(page, settle=1.0)
    page.evaluate("() => window.scrollTo(0, 0)")
    digit = page.locator('[data-testid="dl-digit"]').bounding_box()
    chart = page.locator('[data-testid="dl-chart"]').bounding_box()
    question = pills.bounding_box()
    last = page.locator('[class*="st-key-fb_"] button').filter(has_text="Not a digit").first.bounding_box()
    print(f"\n{shape}: digit {digit['y']:.0f}-{_bottom(digit):.0f}, pills {question['y']:.0f}-{_bottom(question):.0f}, "
          f"chart {chart['y']:.0f}")
    if shape == "unsure":
        expect(page.locator('[data-testid="dl-unsure"]')).to_be_visible()
    assert _bottom(digit) < question["y"] < chart["y"], (digit, question, chart)  # the question under the digit
    assert _bottom(last) <= HEIGHT, last  # every answer on the screen: no scrolling to answer
    page.locator('[class*="st-key-fb_"] button').filter(has_text="1" if shape != "4" else "4").first.tap()
    saved = main.get_by_text("Saved: you drew")
    expect(saved).to_be_visible()
    wait_idle(page, settle=0.5)
    scrolled = page.evaluate("() => window.scrollY")
    box = saved.bounding_box()
    print(f"{shape}: saved {box['y']:.0f}-{_bottom(box):.0f} (scrolled {scrolled})")
    assert scrolled == 0, scrolled
    assert _bottom(box) <= HEIGHT, box  # what became of the answer, in sight (an unsure drawing's, under its note,
    # began 5 px below the screen, y 849-884: a tour)
    no_traceback(page)
