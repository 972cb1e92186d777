"""The drawing canvas (streamlit-drawable-canvas) with pen settings, shared by the Draw and Compare pages.

Undo and Clear are Streamlit buttons (the canvas' own toolbar only shows on mouse hover, so a phone
would never see it): they hand the canvas a new `initial_drawing` (the strokes minus the last one, or
none), which it loads and sends straight back, so the prediction follows without a remount.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st
from streamlit_drawable_canvas import st_canvas

CANVAS_SIZE = 280
DEFAULT_WIDTH = 18
DEFAULT_PEN = "#1F2340"
DEFAULT_BACKGROUND = "#FFFFFF"


@dataclass(frozen=True)
class Drawing:
    png: bytes | None
    strokes: int
    pen_color: str
    background_color: str

    @property
    def empty(self) -> bool:
        return self.strokes == 0 or not self.png

    @property
    def digest(self) -> str | None:
        return None if self.empty else hashlib.sha1(self.png).hexdigest()


def _set_drawing(prefix: str, objects: list) -> None:
    rev = st.session_state.get(f"{prefix}_rev", 0) + 1  # a new revision always reloads, even the same strokes
    st.session_state[f"{prefix}_rev"] = rev
    st.session_state[f"{prefix}_initial"] = {"objects": objects, "dlRev": rev}


def _undo(prefix: str) -> None:
    objects = st.session_state.get(f"{prefix}_objects") or []
    _set_drawing(prefix, list(objects[:-1]))


def _clear(prefix: str) -> None:
    _set_drawing(prefix, [])


def pen_settings() -> tuple[int, str, str]:
    """Line width, pen and background colour: one set for the whole session (both canvases)."""
    with st.popover("Pen", icon=":material/brush:", help="Line width, pen and background colour"):
        width = st.slider("Line width", 6, 40, DEFAULT_WIDTH, key="pen_width", persist_state="session")
        c1, c2 = st.columns(2)
        with c1:
            pen = st.color_picker("Pen colour", DEFAULT_PEN, key="pen_color", persist_state="session")
        with c2:
            bg = st.color_picker("Background", DEFAULT_BACKGROUND, key="bg_color", persist_state="session")
        st.caption("Changing the background starts a new drawing.")
    return int(width), pen, bg


def drawing_canvas(
    prefix: str, *, hint: str = "Draw one digit, 0–9", width: int = CANVAS_SIZE, height: int = CANVAS_SIZE
) -> Drawing:
    """Canvas + tool row. Returns what is on the canvas after the last finished stroke."""
    canvas_width, canvas_height = width, height
    width = int(st.session_state.get("pen_width", DEFAULT_WIDTH))
    pen = st.session_state.get("pen_color", DEFAULT_PEN)
    bg = st.session_state.get("bg_color", DEFAULT_BACKGROUND)
    st.caption(hint)  # short: the canvas' hover toolbar floats over the right part of this line
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
    objects = (result.json_data or {}).get("objects") or []
    st.session_state[f"{prefix}_objects"] = objects
    with st.container(horizontal=True, gap="small", key=f"{prefix}_tools"):
        width, pen, bg = pen_settings()
        st.button("Undo", icon=":material/undo:", key=f"{prefix}_undo", on_click=_undo, args=(prefix,),
                  disabled=not objects, help="Remove the last stroke")  # fmt: skip
        st.button("Clear", icon=":material/ink_eraser:", key=f"{prefix}_clear", on_click=_clear, args=(prefix,),
                  disabled=not objects, help="Start again with an empty canvas")  # fmt: skip
    png = result.image_bytes if objects else None
    return Drawing(png=png, strokes=len(objects), pen_color=pen, background_color=bg)
