"""Answers given while the prediction service is away, and the Number page's answer form, run by
Streamlit's AppTest against a stand-in API and canvas (`fake_api.py`): no browser, no server."""

from __future__ import annotations

import pytest
from fake_api import install, open_app, png

pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def fake(monkeypatch):
    from digitlab.core.config import get_settings

    api, canvas = install(monkeypatch)

    def open_page(page: str):
        at = open_app(monkeypatch, canvas, page)
        assert not at.exception, at.exception
        return at

    yield api, canvas, open_page
    get_settings.cache_clear()


def _texts(at) -> list[str]:
    out = []
    for kind in ("error", "warning", "info", "success", "markdown", "caption", "toast"):
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def _answer_texts(at) -> str:
    """What the page says, without the outage banner (whose monitor does retry)."""
    return "\n".join(t for t in _texts(at) if "Predictions are unavailable — retrying" not in t)


def _pills(at):
    (pills,) = [b for b in at.button_group if b.key and b.key.startswith("cmp_fb_")]
    return pills


def test_compare_answer_during_an_outage_is_sent_when_the_service_is_back(fake):
    api, canvas, open_page = fake
    canvas.set("compare", png())
    at = open_page("compare")
    assert "All 2 models agree" in "\n".join(_texts(at))

    api.up = False
    _pills(at).set_value(0).run()
    said = _answer_texts(at)
    assert "Not saved yet" in said and "retrying" not in said, said
    assert not api.feedback_calls

    api.up = True
    at.run()  # the health monitor finds the service back and reruns the page
    assert not at.exception, at.exception
    assert sorted(api.feedback_calls) == [(101, 0), (102, 0)], api.feedback_calls
    said = _answer_texts(at)
    assert "Saved with every model's answer" in said and "Not saved yet" not in said, said
    assert any("Your earlier answer is saved" in str(t.value) for t in at.toast), said
    at.run()
    assert len(api.feedback_calls) == 2  # sent once


def test_compares_agree_banner_turns_when_the_answer_says_every_model_was_wrong(fake):
    """Compare kept its green "All 2 models agree: it is a 0" beside "All 2 models were wrong" once the person
    said they drew a 7 (a tour, session 44); a right answer keeps it."""
    _api, canvas, open_page = fake
    canvas.set("compare", png())
    at = open_page("compare")
    assert [str(s.value) for s in at.success] == ["All 2 models agree: it is a **0**."]
    _pills(at).set_value(7).run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "All 2 models were wrong" in said and "agree" not in said, said
    assert "All 2 models said **0**, but you drew a **7**." in [str(w.value) for w in at.warning], said
    canvas.set("compare", png(shade=60))  # a new drawing, answered as what the models say
    at.run()
    _pills(at).set_value(0).run()
    said = _answer_texts(at)
    assert "All 2 models agree: it is a **0**." in said and "Every model was right" in said, said


def test_the_monitor_checks_once_when_the_service_goes_away(fake):
    """A frozen API costs HEALTH_TIMEOUT per check. The run the monitor asks for when the service goes away
    (or comes back) starts with the check that found it: it checked again, and the notice came 1.5 s later."""
    api, _canvas, open_page = fake
    at = open_page("about")
    checks = []
    real = api.health

    def health():
        checks.append(api.up)
        return real()

    api.health = health
    api.up = False
    at.run()  # the monitor finds the service away: the page runs again, with the notice
    assert not at.exception, at.exception
    assert checks == [False], checks
    assert "Predictions are unavailable — retrying" in "\n".join(_texts(at))
    api.up = True
    at.run()
    assert checks == [False, True], checks
    assert "Predictions are unavailable" not in "\n".join(_texts(at))


def test_the_page_learns_at_once_when_a_model_or_the_database_changes_state(fake):
    """The monitor runs alone every 2 s; the page around it (a card's "training…", Draw's "Still training") was
    drawn again only when the service went away or came back, from a model list kept 10 s: it said "training"
    minutes after training ended. Now the monitor runs the whole page again, the list asked afresh."""
    api, _canvas, open_page = fake
    api.model_states = {"cnn": "training"}
    at = open_page("draw")
    calls = []
    real = api.models

    def models():
        calls.append(1)
        return real()

    api.models = models
    at.run()
    assert calls == []  # nothing changed: the list kept
    api.model_states = {}  # trained
    at.run()
    assert not at.exception, at.exception
    assert len(calls) == 1, calls
    api.database = "unavailable"
    at.run()
    assert len(calls) == 2, calls
    at.run()
    assert len(calls) == 2, calls


def test_compare_clicking_the_chosen_answer_again_retries_it(fake):
    from digitlab.ui.client import ApiError

    api, canvas, open_page = fake
    canvas.set("compare", png())
    at = open_page("compare")
    api.fail_feedback = [ApiError("The database said no.", code="http_500", status=500)]
    _pills(at).set_value(3).run()
    said = _answer_texts(at)
    assert "Your answer was not saved: The database said no." in said and "retrying" not in said, said
    assert "Click your answer again to send it again" in said, said

    _pills(at).set_value(None).run()  # the chosen pill clicked again
    assert not at.exception, at.exception
    assert sorted(api.feedback_calls) == [(101, 3), (102, 3)], api.feedback_calls
    assert _pills(at).value == 3
    assert "Saved with every model's answer: you drew a **3**" in _answer_texts(at)


def _confirm(at):
    (button,) = [b for b in at.button if b.label == "Confirm"]
    button.click().run()
    assert not at.exception, at.exception


def _typed(at):
    (box,) = [t for t in at.text_input if t.label.startswith("What did you write?")]
    return box


def test_number_confirm_during_an_outage_is_sent_when_the_service_is_back(fake):
    api, canvas, open_page = fake
    canvas.set("number", png(840, 280), drawing_id="n1")
    at = open_page("number")
    assert _typed(at).value == "81"
    assert "Saved to the history as number #101" in _answer_texts(at)

    api.up = False
    at.run()  # the monitor finds the service away
    _confirm(at)
    said = _answer_texts(at)
    assert "Not saved yet: you wrote **81**" in said and "retrying" not in said, said
    at.run()
    said = _answer_texts(at)
    assert "Not saved yet" in said and "Saved to the history" not in said, said  # no success while unsaved

    api.up = True
    at.run()  # the monitor finds the service back and reruns the page: the answer is sent
    assert not at.exception, at.exception
    assert api.number_feedback_calls == [(101, "81")], api.number_feedback_calls
    said = _answer_texts(at)
    assert "Saved: you wrote **81**" in said and "Not saved yet" not in said, said
    assert any("Your earlier answer is saved" in str(t.value) for t in at.toast), said
    at.run()
    assert api.number_feedback_calls == [(101, "81")]  # once


def test_number_confirm_clicked_while_the_next_reading_cannot_come_is_kept(fake):
    """Confirm clicked just after a further stroke, the service away: the run read the stroke, failed, and drew no
    form, so the click was lost without a word; once back the page said "Saved to the history" with no answer."""
    api, canvas, open_page = fake
    first, second = png(840, 280), png(840, 280, shade=3)
    api.readings = {first: "71", second: "719"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    api.up = False
    at.run()  # the monitor finds the service away; the reading shown stays
    canvas.set("number", second, strokes=2, drawing_id="n1")  # a further stroke of the same drawing...
    _typed(at).set_value("719")
    _confirm(at)  # ...and Confirm before its reading came
    said = _answer_texts(at)
    assert "your answer (you wrote **719**) is saved with it" in said, said
    api.up = True
    at.run()
    assert not at.exception, at.exception
    assert api.number_feedback_calls == [(102, "719")], api.number_feedback_calls
    assert "Saved: you wrote **719**" in _answer_texts(at)
    at.run()
    assert api.number_feedback_calls == [(102, "719")]  # once


def test_number_keeps_its_last_reading_when_a_further_stroke_cannot_be_read(fake):
    """One more stroke while the service is away: the page said only "not answering", and the reading the
    person had just seen was gone. It stays, said to be of the writing before that stroke; a new writing has none."""
    api, canvas, open_page = fake
    first, second, other = png(840, 280), png(840, 280, shade=3), png(840, 280, shade=6)
    api.readings = {first: "71", second: "719", other: "5"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    assert "Before your latest stroke" not in _answer_texts(at)
    api.up = False
    at.run()
    canvas.set("number", second, strokes=2, drawing_id="n1")
    at.run()
    said = _answer_texts(at)
    assert "The prediction service is not answering right now" in said, said
    assert "Before your latest stroke it was read as <b>71</b>" in said, said
    canvas.set("number", other, drawing_id="n2")  # cleared, and a new writing begun
    at.run()
    said = _answer_texts(at)
    assert "not answering" in said and "Before your latest stroke" not in said, said
    api.up = True
    canvas.set("number", second, strokes=2, drawing_id="n1")
    at.run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "Before your latest stroke" not in said and 'data-text="719"' in said, said


def test_number_confirm_refused_stays_said_until_confirmed_again(fake):
    from digitlab.ui.client import ApiError

    api, canvas, open_page = fake
    canvas.set("number", png(840, 280), drawing_id="n1")
    at = open_page("number")
    real = api.number_feedback

    def refuse(reading, true_text, **_):  # (the client's signature: `not_number` too)
        api.number_feedback = real
        raise ApiError("The number is locked.", code="http_409", status=409)

    api.number_feedback = refuse
    _confirm(at)
    at.run()  # the next rerun (any click) still says it
    said = _answer_texts(at)
    assert "Your answer was not saved: The number is locked." in said and "Saved to the history" not in said, said
    assert "retrying" not in said
    _confirm(at)
    assert api.number_feedback_calls == [(101, "81")]
    assert "Saved: you wrote **81**" in _answer_texts(at)


def test_number_confirm_says_so_in_a_toast(fake):
    """The line under the form sits below the fold at 1280x800: the outcome shows where the click was."""
    api, canvas, open_page = fake
    canvas.set("number", png(840, 280), drawing_id="n1")
    at = open_page("number")
    _confirm(at)
    assert api.number_feedback_calls == [(101, "81")]
    toasts = [str(t.value) for t in at.toast]
    assert any("Saved: you wrote **81**. The reading was right." in t for t in toasts), toasts


def test_number_writing_on_after_confirming_says_where_the_answer_went(fake):
    """A stroke after Confirm is a new reading (`canvas.drawing_key`); the box quietly followed it, with no word
    that the answer stayed with the confirmed number (Draw says so)."""
    api, canvas, open_page = fake
    first, second = png(840, 280), png(840, 280, shade=3)
    api.readings = {first: "38", second: "386"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    _confirm(at)
    canvas.set("number", second, strokes=2, drawing_id="n2")
    at.session_state["number_follows_answer"] = "n2"  # what the canvas records for a picture changed after an answer
    at.run()
    said = _answer_texts(at)
    assert "The writing changed after you confirmed it: your answer stays with the number you confirmed" in said, said
    assert _typed(at).value == "386" and api.number_feedback_calls == [(101, "38")]


def test_number_confirming_the_saved_answer_again_sends_it_once(fake):
    """Enter in the box confirms (`keys`), and a click on Confirm after it must not save the answer twice."""
    api, canvas, _open_page = fake
    canvas.set("number", png(840, 280), drawing_id="n1")
    at = _open_page("number")
    _confirm(at)
    _confirm(at)
    assert api.number_feedback_calls == [(101, "81")], api.number_feedback_calls
    assert "Saved: you wrote **81**" in _answer_texts(at)
    assert any("Saved: you wrote **81**" in str(t.value) for t in at.toast)  # said again where the click was
    _typed(at).set_value("18").run()  # another answer is a correction: sent
    _confirm(at)
    assert api.number_feedback_calls == [(101, "81"), (101, "18")], api.number_feedback_calls


def test_number_a_typed_correction_outlives_the_next_reading(fake):
    api, canvas, open_page = fake
    first, second = png(840, 280), png(840, 280, shade=3)
    api.readings = {first: "558", second: "5580"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    assert _typed(at).value == "558"
    _typed(at).set_value("56 8").run()

    canvas.set("number", second, strokes=2, drawing_id="n1")  # one more stroke: a new reading
    at.run()
    assert not at.exception, at.exception
    assert _typed(at).value == "56 8"  # what the person typed, not the new reading
    said = _answer_texts(at)
    assert "5580" in said and "kept" in said.lower(), said
    _confirm(at)
    assert api.number_feedback_calls == [(102, "568")], api.number_feedback_calls


def test_number_a_typed_correction_outlives_a_visit_to_another_page(fake):
    """Typed 388 over the reading 38, a look at Models, back: the box said 38 again (Streamlit drops a
    widget's state while another page shows), so Confirm would have saved the reading."""
    api, canvas, open_page = fake
    first = png(840, 280)
    api.readings = {first: "38"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    _typed(at).set_value("388").run()
    at.switch_page("views/models.py")  # a look at Models (Streamlit drops the box's state meanwhile)
    at.run()
    at.switch_page("views/number.py")
    at.run()
    assert not at.exception, at.exception
    assert _typed(at).value == "388"
    _confirm(at)
    assert [text for _, text in api.number_feedback_calls] == ["388"], api.number_feedback_calls


def test_number_an_untouched_answer_follows_the_reading(fake):
    api, canvas, open_page = fake
    first, second = png(840, 280), png(840, 280, shade=3)
    api.readings = {first: "55", second: "558"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    assert _typed(at).value == "55"
    canvas.set("number", second, strokes=2, drawing_id="n1")
    at.run()
    assert _typed(at).value == "558"
    assert "kept" not in _answer_texts(at).lower()


def test_number_an_emptied_box_follows_the_next_reading(fake):
    """Emptied, Enter, one more stroke: the box stayed empty under "Kept what you typed, ****; the new reading
    is 391" (a newcomer's tour, session 27). Emptied is untouched: the next reading fills it; Enter on the
    emptied box still asks for digits and confirms nothing."""
    api, canvas, open_page = fake
    first, second = png(840, 280), png(840, 280, shade=3)
    api.readings = {first: "39", second: "391"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    _typed(at).set_value("").run()
    _confirm(at)
    assert "Type the number with digits only" in " ".join(str(w.value) for w in at.warning)
    assert _typed(at).value == "" and api.number_feedback_calls == []
    assert "kept" not in _answer_texts(at).lower() and "****" not in _answer_texts(at)
    canvas.set("number", second, strokes=2, drawing_id="n1")
    at.run()
    assert not at.exception, at.exception
    assert _typed(at).value == "391" and "kept" not in _answer_texts(at).lower(), _answer_texts(at)


def test_number_an_earlier_reading_sent_back_by_the_browser_is_no_correction(fake):
    """A run cut short by the next stroke offers a reading the browser never shows; the box then comes back
    with an earlier reading, which was taken for a typed correction: "Kept what you typed, 00" when nothing
    was typed, and Confirm would have saved 00 (a race the browser probe met with slow readings)."""
    api, canvas, open_page = fake
    shots = [png(840, 280, shade=k) for k in range(4)]
    api.readings = dict(zip(shots, ["0", "00", "811", "8111"], strict=True))
    canvas.set("number", shots[0], drawing_id="n1")
    at = open_page("number")
    for k in (1, 2):
        canvas.set("number", shots[k], strokes=k + 1, drawing_id="n1")
        at.run()
    assert _typed(at).value == "811"
    _typed(at).set_value("00")  # the browser's box still showed an earlier reading
    canvas.set("number", shots[3], strokes=4, drawing_id="n1")
    at.run()
    assert not at.exception, at.exception
    assert _typed(at).value == "8111" and "kept" not in _answer_texts(at).lower(), _answer_texts(at)


def test_number_full_width_digits_are_sent_as_digits(fake):
    """A full-width keyboard's "２０４８" passed the page's check, then the API refused it with a message
    about a pattern, and confirming again could never work."""
    api, canvas, open_page = fake
    first = png(840, 280)
    api.readings = {first: "2043"}
    canvas.set("number", first, drawing_id="n1")
    at = open_page("number")
    _typed(at).set_value("２０４８").run()
    _confirm(at)
    assert [text for _, text in api.number_feedback_calls] == ["2048"], api.number_feedback_calls


def test_number_a_reading_not_sure_says_so_as_draw_does(fake):
    """A smiley read as 63, flagged: the page said "94% sure of the whole number" (in orange) and advised
    writing larger; Draw says "Not sure", the score after it as the model's, and that it may be no digit."""
    api, canvas, open_page = fake
    first = png(840, 280)
    api.readings, api.unsure = {first: "63"}, True
    canvas.set("number", first, drawing_id="n1")
    said = _answer_texts(open_page("number"))
    assert "<b>Not sure</b> · model's score 90% for the whole number" in said and "sure of the whole" not in said
    assert "Not sure of all the digits" in said and "It may not be a number at all" in said, said


def _previews(monkeypatch) -> list[bytes]:
    """Every "What was read" preview the Number page shows, as the bytes handed to `st.image`."""
    import streamlit as st

    shown: list[bytes] = []
    real_image = st.image

    def spy(image, *args, **kwargs):
        if str(kwargs.get("caption", "")).startswith("What was read"):
            shown.append(image)
        return real_image(image, *args, **kwargs)

    monkeypatch.setattr(st, "image", spy)
    return shown


def test_number_photo_preview_is_turned_upright_by_its_exif(fake, monkeypatch):
    """A phone photo stored sideways (EXIF orientation 6): the API reads it upright and boxes the digits
    there; the preview is turned the same way, so the boxes sit on the digits."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    api, _canvas, open_page = fake
    upright = Image.new("RGB", (120, 300), "white")
    ImageDraw.Draw(upright).rectangle([35, 215, 65, 265], fill="black")  # the digit, low on the page
    stored = upright.rotate(90, expand=True)  # 300 wide as stored; EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    stored.save(out, format="JPEG", exif=exif)
    photo = out.getvalue()
    api.readings = {photo: "7"}
    api.boxes = {photo: [[20, 200, 60, 80]]}  # upright coordinates, around the digit
    shown = _previews(monkeypatch)
    at = open_page("number")
    at.file_uploader(key="number_photo").upload("seven.jpg", photo, "image/jpeg").run()
    assert not at.exception, at.exception
    assert shown, _answer_texts(at)
    with Image.open(io.BytesIO(shown[-1])) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    green = (np.abs(rgb - [0x2B, 0x8A, 0x3E]).sum(axis=2) < 40)
    dark = rgb.sum(axis=2) < 150
    gy, gx = np.nonzero(green)
    dy, dx = np.nonzero(dark & ~green)
    assert len(gy) and len(dy)
    assert gx.min() < dx.min() and dx.max() < gx.max() and gy.min() < dy.min() and dy.max() < gy.max()  # in its box


def test_number_preview_shows_the_digits_large(fake, monkeypatch):
    """A number written small in a corner of the 840 px canvas: the preview is the part around it, enlarged
    (the whole canvas, shrunk to a phone's width, left the number ~100 px wide)."""
    import io

    from PIL import Image

    api, canvas, open_page = fake
    picture = png(840, 280)
    api.readings = {picture: "301"}
    api.boxes = {picture: [[20, 30, 30, 50], [52, 32, 30, 48], [85, 30, 12, 50]]}
    canvas.set("number", picture, drawing_id="n1")
    shown = _previews(monkeypatch)
    open_page("number")
    assert shown
    with Image.open(io.BytesIO(shown[-1])) as im:
        width, height = im.size
    assert width >= 360  # enlarged: the digits span 77 px of the canvas
    assert width < 2 * height  # the digits and a margin, not the 3:1 empty canvas around them


def test_draw_an_unsure_photo_gets_photo_advice_and_the_number_page(fake):
    """A photo of a whole number on Draw: the advice was "draw one digit, large", with no word of Number."""
    api, canvas, open_page = fake
    api.unsure = True
    at = open_page("draw")
    at.file_uploader(key="draw_photo").upload("number_2025.png", png(400, 200), "image/png").run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert 'data-testid="dl-unsure"' in said, said
    assert "take the photo closer" in said and "<b>Number</b> page reads whole numbers" in said, said
    assert "draw one digit" not in said

    at.file_uploader(key="draw_photo").clear().run()  # a drawing keeps the drawing's advice
    canvas.set("draw", png())
    at.run()
    said = _answer_texts(at)
    assert "draw one digit, large" in said and "take the photo closer" not in said, said
    assert "<b>Number</b>" not in said, said  # (a blank picture: nothing that looks like a number)


def test_draw_a_busy_photo_gets_the_reason_not_take_it_closer(fake):
    """A large 7 photographed on a busy background: the API's reason ("busy all over … use a plain background")
    was replaced by "take it closer, the digit large", though the digit filled the photo already."""
    from digitlab.ui.client import ApiError

    api, _canvas, open_page = fake
    busy = ("No digit found: the picture is busy all over (noise or texture), nothing stands out from it. "
            "Use a plain background, the digit large and dark.")
    api.predict_error = ApiError(busy, code="empty_image", status=400)
    at = open_page("draw")
    at.file_uploader(key="draw_photo").upload("seven.png", png(400, 400), "image/png").run()
    said = _answer_texts(at)
    assert busy in said and "take it closer" not in said, said
    api.predict_error = ApiError("Nothing drawn: draw a digit.", code="empty_image", status=400)
    at.file_uploader(key="draw_photo").upload("blank.png", png(400, 401), "image/png").run()
    assert "take it closer" in _answer_texts(at)


def test_draw_advice_names_the_number_page_only_for_several_digits(fake):
    """A smiley's advice said "a whole number goes on the Number page"; a "12" drawn on Draw needs it."""
    from ui_strokes import DIGITS, SMILEY, canvas_png, side_by_side

    api, canvas, open_page = fake
    api.unsure = True
    canvas.set("draw", canvas_png(SMILEY), strokes=4)
    at = open_page("draw")
    said = _answer_texts(at)
    assert 'data-testid="dl-unsure"' in said, said
    assert "It may not be a digit at all: draw one digit, large." in said, said
    assert "Number" not in said, said

    canvas.set("draw", canvas_png(side_by_side(DIGITS[1], DIGITS[2])), strokes=2, drawing_id="d2")
    at.run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "It looks like several digits" in said, said
    assert "A whole number goes on the <b>Number</b> page" in said, said


def test_a_number_photo_reading_says_it_is_the_photo_s(fake):
    """On Number, an uploaded photo's reading showed right under the empty canvas, as if the canvas had
    been read (Draw says whose answer it is); a drawing's reading says nothing of a photo."""
    api, _canvas, open_page = fake
    photo = png(300, 120, shade=250)
    api.readings = {photo: "418"}
    at = open_page("number")
    at.file_uploader(key="number_photo").upload("418.png", photo, "image/png").run()
    assert not at.exception, at.exception
    texts = " ".join(str(m.value) for m in at.markdown)
    assert 'data-text="418"' in texts and "This reading is for your uploaded photo" in texts, texts[:500]


@pytest.mark.parametrize(("page", "uploader"), [("number", "number_photo"), ("draw", "draw_photo")])
def test_a_photo_is_sent_as_one_drawing(fake, page, uploader):
    """A photo went without a drawing id: sent again (its first answer lost to a timeout while the database
    was slow) it became a second record of the same photo (CI: "42" stored twice)."""
    api, _canvas, open_page = fake
    at = open_page(page)
    at.file_uploader(key=uploader).upload("n.png", png(300, 120, shade=250), "image/png").run()
    assert not at.exception, at.exception
    first = [f.get("drawing_id") for f in api.sent_fields if f.get("source") == "upload"]
    assert first and first[0] and set(first) == {first[0]}
    at.file_uploader(key=uploader).clear().run()
    at.file_uploader(key=uploader).upload("n.png", png(300, 120, shade=250), "image/png").run()  # uploaded again
    again = [f.get("drawing_id") for f in api.sent_fields if f.get("source") == "upload"][len(first):]
    assert again and again[0] != first[0]  # a new upload is a new drawing


def test_draw_advice_for_two_close_digits_asks_which_not_whether_it_is_a_digit(fake):
    """A clean 1 with a long flag, "Not sure — is it a 1 or a 7?", was told "It may not be a digit at all"."""
    from ui_strokes import DIGITS, canvas_png

    api, canvas, open_page = fake
    api.unsure = True
    api.probabilities = [0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0]
    canvas.set("draw", canvas_png(DIGITS[1]), strokes=1)
    at = open_page("draw")
    said = _answer_texts(at)
    assert "Not sure — is it a 1 or a 7?" in said, said
    assert "If it is one of them, say which below" in said and "not be a digit at all" not in said, said


def test_number_not_a_number_is_an_answer(fake):
    """Draw has "Not a digit"; Number took digits only, so a smiley read as "467" could be confirmed as 467 (its
    digits are learned from) or left unsaid. "Not a number" is said to the API as such, once, also after an outage."""
    api, canvas, open_page = fake
    canvas.set("number", png(840, 280), drawing_id="n1")
    at = open_page("number")
    (button,) = [b for b in at.button if b.label == "Not a number"]
    button.click().run()
    assert not at.exception, at.exception
    assert api.number_feedback_calls == [(101, "not a number")], api.number_feedback_calls
    said = _answer_texts(at)
    assert "Saved: it is **not a number**. Thank you!" in said and "It was read as" not in said, said
    at.text_input(key="num_truth_n1").set_value("")
    at.button(key="num_confirm_n1").click().run()  # Confirm with the box empty: the saved answer stays in sight
    said = _answer_texts(at)
    assert "Saved: it is **not a number**. Thank you!" in said, said
    assert any("Type the number with digits only" in str(w.value) for w in at.warning)
    assert api.number_feedback_calls == [(101, "not a number")], api.number_feedback_calls

    canvas.set("number", png(840, 281), drawing_id="n2")
    at.run()
    api.up = False
    at.run()
    (button,) = [b for b in at.button if b.label == "Not a number"]
    button.click().run()
    assert "Not saved yet: it is **not a number**" in _answer_texts(at)
    api.up = True
    at.run()
    assert api.number_feedback_calls == [(101, "not a number"), (102, "not a number")], api.number_feedback_calls
    assert any("Your earlier answer is saved: it is **not a number**" in str(t.value) for t in at.toast)


def test_compare_unsure_between_two_digits_asks_which(fake):
    """Compare said "it may not be a digit at all. Draw one digit, large." to a clean long-flag 1 that every model
    hesitated over between 1 and 7; a '#' (no runner-up named) still gets that advice."""
    api, canvas, open_page = fake
    api.unsure = True
    api.probabilities = [0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0]
    canvas.set("compare", png())
    at = open_page("compare")
    said = _answer_texts(at)
    assert "Not sure — is it a 1 or a 7? Here every model is unsure: if it is one of them, say which below" in said
    assert "Draw one digit, large" not in said, said
    api.probabilities = None
    canvas.set("compare", png(280, 281), drawing_id="d2")
    at.run()
    assert "it may not be a digit at all. Draw one digit, large." in _answer_texts(at)


def test_a_number_with_no_sure_digit_is_not_offered_as_the_answer(fake):
    """A big X read "2355" with every digit unsure was put into "What did you write?": one Enter stored the
    scribble as the number 2355 (learned from, exported). With no sure digit the box stays empty; with a sure
    one it follows the reading."""
    api, canvas, open_page = fake
    api.unsure = True
    canvas.set("number", png(840, 280), drawing_id="x1")
    at = open_page("number")
    assert _typed(at).value == ""
    api.unsure = False
    canvas.set("number", png(840, 280), drawing_id="x2")
    at.run()
    assert _typed(at).value == "81"


@pytest.mark.parametrize("database,said", [
    ("unavailable", "Database unavailable; predictions work.\n\nDrawings and answers are queued (12 waiting)."),
    ("catching_up", "The database is back: saving the queue.\n\nHistory fills in as it is saved (12 waiting)."),
])  # fmt: skip
def test_the_database_banner_says_when_the_queue_is_being_saved(fake, database, said):
    """After an outage the banner said "unavailable" until the queue was saved (~20 s under load). What waits is
    said as what `/health`'s `spool` counts: drawings, readings and answers (after one answer and two strokes on
    Number the banner said "Answers are queued (3 waiting)")."""
    api, _canvas, open_page = fake
    api.database, api.spool = database, 12
    at = open_page("draw")
    shown = " ".join(str(e.value) for e in (*at.warning, *at.info)).replace("**", "")
    assert said in shown, shown
    assert "Answers are queued" not in shown, shown


def test_an_answer_queued_in_an_outage_is_said_saved_once_the_database_has_it(fake):
    """"Saved later: ... the database is unavailable" stayed beside a database long back (a newcomer's tour,
    session 30). Once /health says the database is ok and no spool waits, the answer is stored: said so."""
    from digitlab.ui.client import FeedbackResult

    api, canvas, open_page = fake
    api.database, api.spool = "unavailable", 1
    api.feedback = lambda prediction, digit, not_digit=False: FeedbackResult(False, True, "queued")
    canvas.set("draw", png(shade=5))
    at = open_page("draw")
    (pills,) = [b for b in at.button_group if b.key and b.key.startswith("fb_")]
    pills.set_value(3).run()
    assert not at.exception, at.exception
    assert "Saved later: you drew" in _answer_texts(at)
    api.database, api.spool = "catching_up", 1  # back, the spool not yet replayed: still queued
    at.run()
    assert "Saved later: you drew" in _answer_texts(at)
    api.database, api.spool = "ok", 0
    at.run()
    said = _answer_texts(at)
    assert "Saved: you drew" in said and "Saved later" not in said, said


def test_compare_keeps_the_answer_picked_through_a_visit_to_another_page(fake):
    """Answer 8 on Compare, History, back: "Saved ... you drew an 8" was there but no answer highlighted (Draw
    kept it: a newcomer's tour, session 30). Nothing is sent again."""
    api, canvas, open_page = fake
    canvas.set("compare", png(shade=9))
    at = open_page("compare")
    _pills(at).set_value(8).run()
    assert len(api.feedback_calls) == 2
    at.switch_page("views/history.py").run()
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    assert _pills(at).value == 8
    assert len(api.feedback_calls) == 2


def test_compare_answer_with_a_record_deleted_meanwhile_labels_the_others(fake):
    """One of the drawing's records deleted in History: its 404 stopped the loop, the models after it got no answer
    and the page said "not saved" (a tour, session 30). The others are labelled and the page says how many were
    gone; with every record gone it says there is nothing left to label."""
    from digitlab.ui.client import ApiError

    api, canvas, open_page = fake
    canvas.set("compare", png())
    at = open_page("compare")
    api.fail_feedback = [ApiError("No prediction with that id.", code="prediction_not_found", status=404)]
    _pills(at).set_value(4).run()
    assert not at.exception, at.exception
    assert api.feedback_calls == [(102, 4)], api.feedback_calls
    said = _answer_texts(at)
    assert "Saved with the other models' answers: you drew a **4**" in said and "1 of the 2 models' records" in said, said
    assert "not saved" not in said.lower(), said

    canvas.set("compare", png(shade=9))
    at.run()
    gone = ApiError("No prediction with that id.", code="prediction_not_found", status=404)
    api.fail_feedback = [gone, gone]
    _pills(at).set_value(5).run()
    said = _answer_texts(at)
    assert "records were deleted" in said and "nothing left to label" in said, said


#: `canvas.FOLLOWS_ANSWER`'s words (importing the canvas outside a Streamlit run registers its component too early)
NEW_DRAWING = "You changed the drawing after answering: your answer stays with the picture you answered"


def test_compare_a_picture_changed_after_answering_says_it_is_a_new_drawing(fake):
    """A stroke after answering on Compare started a new drawing (its records unlabelled) with no word of it, where
    Draw says so (a tour, session 30)."""
    _api, canvas, open_page = fake
    canvas.set("compare", png(), drawing_id="c1")
    at = open_page("compare")
    _pills(at).set_value(2).run()
    assert NEW_DRAWING not in _answer_texts(at)
    canvas.set("compare", png(shade=5), strokes=2, drawing_id="c2")
    at.session_state["compare_follows_answer"] = "c2"  # what the canvas records for a picture changed after an answer
    at.run()
    assert not at.exception, at.exception
    assert NEW_DRAWING in _answer_texts(at) and _pills(at).value is None
    _pills(at).set_value(3).run()  # answered: the note gives way to the answer's own line
    said = _answer_texts(at)
    assert NEW_DRAWING not in said and "you drew a **3**" in said, said


def test_compare_reads_an_uploaded_photo_and_labels_its_records(fake):
    """Compare's one input was its canvas: it could not be used without a pointer, nor for a photo (a tour,
    session 30). A photo is read by every model, stored as an upload, and answered like a drawing; drawing on
    the canvas after it makes the drawing what is compared."""
    api, canvas, open_page = fake
    at = open_page("compare")
    photo = png(400, 300, shade=7)
    at.file_uploader(key="compare_photo").upload("seven.png", photo, "image/png").run()
    assert not at.exception, at.exception
    ((sent, fields),) = api.compared
    assert sent == photo and fields["source"] == "upload" and fields["filename"] == "seven.png", fields
    assert fields["drawing_id"].startswith("p") and "All 2 models agree" in "\n".join(_texts(at))
    _pills(at).set_value(7).run()
    assert sorted(api.feedback_calls) == [(101, 7), (102, 7)], api.feedback_calls
    assert "you drew a **7**" in _answer_texts(at)

    canvas.set("compare", png(), drawing_id="c1")  # a drawing after the photo: the drawing is compared now
    at.run()
    assert not at.exception, at.exception
    assert len(api.compared) == 2 and api.compared[-1][0] == png() and api.compared[-1][1].get("source", "ui") == "ui"
    assert _pills(at).value is None


def test_compare_the_same_picture_drawn_again_after_clear_is_a_new_drawing(fake):
    """Answered 4 (a mis-click), then Clear and the same picture again ("Compare the digit from Draw"): the page
    showed "Saved ... you drew a 4" with 4 picked, and the 9 clicked then was never stored (a tour, session 31).
    The new drawing's records get their own, unanswered question."""
    api, canvas, open_page = fake
    canvas.set("compare", png(), drawing_id="c1")
    at = open_page("compare")
    _pills(at).set_value(4).run()
    assert sorted(api.feedback_calls) == [(101, 4), (102, 4)]
    canvas.set("compare", None)  # Clear
    at.run()
    canvas.set("compare", png(), drawing_id="c2")  # the very same picture, a new drawing
    at.run()
    assert not at.exception, at.exception
    assert _pills(at).value is None and "you drew a **4**" not in _answer_texts(at)
    _pills(at).set_value(9).run()
    assert sorted(api.feedback_calls)[2:] == [(103, 9), (104, 9)], api.feedback_calls
    assert "you drew a **9**" in _answer_texts(at)


def test_draw_an_unsure_small_drawing_is_told_to_draw_larger(fake):
    """A 3 drawn small in a corner was asked "is it an 8 or a 1? If it is one of them, say which below" (a newcomer's
    tour, session 31): a small drawing is told to draw the digit large."""
    from ui_strokes import DIGITS, canvas_png

    api, canvas, open_page = fake
    api.unsure = True
    api.probabilities = [0.0, 0.4, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0]  # "an 8 or a 1?"
    small = [[(0.05 + 0.2 * x, 0.05 + 0.2 * y) for x, y in stroke] for stroke in DIGITS[3]]
    canvas.set("draw", canvas_png(small))
    said = "\n".join(_texts(open_page("draw")))
    assert "It is drawn small: draw one digit large" in said and "say which below" not in said, said
    canvas.set("draw", canvas_png(DIGITS[3]))  # the same answer for a digit of the usual size asks which
    said = "\n".join(_texts(open_page("draw")))
    assert "say which below" in said and "drawn small" not in said, said


def test_compare_says_why_a_lower_score_is_not_flagged_and_a_higher_one_is(fake):
    """A tour saw Random Forest at "41% score" unflagged beside Extra Trees "Not sure" at 42%. By design: the flag
    is each model's own call, its score weighed with a second opinion of its answer against its own threshold
    (the trees had named different digits); the page says so, and only when the cards look contradictory."""
    from fake_api import _probs

    from digitlab.ui.client import Comparison, Prediction

    api, canvas, open_page = fake

    def predict_all(png: bytes, **fields) -> Comparison:
        return Comparison([Prediction("cnn", 4, 0.41, _probs(4, 0.41), id=1, logged=True, uid="a"),
                           Prediction("svm", 9, 0.42, _probs(9, 0.42), id=2, logged=True, uid="b", uncertain=True)],
                          None)  # fmt: skip

    api.predict_all = predict_all
    canvas.set("compare", png())
    at = open_page("compare")
    captions = "\n".join(str(c.value) for c in at.caption)
    assert 'Why is SVM at 42% "Not sure" and CNN at 41% not?' in captions, captions
    assert "each model has its own threshold" in captions and "second opinion" in captions, captions

    del api.predict_all  # the plain stand-in: both models sure of a 0, nothing to explain
    canvas.set("compare", png(shade=60))
    at.run()
    assert not at.exception and not any("own threshold" in str(c.value) for c in at.caption), at.caption


def test_compare_unsure_never_gives_a_model_a_digit_it_did_not_say(fake):
    """The question is the models' probabilities together: "Not sure — is it a 3? Here Extra Trees is unsure" was said
    of Extra Trees' 5 (a tour). When an unsure model said a digit the question does not name, it is named with its own
    answer and the question is said to be all the models' together; when it said a named one, the line is as before."""
    from fake_api import _probs

    from digitlab.ui.client import Comparison, Prediction

    api, canvas, open_page = fake
    svm = 0.25  # SVM's 5, unsure: too unlikely in the average (0.13) to be named beside the 3

    def predict_all(png: bytes, **fields) -> Comparison:
        return Comparison([Prediction("cnn", 3, 0.9, _probs(3, 0.9), id=1, logged=True, uid="a"),
                           Prediction("svm", 5, svm, _probs(5, svm), id=2, logged=True, uid="b", uncertain=True)],
                          None)  # fmt: skip

    api.predict_all = predict_all
    canvas.set("compare", png())
    at = open_page("compare")
    said = _answer_texts(at)
    assert "Here SVM is unsure" not in said, said
    assert ("Not sure — SVM is unsure of its 5; all models together lean to a 3: it may not be a digit at all. Draw "
            "one digit, large.") in said, said  # fmt: skip

    # both unsure, each of its own digit
    cnn_unsure = Prediction("cnn", 3, 0.9, _probs(3, 0.9), id=3, logged=True, uid="c", uncertain=True)
    api.predict_all = lambda png, **fields: Comparison([cnn_unsure, predict_all(png).predictions[1]], None)
    canvas.set("compare", png(280, 281), drawing_id="d2")
    at.run()
    assert "Not sure — every model is unsure of its answer; all models together lean to a 3:" in _answer_texts(at)

    api.predict_all = predict_all
    svm = 0.6  # its 5 is named now ("is it a 3 or a 5?"): nothing is said of it that it did not say
    canvas.set("compare", png(shade=60))
    at.run()
    assert "Not sure — is it a 3 or a 5? Here SVM is unsure: if it is one of them, say which below" in _answer_texts(at)


def _draw_pills(at) -> list:
    return [b for b in at.button_group if b.key and b.key.startswith("fb_")]


def test_draw_a_stroke_after_an_answer_waiting_for_the_service_keeps_it_said(fake):
    """Draw a 3, the service goes away, click "3": "Not saved yet …". A small stroke then took that line off the
    page with the result and the pills, leaving only "not answering" (the answer was still sent when the service
    came back, with nothing on the page saying it waited). The waiting answer stays said under the notice."""
    api, canvas, open_page = fake
    api.probabilities = [0.02] * 3 + [0.82] + [0.02] * 6  # read as a 3
    canvas.set("draw", png(), drawing_id="d1")
    at = open_page("draw")
    api.up = False
    (pills,) = _draw_pills(at)
    pills.set_value(3).run()
    said = _answer_texts(at)
    assert "Not saved yet: you drew a **3**" in said, said
    canvas.set("draw", png(shade=4), strokes=2, drawing_id="d2")  # a small stroke: a new drawing after the answer
    at.run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "The prediction service is not answering right now" in said, said
    assert not _draw_pills(at), said  # nothing to answer: the changed drawing is not read yet
    assert "Not saved yet: you drew a **3** (the drawing as it was when you answered)" in said, said
    canvas.set("draw", None)  # cleared: the answer still waits
    at.run()
    assert "Not saved yet: you drew a **3**" in _answer_texts(at)
    assert not api.feedback_calls
    api.up = True
    at.run()  # the monitor finds the service back: the answer is sent, and said so
    assert not at.exception, at.exception
    assert [answer for _, answer in api.feedback_calls] == [3], api.feedback_calls
    said = _answer_texts(at)
    assert "Not saved yet" not in said, said
    assert any("Your earlier answer is saved" in str(t.value) for t in at.toast), said


def test_the_outage_notice_says_your_drawing_only_when_something_is_drawn(fake):
    """A fresh visit to Draw while the API is away heard "Your drawing stays on the canvas." over an empty canvas:
    what is to come is said then; once something is drawn, the drawing (by the monitor's next check)."""
    api, canvas, open_page = fake
    api.up = False
    at = open_page("draw")

    def notice() -> str:
        (said,) = [str(e.value) for e in at.error if "Predictions are unavailable" in str(e.value)]
        return said

    assert "What you draw stays on the canvas." in notice() and "Your drawing" not in notice(), notice()
    canvas.set("draw", png())
    at.run()
    at.run()  # (the monitor runs before the page: it sees the drawing at its next check)
    assert "Your drawing stays on the canvas." in notice(), notice()
    canvas.set("draw", None)  # cleared
    at.run()
    at.run()
    assert "What you draw stays on the canvas." in notice(), notice()


def test_compares_cards_say_right_or_wrong_once_answered(fake):
    """After "I drew a 7" the cards kept their 0s unmarked, as if nothing had been said (a newcomer's tour)."""
    _api, canvas, open_page = fake
    canvas.set("compare", png())
    at = open_page("compare")

    def marks() -> list[str]:
        cards = [str(m.value) for m in at.markdown if "dl-compare-card" in str(m.value)]
        assert len(cards) == 2, cards
        return ["right" if "dl-right" in c else "wrong" if "dl-wrong" in c else "" for c in cards]

    assert marks() == ["", ""]  # nothing said yet
    _pills(at).set_value(7).run()
    assert marks() == ["wrong", "wrong"]
    canvas.set("compare", png(shade=60))  # a new drawing: unmarked until answered
    at.run()
    assert marks() == ["", ""]
    _pills(at).set_value(0).run()
    assert marks() == ["right", "right"]


def test_draw_a_photo_s_answer_waiting_for_the_service_stays_said(fake):
    """A photo answered while the service is away: "Not saved yet …". Another photo uploaded then cannot be read, and
    the waiting answer was said no more (a drawing's is said under the notice: a newcomer's tour, session 47)."""
    api, _canvas, open_page = fake
    api.probabilities = [0.02] * 3 + [0.82] + [0.02] * 6  # read as a 3
    at = open_page("draw")
    at.file_uploader(key="draw_photo").upload("three.png", png(400, 400), "image/png").run()
    api.up = False
    (pills,) = _draw_pills(at)
    pills.set_value(3).run()
    assert "Not saved yet: you drew a **3**" in _answer_texts(at)
    at.file_uploader(key="draw_photo").upload("another.png", png(400, 401), "image/png").run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "The prediction service is not answering right now" in said and not _draw_pills(at), said
    assert "Not saved yet: you drew a **3** (the photo you answered)" in said, said
    api.up = True
    at.run()  # the monitor finds the service back: the answer is sent
    assert [answer for _, answer in api.feedback_calls] == [3], api.feedback_calls


def _kept(code: str):
    """The error `api_errors.label_kept` raises for an answer the API answers but cannot take yet."""
    from digitlab.ui.client import ApiUnavailable

    return ApiUnavailable("kept", code=code, status=404 if code == "record_pending" else 503)


_SERVICE_AWAY = "The prediction service is away"


def test_draw_an_answer_kept_while_the_database_is_away_says_so_not_that_the_service_is(fake):
    """An answer kept because the API answered 503 `too_many_waiting_labels` (its database away, too many answers
    waiting) said "The prediction service is away": the service answered; the header said the database was away."""
    api, canvas, open_page = fake
    api.database, api.spool = "unavailable", 30
    api.probabilities = [0.02] * 3 + [0.82] + [0.02] * 6  # read as a 3
    canvas.set("draw", png(), drawing_id="d1")
    at = open_page("draw")
    api.fail_feedback = [_kept("too_many_waiting_labels")] * 20  # (sent again at every run while the API is up)
    (pills,) = _draw_pills(at)
    pills.set_value(3).run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "Not saved yet: you drew a **3**. The database is away and many answers already wait for it" in said, said
    assert _SERVICE_AWAY not in said, said
    api.database, api.spool, api.fail_feedback = "ok", 0, []
    at.run()  # sent again: taken now
    assert [answer for _, answer in api.feedback_calls] == [3], api.feedback_calls
    assert "Not saved yet" not in _answer_texts(at)


def test_draw_a_kept_answer_says_the_service_is_away_once_it_is(fake):
    """Kept for the database, then the service itself goes away: it waits for the service (the outage wording)."""
    api, canvas, open_page = fake
    canvas.set("draw", png(), drawing_id="d1")
    at = open_page("draw")
    api.fail_feedback = [_kept("too_many_waiting_labels")] * 20  # (sent again at every run while the API is up)
    (pills,) = _draw_pills(at)
    pills.set_value(3).run()
    assert "The database is away" in _answer_texts(at)
    api.up = False
    canvas.set("draw", png(shade=4), strokes=2, drawing_id="d2")  # a stroke that cannot be read now
    at.run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert f"(the drawing as it was when you answered). {_SERVICE_AWAY}" in said, said
    assert "The database is away" not in said, said


def test_compare_an_answer_kept_before_its_drawing_is_stored_says_so(fake):
    """The 404 by uid (`record_pending`): the drawing is not stored yet; the service answered."""
    api, canvas, open_page = fake
    canvas.set("compare", png())
    at = open_page("compare")
    api.fail_feedback = [_kept("record_pending")] * 20
    _pills(at).set_value(0).run()
    assert not at.exception, at.exception
    said = _answer_texts(at)
    assert "Not saved yet: you drew a **0**. The database has not stored this picture yet" in said, said
    assert _SERVICE_AWAY not in said, said


def test_number_an_answer_kept_while_the_database_is_away_says_so(fake):
    api, canvas, open_page = fake
    canvas.set("number", png(840, 280), drawing_id="n1")
    at = open_page("number")
    sent = api.number_feedback

    def refused(reading, true_text, *, not_number=False):
        raise _kept("too_many_waiting_labels")

    api.number_feedback = refused
    _confirm(at)
    said = _answer_texts(at)
    assert "Not saved yet: you wrote **81**. The database is away" in said and _SERVICE_AWAY not in said, said
    api.number_feedback = sent
    at.run()  # sent again: taken now
    assert api.number_feedback_calls == [(101, "81")], api.number_feedback_calls
