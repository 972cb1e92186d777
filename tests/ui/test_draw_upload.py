"""The Draw page's photo upload end to end: a phone photo of a 7 on ruled paper is recognised like a
drawing (the same answer panel), the feedback is stored with the record (source "upload"), and a file that
is no image gets the API's one-line message, never a traceback."""

from __future__ import annotations

import re

import httpx
import pytest
from photo import photo_of_a_seven
from playwright.sync_api import expect
from ui_browser import (
    CANVAS,
    EMPTY,
    PREDICTION,
    SCREENSHOTS,
    current_drawing,
    draw_digit,
    no_traceback,
    open_page,
    screenshot,
    shown_probabilities,
    wait_idle,
    wait_new_prediction,
)

pytestmark = pytest.mark.browser

UPLOAD = "…or upload a photo or scan of a digit"


def upload(page, name: str, data: bytes, mime: str = "image/png") -> None:
    page.locator('[class*="st-key-draw_photo"] input[type="file"]').first.set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}]
    )


def test_a_phone_photo_over_the_api_limit_is_read(desktop, ui_server, api_server):
    """A 12-MP phone photo (a JPEG over the API's 5 MB) is made smaller by the UI and read: the uploader
    refused it, its reason out of sight, and the answer area kept saying "Draw a digit"."""
    data = photo_of_a_seven(3024, 4032, fmt="JPEG", noise=10)
    limit = httpx.get(f"{api_server.url}/health", timeout=10)  # (the API is up)
    assert limit.status_code == 200 and len(data) > 5_500_000
    page = desktop
    open_page(page, ui_server.url, "", ready=CANVAS)
    page.get_by_text(UPLOAD).click()
    upload(page, "IMG_0001.jpg", data, "image/jpeg")
    expect(page.locator(PREDICTION)).to_be_visible(timeout=30_000)
    wait_idle(page)
    assert page.locator('[data-testid="dl-digit"]').inner_text().strip() == "7"
    expect(page.get_by_text(re.compile(r"Saved to the history as #\d+"))).to_be_visible()
    no_traceback(page)


def test_upload_a_photo_on_the_draw_page(desktop, ui_server, api_server):
    page = desktop
    open_page(page, ui_server.url, "", ready=CANVAS)
    expect(page.locator(EMPTY)).to_be_visible()  # the canvas is the main thing; the upload is folded away
    page.get_by_text(UPLOAD).click()
    upload(page, "seven.png", photo_of_a_seven())

    answer = page.locator(PREDICTION)
    expect(answer).to_be_visible(timeout=20_000)
    wait_idle(page)
    assert page.locator('[data-testid="dl-digit"]').inner_text().strip() == "7"
    probs = shown_probabilities(page)
    assert len(probs) == 10 and max(range(10), key=lambda d: probs[d]) == 7, probs
    expect(page.get_by_text("What the model saw (28×28)")).to_be_visible()
    expect(page.get_by_text("This answer is for your uploaded photo")).to_be_visible()
    saved = page.get_by_text(re.compile(r"Saved to the history as #\d+"))
    expect(saved).to_be_visible()
    prediction_id = int(re.search(r"#(\d+)", saved.inner_text()).group(1))

    pill = page.locator('[class*="st-key-fb_"] button').filter(has_text=re.compile(r"^7$")).first
    pill.click()
    expect(page.get_by_text(re.compile(r"Saved: you drew a 7\. The model was right\."))).to_be_visible()
    no_traceback(page)
    screenshot(page, SCREENSHOTS / "draw-upload-1280x800.png")

    row = httpx.get(f"{api_server.url}/api/v1/predictions/{prediction_id}", timeout=5).json()
    assert row["source"] == "upload" and row["predicted_digit"] == 7
    assert row["drawn_digit"] == 7 and row["correct"] is True and row["has_image"] and row["has_processed"]

    # drawing on the canvas after the photo: the drawing is what the person means now (an answer then went
    # to the photo: a photo of a 7 stored as "you drew a 1"); the photo leaves its uploader
    photo_answer = current_drawing(page)
    draw_digit(page, 1)
    assert wait_new_prediction(page, photo_answer) != photo_answer
    wait_idle(page)
    expect(page.get_by_text("This answer is for your uploaded photo")).to_have_count(0)
    expect(page.locator('[data-testid="stFileUploaderFile"]')).to_have_count(0)
    feedback = page.locator('[class*="st-key-fb_"] button').filter(has_text=re.compile(r"^1$")).first
    feedback.click()
    expect(page.get_by_text(re.compile(r"Saved: you drew a 1"))).to_be_visible()
    assert httpx.get(f"{api_server.url}/api/v1/predictions/{prediction_id}", timeout=5).json()["drawn_digit"] == 7
    newest = httpx.get(f"{api_server.url}/api/v1/predictions", params={"page_size": 1}, timeout=5).json()["items"][0]
    assert newest["source"] == "ui" and newest["drawn_digit"] == 1
    page.locator('[data-testid="stButton"] button').filter(has_text="Clear").first.click()
    expect(page.locator(EMPTY)).to_be_visible()

    # a file that is no image (whatever its name says): the API's one-line message, no traceback
    upload(page, "not-a-photo.png", b"this is not an image at all" * 10)
    message = page.locator('[data-testid="stAlert"]').filter(has_text="upload a PNG, JPEG, WebP or BMP")
    expect(message).to_be_visible(timeout=20_000)
    lines = [line for line in message.inner_text().splitlines() if line.strip() not in ("", "warning")]
    assert lines == ["The file is not an image we can read: upload a PNG, JPEG, WebP or BMP image."], lines
    expect(page.locator(PREDICTION)).to_have_count(0)
    no_traceback(page)
    # a PDF: the uploader refused it by its name, kept it as a red chip with its reason out of sight, and
    # the previous file's message stayed in the answer area; now the API's reason replaces it
    upload(page, "report.pdf", b"%PDF-1.7\n" + b"0" * 500, "application/pdf")
    expect(page.locator('[data-testid="stAlert"]').filter(has_text="PDF")).to_be_visible(timeout=20_000)
    expect(page.locator('[data-testid="stAlert"]').filter(has_text="not an image we can read")).to_have_count(0)
    no_traceback(page)


def test_a_file_over_the_uploaders_limit_says_why_under_its_name(phone, ui_server):
    """A file over Streamlit's own limit (server.maxUploadSize, 25 MB) never reaches the page: the uploader keeps
    it as a red chip, and its reason was only for screen readers and a hover tooltip (a phone has none): the
    answer area still said "Draw a digit" and nothing said why. The reason now shows under the file's name."""
    page = phone
    open_page(page, ui_server.url, "", ready=CANVAS)
    page.get_by_text(UPLOAD).click()
    upload(page, "scan.png", b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024))
    reason = page.locator('[data-testid="stFileChip"][aria-invalid="true"] [role="alert"]').first
    expect(reason).to_contain_text("25.0MB", timeout=20_000)
    reason.scroll_into_view_if_needed()
    box = reason.bounding_box()
    assert box and box["width"] > 150 and box["height"] >= 10, box  # (it was clipped to a 1 px box)
    viewport = page.viewport_size
    assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], (box, viewport)
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (box, viewport)
    expect(page.locator(EMPTY)).to_be_visible()  # (the page never got the file)
    no_traceback(page)
