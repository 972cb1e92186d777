"""The Draw page's advice for a drawing it is not sure of names the Number page only when the ink looks like
several digits side by side (`digitlab.ui.ink`): a smiley was told "a whole number goes on the Number page"."""

from __future__ import annotations

import pytest
from ui_strokes import DIGITS, NOT_A_DIGIT, SMILEY, canvas_png, side_by_side

from digitlab.ui import ink


@pytest.mark.parametrize("digit", range(10))
def test_one_digit_is_one_shape(digit):
    assert ink.shapes_side_by_side(canvas_png(DIGITS[digit])) == 1  # a 4 and an 8 in two strokes too
    assert not ink.several_digits(canvas_png(DIGITS[digit]))


@pytest.mark.parametrize("strokes", [SMILEY, NOT_A_DIGIT], ids=["smiley", "hash"])
def test_no_digit_drawn_as_one_shape_is_not_several_digits(strokes):
    assert ink.shapes_side_by_side(canvas_png(strokes)) == 1
    assert not ink.several_digits(canvas_png(strokes))


@pytest.mark.parametrize("number", ["12", "47", "00", "11", "307"])
def test_a_number_drawn_on_the_canvas_is_several_digits(number):
    png = canvas_png(side_by_side(*(DIGITS[int(c)] for c in number)))
    assert ink.shapes_side_by_side(png) == len(number)
    assert ink.several_digits(png)


def test_nothing_to_tell_is_not_several_digits():
    assert not ink.several_digits(canvas_png([]))  # a blank canvas
    assert not ink.several_digits(b"not an image")
    assert not ink.several_digits(None)
