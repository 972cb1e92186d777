"""Photos and scans uploaded on the Draw and Number pages: the folded uploader, what is sent for a photo
(large ones made smaller first), and the uploader emptied once the person draws over a photo."""

from __future__ import annotations

import hashlib
import io

import streamlit as st

#: no filter by file name: a file the uploader refused stayed in it as a red chip with its reason out of sight,
#: beside the previous photo's answer; the API checks the bytes and its one-line reason replaces the answer
PHOTO_TYPES = None


def photo_picker(title: str, label: str, key: str, what: str):
    """A folded "upload a photo" below the canvas (the canvas stays the main thing); the file or None.
    `what`: what the photo's content is used for ("the model reads", "is read")."""
    generation = st.session_state.get(f"{key}_generation", 0)  # a new uploader (empty) after `drop_photo`
    with st.expander(title, icon=":material/photo_camera:"):
        return st.file_uploader(
            label, type=PHOTO_TYPES, key=f"{key}_{generation}" if generation else key,
            help=f"PNG, JPEG, WebP or BMP up to {PHOTO_MAX_MB} MB (a large photo is made smaller before it is sent): paper, lined or squared, uneven light, dark ink on light "
            f"paper or the other way round. While a photo is here it is what {what}; draw on the canvas (or "
            "remove the photo) to use the canvas again.",
        )  # fmt: skip


#: Uploads up to this size go to the API as they are; larger photos (a phone's 12-MP JPEG is 4-9 MB, over the
#: API's 5 MB limit) are shrunk first to `PHOTO_LONG_SIDE` px on the long side: the API works on at most 800 px
PHOTO_SHRINK_ABOVE = 1_500_000
PHOTO_LONG_SIDE = 1600
#: the uploader's own limit (Streamlit's `server.maxUploadSize` in .streamlit/config.toml, in MB)
PHOTO_MAX_MB = 25


def photo_drawing_id(photo) -> str:
    """The `drawing_id` an uploaded photo is sent with: the API keeps one record per drawing, so a photo sent
    again (its first answer lost to a timeout while the database was slow) updates its record instead of
    adding a second one; the same photo uploaded again is a new drawing (a new file id)."""
    return "p" + hashlib.blake2b(str(photo.file_id).encode(), digest_size=12).hexdigest()


#: an uploaded photo in which no digit was found (Draw and Compare)
NOTHING_IN_PHOTO = "No digit found in this photo: take it closer, the digit large."


def digit_photo_picker(key: str, what: str):
    """`photo_picker` for one digit (Draw and Compare)."""
    return photo_picker("…or upload a photo or scan of a digit", "A photo or scan of one digit", key, what)


def upload_request(photo) -> tuple[bytes, dict[str, str]]:
    """(bytes, fields) an uploaded photo is sent with, on every page: stored as source "upload", under the file
    name it was sent as and its `photo_drawing_id`."""
    data, name = photo_payload(photo)
    return data, {"source": "upload", "filename": name, "drawing_id": photo_drawing_id(photo)}


def photo_payload(photo) -> tuple[bytes, str]:
    """(bytes, file name) to send for an uploaded photo: as uploaded, or shrunk when it is large (a phone
    photo was refused by the uploader with its reason out of sight). A file PIL cannot shrink goes as it is:
    the API says what is wrong with it."""
    data, name = photo.getvalue(), photo.name or "photo.png"
    if len(data) <= PHOTO_SHRINK_ABOVE:
        return data, name
    memo: dict = st.session_state.setdefault("photo_payloads", {})  # file id -> payload: once per photo
    if photo.file_id not in memo:
        memo.clear()
        memo[photo.file_id] = _shrunk(data, name)
    return memo[photo.file_id]


def _shrunk(data: bytes, name: str) -> tuple[bytes, str]:
    from PIL import Image, ImageOps

    from digitlab.decode import bmp_with_alpha

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > 100_000_000:  # (the API refuses it with a clear message)
                return data, name
            if im.format == "JPEG":
                im.draft("RGB", (PHOTO_LONG_SIDE, PHOTO_LONG_SIDE))
            if im.format == "BMP":
                im = bmp_with_alpha(im, data)  # (a transparent canvas saved as BMP)
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            im.thumbnail((PHOTO_LONG_SIDE, PHOTO_LONG_SIDE))
            out = io.BytesIO()
            if im.mode == "RGB":
                im.save(out, format="JPEG", quality=92)
                return out.getvalue(), name.rsplit(".", 1)[0] + ".jpg"
            im.save(out, format="PNG")
            return out.getvalue(), name.rsplit(".", 1)[0] + ".png"
    except Exception:  # noqa: BLE001 - not an image PIL reads: the API's answer explains it
        return data, name


def forget_photo_drawn_over(key: str, drawing) -> None:
    """Call before `photo_picker(key)`: once the person drew on the canvas after uploading a photo, the
    latest thing they gave is what they mean (an answer given then went to the photo: a photo of a 3
    stored as "you drew a 1"), so the uploader starts empty in this very run (a new widget key)."""
    generation = st.session_state.get(f"{key}_generation", 0)
    photo = st.session_state.get(f"{key}_{generation}" if generation else key)
    if photo is None:
        st.session_state.pop(f"{key}_canvas_at", None)
        return
    at = st.session_state.get(f"{key}_canvas_at")
    if at is None or at[0] != photo.file_id:  # a new photo: remember the canvas as it was then
        st.session_state[f"{key}_canvas_at"] = (photo.file_id, drawing.digest)
        return
    if drawing.empty or drawing.digest == at[1]:
        return
    st.session_state.pop(f"{key}_canvas_at", None)
    st.session_state[f"{key}_generation"] = generation + 1
