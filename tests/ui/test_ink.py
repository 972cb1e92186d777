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


def _in_a_corner(strokes, share: float):
    return [[(0.05 + share * x, 0.05 + share * y) for x, y in stroke] for stroke in strokes]


@pytest.mark.parametrize("digit", [1, 3, 8])
def test_a_digit_drawn_small_in_a_corner_is_small(digit):
    """A 3 drawn small in a corner, a blob at the canvas's pen width, was asked "an 8 or a 1?" (a newcomer's tour,
    session 31): the advice is to draw it larger. Digits drawn at a usual size are not small."""
    assert ink.drawn_small(canvas_png(_in_a_corner(DIGITS[digit], 0.2)))
    assert not ink.drawn_small(canvas_png(DIGITS[digit]))
    assert not ink.drawn_small(canvas_png(_in_a_corner(DIGITS[digit], 0.5)))
    assert not ink.drawn_small(canvas_png([])) and not ink.drawn_small(b"not an image") and not ink.drawn_small(None)
