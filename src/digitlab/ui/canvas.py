"""The drawing canvas (streamlit-drawable-canvas) with pen settings, shared by the Draw and Compare pages.

Undo and Clear are Streamlit buttons (the canvas' own toolbar is hidden: `common.NO_CANVAS_TOOLBAR`):
they hand the canvas a new `initial_drawing` (the strokes minus the last one, or
none), which it loads and sends straight back, so the prediction follows without a remount.

One drawing is one record: from an empty canvas to Clear (or Undo back to empty), the predictions after
each stroke carry the same drawing id, so the API keeps one stored record per drawing (and model), updated
with each stroke, instead of one per stroke.

Until the canvas reports the strokes Undo or Clear gave it, it still reports the strokes before (the run
the click starts comes first): that run shows the picture asked for (`settled`), not the one before with
its answer buttons (a click on them, on a canvas already blank, labelled the cleared drawing).

The drawing outlives the page: its strokes and the last `Drawing` are kept in the session. Back on the
page after another one (the canvas component starts empty then), the strokes are handed to the new
canvas as its `initial_drawing`, and the kept `Drawing` (so its answer, from the session's cache) is
shown until the canvas reports them back.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

import streamlit as st
from streamlit_drawable_canvas import st_canvas

CANVAS_SIZE = 280
DEFAULT_WIDTH = 18
DEFAULT_PEN = "#1F2340"
DEFAULT_BACKGROUND = "#FFFFFF"
PICTURES_KEPT = 64  #: pictures of earlier stroke lists kept per canvas, for the run right after an Undo


@dataclass(frozen=True)
class Drawing:
    png: bytes | None
    strokes: int
    pen_color: str
    background_color: str
    drawing_id: str | None = None  # the same for every stroke of one drawing (see the module docstring)

    @property
    def empty(self) -> bool:
        return self.strokes == 0 or not self.png

    @property
    def digest(self) -> str | None:
        return None if self.empty else hashlib.sha1(self.png).hexdigest()


def _drawing_id(prefix: str, inked: bool, background: str, png: bytes | None = None) -> str | None:
    """The current drawing's id: a new one when ink appears on an empty canvas (or on a new background),
    or when the picture changes after the person answered what it is (`common.close_drawing`); back on
    an answered picture (Undo), that picture's own id, so its record and answer serve again."""
    key = f"{prefix}_drawing_id"
    current = st.session_state.get(key)
    answered: dict = st.session_state.setdefault(f"{prefix}_answered", {})  # digest -> (id, background)
    spare = f"{prefix}_spare_id"  # the record of a changed picture that Undo left: the next change reuses it
    if not inked:
        st.session_state.pop(key, None)
        st.session_state.pop(spare, None)
        answered.clear()
        return None
    digest = hashlib.sha1(png).hexdigest() if png else None
    if digest in answered and answered[digest][1] == background:
        if current is not None and current not in answered.values():
            st.session_state[spare] = current
        st.session_state[key] = answered[digest]
        return answered[digest][0]
    follows_answer = current is not None and current in answered.values()
    if follows_answer:  # the answered picture changed: a new record,
        current = st.session_state.pop(spare, None)  # or the one left by an Undo (no unlabelled twin)
        if current is not None:
            st.session_state[key] = current
    if current is None or current[1] != background:
        current = (uuid.uuid4().hex, background)
        st.session_state[key] = current
    if follows_answer:  # the page says why this picture has no answer (`FOLLOWS_ANSWER`)
        st.session_state[f"{prefix}_follows_answer"] = current[0]
    return current[0]


#: Under the answer of a picture changed after the person answered: the answer stayed with the earlier
#: picture (a stroke added a moment after answering left no "Saved" line and no word of where it went). "Changed",
#: not "drew on": an Undo after answering takes a stroke away
FOLLOWS_ANSWER = (":material/info: You changed the drawing after answering: your answer stays with the picture you "
                  "answered, and this changed picture is a new drawing. Answer again if it is what you meant.")


def _set_drawing(prefix: str, objects: list, *, replacing: list | None = None) -> None:
    rev = st.session_state.get(f"{prefix}_rev", 0) + 1  # a new revision always reloads, even the same strokes
    st.session_state[f"{prefix}_rev"] = rev
    st.session_state[f"{prefix}_initial"] = {"objects": objects, "dlRev": rev}
    if replacing is not None:  # until the canvas reports `objects`, it reports `replacing` (`settled`)
        st.session_state[f"{prefix}_pending"] = (list(replacing), list(objects))


def _undo(prefix: str) -> None:
    objects = st.session_state.get(f"{prefix}_objects") or []
    _set_drawing(prefix, list(objects[:-1]), replacing=st.session_state.get(f"{prefix}_reported") or [])


def _clear(prefix: str) -> None:
    _set_drawing(prefix, [], replacing=st.session_state.get(f"{prefix}_reported") or [])


def adopt(prefix: str, source: str) -> None:
    """Load the `source` page's drawing into this canvas (Compare: "Compare the digit from Draw": a newcomer
    drew on Draw, opened Compare and found it blank), as Undo loads earlier strokes: its picture until the
    canvas reports them back, under a drawing id of its own (its own records, as if drawn again here)."""
    if not drawing_on(source):
        return
    objects = list(st.session_state[f"{source}_objects"])
    drawing: Drawing = st.session_state[f"{source}_drawing"]
    if len(objects) != drawing.strokes:  # (the canvas has strokes its picture does not show yet)
        return
    st.session_state.setdefault(f"{prefix}_pictures", {})[strokes_key(objects)] = drawing.png
    st.session_state[f"{prefix}_drawing_id"] = (uuid.uuid4().hex, drawing.background_color)
    _set_drawing(prefix, objects, replacing=st.session_state.get(f"{prefix}_reported") or [])


def drawing_on(prefix: str) -> bool:
    """Is there a drawing on that page's canvas (one `adopt` can take)?"""
    drawing: Drawing | None = st.session_state.get(f"{prefix}_drawing")
    return drawing is not None and not drawing.empty and bool(st.session_state.get(f"{prefix}_objects"))


def strokes_key(objects: list) -> str:
    return hashlib.sha1(json.dumps(objects, sort_keys=True, default=str).encode()).hexdigest()


def settled(
    reported: list, pending: tuple[list, list] | None, pictures: dict[str, bytes]
) -> tuple[list, bytes | None, bool]:
    """(strokes, their picture or None to take the canvas', still pending) after an Undo or Clear.

    While the canvas still reports the strokes it had before (`pending` = (before, asked for)), the strokes
    asked for are the drawing: none after Clear; after Undo, the earlier picture of those strokes when it was
    seen (`pictures`, by `strokes_key`); if it was not, the canvas' report as it is."""
    if pending is None:
        return reported, None, False
    before, wanted = pending
    if reported != before or reported == wanted:
        return reported, None, False  # the canvas has the new strokes (or was drawn on since)
    if not wanted:
        return [], None, True
    picture = pictures.get(strokes_key(wanted))
    return (wanted, picture, True) if picture is not None else (reported, None, True)


def pen_settings() -> tuple[int, str, str]:
    """Line width, pen and background colour: one set for the whole session (both canvases).

    The two colours sit side by side in a row that never stacks (two columns stacked on a phone, and the
    popover, opening under the Draw page's tools, ran past the bottom of a 390x844 screen: the Background
    swatch cut in half, its caption out of sight); `common.CSS` trims the popover's padding on a phone."""
    with st.popover("Pen", icon=":material/brush:", help="Line width, pen and background colour"):
        width = st.slider("Line width", 6, 40, DEFAULT_WIDTH, key="pen_width", persist_state="session")
        with st.container(horizontal=True, gap="large", key="pen_colours"):
            pen = st.color_picker("Pen colour", DEFAULT_PEN, key="pen_color", persist_state="session")
            bg = st.color_picker("Background", DEFAULT_BACKGROUND, key="bg_color", persist_state="session")
        st.caption("Changing the background starts a new drawing.")
    return int(width), pen, bg


def drawing_canvas(
    prefix: str, *, hint: str | None = "Draw one digit, 0–9", width: int = CANVAS_SIZE, height: int = CANVAS_SIZE
) -> Drawing:
    """Canvas + tool row (with `hint` above it, if any). Returns what is on the canvas after the last finished
    stroke."""
    canvas_width, canvas_height = width, height
    width = int(st.session_state.get("pen_width", DEFAULT_WIDTH))
    pen = st.session_state.get("pen_color", DEFAULT_PEN)
    bg = st.session_state.get("bg_color", DEFAULT_BACKGROUND)
    if hint:
        st.caption(hint)
    kept_objects = st.session_state.get(f"{prefix}_objects") or []
    kept: Drawing | None = st.session_state.get(f"{prefix}_drawing")
    if f"{prefix}_canvas" not in st.session_state and kept_objects:  # back from another page: a new canvas
        _set_drawing(prefix, kept_objects)
        st.session_state[f"{prefix}_restoring"] = len(kept_objects)
    with st.container(key=f"{prefix}_canvas_box"):
        result = st_canvas(
            stroke_width=width,
            stroke_color=pen,
            background_color=bg,
            initial_drawing=st.session_state.get(f"{prefix}_initial"),
            update_streamlit=True,
            height=canvas_height,
            width=canvas_width,
            drawing_mode="freedraw",
            return_image_data=True,
            key=f"{prefix}_canvas",
        )
    restoring = st.session_state.get(f"{prefix}_restoring")
    if result.json_data is None and restoring:  # the new canvas has not reported the strokes back yet
        objects = kept_objects
    else:
        objects = (result.json_data or {}).get("objects") or []
        st.session_state.pop(f"{prefix}_restoring", None)
    st.session_state[f"{prefix}_reported"] = objects  # what the canvas itself has, for Undo and Clear
    pictures: dict = st.session_state.setdefault(f"{prefix}_pictures", {})
    objects, picture, still = settled(objects, st.session_state.get(f"{prefix}_pending"), pictures)
    if not still:
        st.session_state.pop(f"{prefix}_pending", None)
    st.session_state[f"{prefix}_objects"] = objects
    with st.container(horizontal=True, gap="small", key=f"{prefix}_tools"):
        width, pen, bg = pen_settings()
        st.button("Undo", icon=":material/undo:", key=f"{prefix}_undo", on_click=_undo, args=(prefix,),
                  disabled=not objects, help="Remove the last stroke")  # fmt: skip
        st.button("Clear", icon=":material/ink_eraser:", key=f"{prefix}_clear", on_click=_clear, args=(prefix,),
                  disabled=not objects, help="Start again with an empty canvas")  # fmt: skip
    png = (picture or result.image_bytes) if objects else None
    if png is not None and picture is None and not still:
        pictures[strokes_key(objects)] = png
        while len(pictures) > PICTURES_KEPT:
            pictures.pop(next(iter(pictures)))
    if kept is not None and not kept.empty and len(objects) == kept.strokes and (restoring or png is None):
        # the same strokes, re-drawn on a new canvas that has not sent its picture yet (it sends one only
        # after a stroke): the same drawing, no new prediction, no new record. (The picture was taken as
        # "nothing drawn" at the first click after coming back, and the answer vanished.)
        drawing = kept
    elif kept is not None and not kept.empty and bg != kept.background_color and png is not None and (
        hashlib.sha1(png).hexdigest() == kept.digest
    ):  # the new background empties the canvas; this run still has the old picture: not a drawing
        drawing = Drawing(png=None, strokes=0, pen_color=pen, background_color=bg)
    else:
        drawing = Drawing(png=png, strokes=len(objects), pen_color=pen, background_color=bg,
                          drawing_id=_drawing_id(prefix, bool(objects), bg, png))  # fmt: skip
    st.session_state[f"{prefix}_drawing"] = drawing
    return drawing
