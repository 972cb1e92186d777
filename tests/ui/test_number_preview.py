"""The Number page's preview: the part of the picture around the digits read, each under a numbered box."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("top", [0, 3, 60])
def test_each_number_is_over_its_box_never_on_the_ink(top):
    """Writing at the top edge of the canvas left no room above its boxes: the numbers went inside, on the ink
    (a 5 with a "1" on its top-left corner read as "15")."""
    from digitlab.ui.number_preview import boxed

    digits = [{"box": [100, top, 60, 90], "uncertain": False}, {"box": [200, top, 60, 90], "uncertain": True}]
    shown = np.asarray(Image.open(io.BytesIO(boxed(_png(840, 280), digits))).convert("RGB")).astype(int)
    for colour in ((0x2B, 0x8A, 0x3E), (0xD9, 0x48, 0x0F)):
        mine = (np.abs(shown - colour).sum(axis=2) < 60)
        rows = np.flatnonzero(mine.sum(axis=1) > 0.8 * 60)  # the box's top and bottom edges: long runs
        box_top, box_bottom = rows.min(), rows.max()
        label = np.flatnonzero(mine.any(axis=1) & (mine.sum(axis=1) < 0.5 * 60))  # the number's strokes
        inside = label[(label > box_top + 4) & (label < box_bottom - 4)]
        assert label.size and label.min() < box_top, (colour, box_top, label)  # over the box ...
        assert not np.any(mine[box_top + 6 : box_bottom - 6, :].sum(axis=1) > 8), inside  # ... nothing on the ink


def test_each_box_is_labelled_with_the_digit_read_there():
    """Position numbers over the boxes ("1 2 3 4" over 3819) were taken for the digits read (a newcomer's tour,
    session 34): each box shows its own digit."""
    from digitlab.ui.number_preview import boxed

    def shown(digit: int) -> np.ndarray:
        digits = [{"box": [100, 60, 60, 90], "uncertain": False, "digit": digit}]
        return np.asarray(Image.open(io.BytesIO(boxed(_png(840, 280), digits))).convert("L"))

    assert not np.array_equal(shown(7), shown(1))  # (a position number: "1" over both)
    assert np.array_equal(shown(7), shown(7))
