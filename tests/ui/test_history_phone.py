"""History on a phone (390x844): the prediction log and the Numbers as cards whose every field is on the screen, and
the "Accuracy per model" axis from 0 % to 100 %. At 390 px the log's grid cut its fifth column's header ("right?" at x
374), the Numbers table showed "When (UTC)" as "Wh (UT" (both scrolled sideways, unsaid) and the accuracy axis showed
0 %, 40 %, 80 % under bars reaching 100 % (a newcomer's tour, session 47)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect
from test_browser import _seed_history
from ui_browser import no_traceback, open_page, wait_idle
from ui_strokes import DIGITS, points

pytestmark = pytest.mark.browser

WIDTH = 390


def _seed_number(api_url: str, text: str = "42") -> None:
    im = Image.new("RGB", (840, 280), "white")
    draw = ImageDraw.Draw(im)
    for i, ch in enumerate(text):
        for stroke in DIGITS[int(ch)]:
            draw.line([(x + 100 + 200 * i, y) for x, y in points(stroke)], fill=(31, 35, 64), width=18)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    httpx.post(f"{api_url}/api/v1/read", files={"image": ("n.png", buf.getvalue(), "image/png")},
               data={"true_text": text, "source": "ui"}, timeout=20).raise_for_status()  # fmt: skip


def _outside(page, selector: str) -> list:
    """The elements under `selector` whose box runs past the screen's edges or whose content is cut in them."""
    return page.evaluate(
        """([sel, width]) => [...document.querySelectorAll(sel)].map(e => {
             const b = e.getBoundingClientRect();
             return {text: e.innerText.slice(0, 60), left: b.left, right: b.right, cut: e.scrollWidth > e.clientWidth};
           }).filter(r => r.left < 0 || r.right > width || r.cut)""",
        [selector, WIDTH],
    )


def test_history_on_a_phone_shows_whole_rows_and_a_whole_axis(phone, ui_server, api_server):
    _seed_history(api_server.url)
    _seed_number(api_server.url)
    page = phone
    open_page(page, ui_server.url, "history", ready='[data-testid="dl-log-cards"] li')
    wait_idle(page, settle=1.0)
    main = page.locator('[data-testid="stMainBlockContainer"]')
    expect(main.locator('[data-testid="stDataFrame"]')).to_be_hidden()  # the grid: from 641 px up
    expect(main.locator(".st-key-hist_numbers table")).to_be_hidden()
    cards = main.locator('[data-testid="dl-log-cards"] li')
    assert cards.count() >= 10
    first = cards.first.inner_text()
    assert "you drew" in first and "right" in first and "(UTC)" in first and "#" in first, first
    numbers = main.locator('[data-testid="dl-number-cards"] li')
    expect(numbers.first).to_be_visible()
    assert "you wrote 42" in numbers.first.inner_text() and "No." in numbers.first.inner_text()
    assert _outside(page, '.dl-log-cards li, .dl-log-cards li *') == []
    assert page.evaluate("() => document.documentElement.scrollWidth") <= WIDTH

    # the accuracy axis: 0 % and 100 % shown, every label within the chart and the screen
    chart = main.locator('[data-testid="stVegaLiteChart"]').first
    chart.scroll_into_view_if_needed()
    wait_idle(page, settle=1.0)
    shown = chart.evaluate(
        """c => { const svg = c.querySelector('svg'); const r = svg.getBoundingClientRect();
             return [...svg.querySelectorAll('[aria-roledescription=axis] text')]
               .filter(t => getComputedStyle(t).opacity !== '0' && t.getAttribute('opacity') !== '0')
               .map(t => { const b = t.getBoundingClientRect();
                           return {text: t.textContent, inside: b.left >= r.left && b.right <= r.right + 0.5}; }); }"""
    )
    labels = [s["text"] for s in shown]
    assert "0%" in labels and "100%" in labels, labels
    assert all(s["inside"] for s in shown), shown
    no_traceback(page)

    page.set_viewport_size({"width": 1280, "height": 800})  # a desktop keeps the tables
    expect(main.locator('[data-testid="stDataFrame"]')).to_be_visible()
    expect(main.locator('[data-testid="dl-log-cards"]')).to_be_hidden()


def _log_top(page) -> dict:
    """The "Prediction log" heading's and the first card's top (y in the screen), and how many cards show."""
    return page.evaluate(
        """() => { const h = [...document.querySelectorAll('[data-testid="stHeading"]')]
                     .find(e => e.innerText.trim() === 'Prediction log');
                   const cards = document.querySelectorAll('[data-testid="dl-log-cards"] li');
                   return {heading: h ? h.getBoundingClientRect().top : null,
                           card: cards.length ? cards[0].getBoundingClientRect().top : null, cards: cards.length}; }"""
    )


def test_a_short_last_page_of_the_log_shows_on_a_phone(phone, ui_server, api_server):
    """The pager is under 25 cards: a short last page shortened the page under it, and its few cards were above the
    screen (the person saw empty space). After a page change the log's heading and first cards are on the screen."""
    total = httpx.get(f"{api_server.url}/api/v1/predictions", params={"page_size": 1}, timeout=10).json()["total"]
    if total < 26:
        _seed_history(api_server.url)
    page = phone
    open_page(page, ui_server.url, "history", ready='[data-testid="dl-log-cards"] li')
    wait_idle(page, settle=1.0)
    pager = page.locator('[data-testid="stPagination"]').first
    pager.scroll_into_view_if_needed()  # where a person's thumb is after reading the page's 25 cards
    wait_idle(page, settle=0.5)
    before = _log_top(page)
    last = page.locator('[data-testid="stPaginationPage"]').last
    last_no = int(last.inner_text())
    last.click()
    page.wait_for_function(
        """n => { const a = document.querySelector('[data-testid="stPaginationPageActive"]');
                  return a && a.innerText.trim() === String(n); }""", arg=last_no)  # fmt: skip
    wait_idle(page, settle=1.0)
    after = _log_top(page)
    print(f"\nphone 390x844, page 1 -> {last_no}: heading y {before['heading']:.0f} -> {after['heading']:.0f}, "
          f"first card y {before['card']:.0f} -> {after['card']:.0f} ({before['cards']} -> {after['cards']} cards)")
    assert after["cards"] < before["cards"], (before, after)  # a short last page
    assert 0 <= after["heading"] and after["card"] + 60 <= 844, after  # the heading and a first card on the screen
    page.locator('[data-testid="stPaginationPage"]').first.click()  # and back: the heading shown again
    page.wait_for_function(
        """() => document.querySelector('[data-testid="stPaginationPageActive"]')?.innerText.trim() === '1'""")
    wait_idle(page, settle=1.0)
    back = _log_top(page)
    assert back["cards"] == before["cards"] and 0 <= back["heading"] < 844, back

    page.set_viewport_size({"width": 1280, "height": 800})  # a desktop's pager stays put, and the page is not moved
    wait_idle(page, settle=0.5)
    pager.scroll_into_view_if_needed()
    y = pager.bounding_box()["y"]
    page.locator('[data-testid="stPaginationPage"]').last.click()
    page.wait_for_function(
        """n => document.querySelector('[data-testid="stPaginationPageActive"]')?.innerText.trim() === String(n)""",
        arg=last_no)  # fmt: skip
    wait_idle(page, settle=1.0)
    assert abs(pager.bounding_box()["y"] - y) < 2, (y, pager.bounding_box())
    no_traceback(page)
