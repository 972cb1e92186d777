"""Rebuild the About page's pictures (run by hand; the PNGs are committed so the page works offline).

    python src/digitlab/ui/assets/make_assets.py [MNIST_DIR]

* `mnist_samples.png`: the first four test digits of each class, 10 columns x 4 rows, as MNIST stores
  them (white ink on black, 28x28 each, shown 2x).
* `pipeline_drawing.png`, `pipeline_ink.png`, `pipeline_input.png`: one drawing through the pipeline —
  the canvas as sent, the ink found (cropped), and the 28x28 image the model sees (shown 5x).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def mnist_samples(mnist_dir: Path) -> None:
    from digitlab.data import load_mnist

    images, labels = load_mnist("test", directory=mnist_dir, download=False)
    rows = 4
    sheet = np.zeros((rows * 28, 10 * 28), dtype=np.uint8)
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)[:rows]
        for r, i in enumerate(idx):
            sheet[r * 28 : (r + 1) * 28, digit * 28 : (digit + 1) * 28] = images[i].reshape(28, 28)
    im = Image.fromarray(sheet, "L").resize((10 * 56, rows * 56), Image.Resampling.NEAREST)
    im.save(HERE / "mnist_samples.png", optimize=True)


def pipeline() -> None:
    from digitlab import preprocess
    from digitlab.synth.glyphs import style_digit
    from digitlab.synth.render import ink_bbox, render_with_meta

    rng = np.random.default_rng(7)
    strokes = style_digit(3, rng, style="3-round")
    rgba, meta = render_with_meta(strokes, rng, width=18, height_frac=0.62, rotation=-6,
                                        scheme="black-on-white")  # fmt: skip
    from scipy import ndimage

    # close the renderer's hairline seams between stroke segments (cosmetic, for the picture only)
    rgb = ndimage.grey_opening(rgba[..., :3], size=(3, 3, 1))
    rgba = np.dstack([rgb, rgba[..., 3]]).astype(np.uint8)
    from PIL import ImageOps

    shown = Image.fromarray(rgba, "RGBA").convert("RGB").resize((166, 166), Image.Resampling.LANCZOS)
    ImageOps.expand(shown, border=1, fill=(200, 204, 225)).save(HERE / "pipeline_drawing.png", optimize=True)
    box = ink_bbox(rgba)
    x0, y0, x1, y1 = box
    crop = Image.fromarray(rgba, "RGBA").convert("L").crop((int(x0), int(y0), int(x1), int(y1)))
    crop = Image.fromarray(255 - np.asarray(crop), "L")
    side = max(crop.size)
    square = Image.new("L", (side, side), 0)
    square.paste(crop, ((side - crop.size[0]) // 2, (side - crop.size[1]) // 2))
    square.resize((168, 168), Image.Resampling.LANCZOS).save(HERE / "pipeline_ink.png", optimize=True)
    x28 = preprocess.to_mnist(rgba, pen_color=meta["pen"], background_color=meta["background"])
    Image.fromarray((x28 * 255).round().astype(np.uint8), "L").resize(
        (168, 168), Image.Resampling.NEAREST
    ).save(HERE / "pipeline_input.png", optimize=True)


def icon() -> None:
    """The browser-tab icon (a local file: a `:material/...:` page icon would be fetched from Google)."""
    from PIL import ImageDraw, ImageFont

    size = 128
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    draw.rounded_rectangle((4, 4, size - 4, size - 4), radius=28, fill=(79, 70, 229, 255))
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 92)
    except OSError:
        font = ImageFont.load_default(92)
    draw.text((size / 2, size / 2 + 2), "7", font=font, fill="white", anchor="mm")
    im.resize((64, 64), Image.Resampling.LANCZOS).save(HERE / "icon.png", optimize=True)


if __name__ == "__main__":
    icon()
    mnist_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/mnist"))
    pipeline()
    print("wrote", ", ".join(sorted(p.name for p in HERE.glob("*.png"))))
