"""The API's documentation pages work without internet (issue 13.3): headless chromium opens /docs and
/redoc with every request to another host than 127.0.0.1 aborted, and the operations are rendered."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser


def _offline_page(browser):
    """A page whose requests to any host but 127.0.0.1 are aborted; returns (page, the aborted URLs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    blocked: list[str] = []

    def route(r):
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return context, page, blocked


def test_swagger_ui_renders_the_operations_offline(browser, api_server):
    context, page, blocked = _offline_page(browser)
    try:
        page.goto(f"{api_server.url}/docs")
        predict = page.locator(".opblock-summary-path", has_text="/api/v1/predict").first
        predict.wait_for()
        assert page.locator(".opblock").count() >= 8  # every route, not an error box
        assert page.locator(".errors-wrapper").count() == 0
        predict.click()  # an operation opens: the UI is live, not just painted
        page.locator(".opblock-body").first.wait_for()
        assert blocked == [], f"/docs asked other hosts for {blocked}"
    finally:
        context.close()


def test_redoc_renders_the_operations_offline(browser, api_server):
    context, page, blocked = _offline_page(browser)
    try:
        page.goto(f"{api_server.url}/redoc")
        page.get_by_text("/api/v1/predict").first.wait_for(state="attached")
        assert page.locator("[data-section-id^='operation/']").count() >= 8
        # ReDoc's one outside request is its "powered by" logo, which hides itself when it cannot load
        logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
        assert [url for url in blocked if url != logo] == [], f"/redoc asked other hosts for {blocked}"
    finally:
        context.close()
