"""The Number page's picture of a reading: the part of the image around the digits read, each in a box labelled
with the digit read there (pure PIL, no Streamlit: the page shows it with `st.image`)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageOps

PREVIEW_MARGIN = 0.3  #: the preview shows the digits' boxes with this much of their height around them
PREVIEW_MIN_WIDTH = 360  #: a smaller preview is enlarged to this width (at most 4x)


def boxed(image: bytes, digits: list[dict]) -> bytes:
    """The part of the image around the digits read, each in a box labelled with its digit: turned upright by its EXIF
    orientation first, as the API reads it (a phone photo stored sideways showed sideways, its boxes over the
    wrong part). Cropped to the digits and enlarged when small: a number written in a corner of the 840 px
    canvas was ~100 px wide under the reading on a phone, its boxes and their numbers too small to see."""
    with Image.open(io.BytesIO(image)) as raw:
        im = ImageOps.exif_transpose(raw).convert("RGB")
    boxes = [tuple(d["box"]) for d in digits]
    if boxes:
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        margin = max(8, round(PREVIEW_MARGIN * (y1 - y0)))
        left, top = max(0, x0 - margin), max(0, y0 - margin)
        im = im.crop((left, top, min(im.width, x1 + margin), min(im.height, y1 + margin)))
        boxes = [(x - left, y - top, w, h) for x, y, w, h in boxes]
    scale = min(4.0, PREVIEW_MIN_WIDTH / im.width) if im.width < PREVIEW_MIN_WIDTH else 1.0
    if scale > 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    line = max(2, round(max(im.size) / 300))
    boxes = [tuple(round(v * scale) for v in b) for b in boxes]
    sizes = [max(10, round(0.2 * h)) for _x, _y, _w, h in boxes]
    # each number over its box, never on the ink (writing at the top edge had its 5 numbered "1" inside the box,
    # reading "15"): where the picture has no room above a box, a band of its own background is added
    room = max([size + 2 * line - y for size, (_x, y, _w, _h) in zip(sizes, boxes, strict=True)] + [0])
    if room > 0:
        grown = Image.new("RGB", (im.width, im.height + room), im.getpixel((0, 0)))
        grown.paste(im, (0, room))
        im, boxes = grown, [(x, y + room, w, h) for x, y, w, h in boxes]
    pen = ImageDraw.Draw(im)
    for i, (d, (x, y, w, h), size) in enumerate(zip(digits, boxes, sizes, strict=True)):
        colour = "#d9480f" if d.get("uncertain") else "#2b8a3e"
        pen.rectangle([x, y, x + w, y + h], outline=colour, width=line)
        label = str(d["digit"]) if "digit" in d else str(i + 1)  # the digit read there: a position number over
        pen.text((x + line + 1, y - size - 2 * line), label, fill=colour, font_size=size)  # each was taken for a
        # digit read ("1 2 3 4" over 3819: a "3" over its 1), a newcomer's tour, session 34
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()
