"""What the pages say, checked without a browser (issue 13.8): "an 8", sizes as the training log prints
them, the trees' description, Compare's sentence without nested parentheses, the training-model line."""

from __future__ import annotations

import re

import pytest

from digitlab.models.registry import MODEL_SPECS
from digitlab.ui import charts, common, uploads


def test_an_eight_everywhere():
    assert common.a_digit(8) == "an 8" and common.a_digit(7) == "a 7" and common.a_digit(0) == "a 0"
    assert common.a_digit(8, bold=True) == "an **8**"
    probs = [0.0] * 10
    probs[8], probs[3] = 0.55, 0.4
    assert common.not_sure_sentence(probs) == "Not sure — is it an 8 or a 3?"
    probs[8], probs[3] = 0.9, 0.05
    assert common.not_sure_sentence(probs) == "Not sure — is it an 8?"


def test_sizes_read_like_the_training_log():
    """The training log prints `size_bytes / 1e6` with one decimal: the Models page shows the same."""
    for size in (7_512_345, 3_300_000, 513_900, 419_012):
        shown = common.size_text(size)
        if size >= 1_000_000:
            assert shown == f"{size / 1e6:.1f} MB"
        else:
            assert shown == f"{size / 1e3:.1f} kB"
    assert common.size_text(999) == "999 bytes" and common.size_text(None) == "—"


def test_tree_descriptions_say_how_they_are_served():
    for name in ("extra_trees", "random_forest"):
        assert "ONNX" not in MODEL_SPECS[name].description
        assert "numpy" in MODEL_SPECS[name].description


def test_not_ready_note_names_training_and_missing_models():
    models = [
        {"name": "cnn", "display_name": "CNN", "status": "ready"},
        {"name": "random_forest", "display_name": "Random Forest", "status": "training"},
        {"name": "svm", "display_name": "SVM (RBF kernel)", "status": "missing"},
    ]
    note = common.not_ready_note(models)
    assert "Still training: Random Forest; it joins as soon as it is ready." in note  # (was "they join")
    assert "Not trained: SVM (RBF kernel)" in note
    both = common.not_ready_note([*models[:2], {**models[2], "status": "training"}])
    assert "Still training: Random Forest, SVM (RBF kernel); they join as soon as they are ready." in both
    assert common.not_ready_note(models[:1]) is None


def test_compare_sentence_has_no_nested_parentheses():
    models = [{"name": n, "display_name": MODEL_SPECS[n].display_name} for n in MODEL_SPECS]
    sentence = common.disagreement({7: ["cnn", "svm"], 1: ["extra_trees"]}, models)
    assert sentence == ("The models disagree: **7** according to CNN (convolutional network) and SVM (RBF kernel); "
                        "**1** according to Extra Trees.")  # fmt: skip
    assert not re.search(r"\([^()]*\(", sentence)


def test_probability_bars_say_what_they_show():
    probs = [0.01, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0, 0.9, 0.07, 0.0]
    html = charts.probabilities_html(probs, 7)
    assert f'aria-label="{charts.probabilities_alt(probs)}"' in html
    assert len(re.findall(r'class="dl-bar( dl-win)?"', html)) == 10 and html.count("dl-win") == 1
    assert re.search(r'dl-bar dl-win" style="height:90\.0%"', html)


def test_a_low_or_flagged_score_is_never_called_sure():
    """"29% sure" read wrong beside a confident-looking verdict; "99% sure" beside "Not sure" contradicted it,
    and a big "100%" before "score, but unsure" still read as certainty: a flagged answer says "Not sure" first."""
    assert common.score_html(0.97, False) == "<b>97%</b> sure"
    assert common.score_html(0.29, False) == "<b>29%</b> score"
    assert common.score_html(0.999, True) == "<b>Not sure</b> · model's score 100%"


def test_a_large_photo_is_made_smaller_before_it_is_sent():
    """A phone photo over the API's 5 MB limit goes out as a JPEG of at most 1600 px, upright (EXIF);
    small files and files that are no image go as they are (the API says what is wrong with them)."""
    import io

    from photo import photo_of_a_seven
    from PIL import Image

    big = photo_of_a_seven(1200, 1600, fmt="JPEG", noise=10)  # (a 12-MP photo in the browser test)
    im = Image.open(io.BytesIO(big))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view": the camera was held sideways
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=98, exif=exif)
    data = out.getvalue() + b"\0" * max(0, uploads.PHOTO_SHRINK_ABOVE + 1 - len(out.getvalue()))
    shrunk, name = uploads._shrunk(data, "IMG_0001.JPG")
    assert name == "IMG_0001.jpg" and len(shrunk) < 5_000_000
    with Image.open(io.BytesIO(shrunk)) as small:
        assert small.format == "JPEG" and small.size == (1600, 1200)  # turned upright: wider than high
    assert uploads._shrunk(b"%PDF-1.7 not an image", "notes.pdf") == (b"%PDF-1.7 not an image", "notes.pdf")

    import numpy as np  # a large BMP saved from a transparent canvas keeps its alpha when shrunk

    rgba = np.zeros((1500, 1500, 4), np.uint8)
    rgba[400:1100, 700:800] = (0, 0, 0, 255)  # a black 1 on transparent black
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="BMP")
    assert len(out.getvalue()) > uploads.PHOTO_SHRINK_ABOVE
    shrunk, name = uploads._shrunk(out.getvalue(), "one.bmp")
    with Image.open(io.BytesIO(shrunk)) as small:
        assert name == "one.png" and small.mode == "RGBA"
        alpha = np.asarray(small)[..., 3]
        assert alpha.max() == 255 and alpha.min() == 0


def test_durations_read_as_a_person_says_them():
    assert [common.duration(s) for s in (4, 89.4, 607, 3599, 3900)] == ["4 s", "89 s", "10 min", "1 h", "1 h 5 min"]


FOR_THE_OPERATOR = "For whoever runs this app"
COMMANDS = re.compile(r"digitlab (train|learn|serve|evaluate|models|ui)\b|DIGITLAB_|admin token|`make ")


def _said_outside_the_operators_note(node, out: list[str]) -> list[str]:
    """Every element's text (its protobuf: values, labels, help) on the page, except under "For whoever runs this app"."""
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", "") == "expander" and getattr(child, "label", "") == FOR_THE_OPERATOR:
            continue
        if getattr(child, "children", None):
            _said_outside_the_operators_note(child, out)
        else:
            out.append(str(getattr(child, "proto", "")))
    return out


@pytest.mark.parametrize("page", ["draw", "compare", "number", "history", "models", "about"])
def test_a_person_using_the_app_is_told_no_command(monkeypatch, page):
    """The pages named `digitlab train`, `digitlab learn`, the admin token and DIGITLAB_TRAIN_LIMIT to every visitor
    (a newcomer's tour, session 47): they say it in a person's words, and the operator's how is folded under "For
    whoever runs this app". Here a UI without the admin token, a quick model, one not trained and one not measured."""
    import fake_api
    from fake_api import install, open_app

    from digitlab.ui.client import ApiError

    api, canvas = install(monkeypatch)
    monkeypatch.delenv("DIGITLAB_ADMIN_TOKEN", raising=False)
    missing = {"name": "svm_pca", "display_name": "SVM + PCA", "status": "missing", "metrics": {}}
    quick = {**fake_api.MODELS[1], "train_samples": 4_000}
    monkeypatch.setattr(fake_api, "MODELS", [fake_api.MODELS[0], quick, missing])
    api.model_states["svm_pca"] = "missing"
    api.locked = ApiError("Only the prediction service's administrator may see or do this.", code="unauthorized",
                          status=401)  # fmt: skip
    canvas.set(page, fake_api.png())
    at = open_app(monkeypatch, canvas, page)
    assert not at.exception, at.exception
    said = [s for s in _said_outside_the_operators_note(at.main, []) if COMMANDS.search(s)]
    assert not said, said
    if page in ("models", "history"):
        (operator,) = [e for e in at.expander if e.label == FOR_THE_OPERATOR]
        assert COMMANDS.search("\n".join(str(m.value) for m in operator.markdown))
