"""Untrusted bytes -> RGBA pixels: the format from the magic bytes, bomb checks on the header before any
pixel is decoded, EXIF orientation. PNG, JPEG, WebP and BMP only; every refusal is a `DigitlabError`
with a stable code (`unreadable_image`, `unsupported_media_type`, `image_too_large`).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from digitlab.errors import DigitlabError


class UnreadableImageError(DigitlabError):
    code = "unreadable_image"

    def __init__(
        self, message: str = "The file could not be read as an image: upload a PNG, JPEG, WebP or BMP."
    ):
        super().__init__(message)


class UnsupportedImageError(DigitlabError):
    code = "unsupported_media_type"

    def __init__(
        self, message: str = "This file type is not supported: upload a PNG, JPEG, WebP or BMP image."
    ):
        super().__init__(message)


class ImageTooLargeError(DigitlabError):
    code = "image_too_large"

    def __init__(self, message: str = "The image has too many pixels: upload a smaller image."):
        super().__init__(message)


#: what an image with nothing drawn on it is told (the number reader words it for a number)
NOTHING_DRAWN = "Nothing drawn: the image is blank. Draw a digit and try again."


class EmptyImageError(DigitlabError):
    code = "empty_image"

    def __init__(self, message: str = NOTHING_DRAWN):
        super().__init__(message)


#: formats `decode_image` accepts (PIL format names); the API's contract names the same four.
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")


#: decoded pixels allowed by default (the API passes `Settings.max_image_pixels`)
DEFAULT_MAX_PIXELS = 25_000_000

#: Start-of-scan markers a JPEG may hold. Every scan is decoded in full, even for a reduced `draft`, so a
#: small file repeating one scan cost seconds of CPU per 1,000; a camera's or browser's progressive JPEG
#: has about 10 (its thumbnail, or an MPO's second picture, a few more).
MAX_JPEG_SCANS = 100
#: A JPEG spends at least a bit on each 8x8 block of its first component (a Huffman code for the block's DC),
#: so one whose data holds less than half a bit per block of the size in its header cannot hold its picture:
#: libjpeg decodes it without an error, the missing part grey (a 4.5 KB JPEG whose header was changed to
#: claim 4900x5000 was read "000000000"). Half a bit leaves room for arithmetic coding, which is rare.
JPEG_MIN_BITS_PER_BLOCK = 0.5


_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF", "PDF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"qoif", "QOI"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x8aMNG", "MNG"),
    (b"DDS ", "DDS"),
    (b"#?RADIANCE", "HDR"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"%!PS", "PostScript"),
)


def unsupported_format(data: bytes) -> str | None:
    """Name a recognised format we refuse (so it gets unsupported_media_type, not unreadable_image)."""
    head = bytes(data[:512])
    if bytes(data[-18:]) == b"TRUEVISION-XFILE.\x00":  # TGA's footer (its header has no magic: an uncompressed
        return "TGA"  # one starts as a CUR does, and was called a CUR file)
    for sig, name in _OTHER_SIGNATURES:
        if head.startswith(sig) and (name not in ("ICO", "CUR") or head[4:6] != b"\x00\x00"):  # (images: >= 1)
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand[:3] in (b"hei", b"hev", b"mif", b"msf"):
            return "HEIC"
        return "video"
    if head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in (b" ", b"\t", b"\r", b"\n"):
        return "PPM / PGM / PBM"
    if head[:1] == b"\x0a" and head[1:2] in (b"\x00", b"\x02", b"\x03", b"\x04", b"\x05") and head[2:3] == b"\x01":
        return "PCX"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    return None


_MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"))


def sniff_format(data: bytes) -> str:
    """'png' | 'jpeg' | 'webp' | 'bmp' from the first bytes (the declared content type never counts).

    A recognised format we do not take (GIF, TIFF, PDF, SVG, HEIC, ...) raises `UnsupportedImageError`;
    anything else (empty, garbage) `UnreadableImageError`.
    """
    head = bytes(data[:32])
    if not head:
        raise UnreadableImageError("The image file is empty: upload a PNG, JPEG, WebP or BMP image.")
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(data) >= 26:
        if struct.unpack("<I", head[14:18])[0] >= 40 and struct.unpack("<i", head[18:22])[0] <= 0:
            raise UnreadableImageError("The BMP file is damaged (its header gives no width): upload a PNG, JPEG, "
                                       "WebP or BMP image.")  # fmt: skip (it read as "too many pixels")
        return "bmp"
    other = unsupported_format(data) or _identify_any(data)  # (PIL's header check: SGI, XBM, IM, SPIDER, ... were
    if other:  # "not an image we can read", a 400, where other formats are a 415; a probe, session 46)
        raise UnsupportedImageError(f"{other} files are not supported: upload a PNG, JPEG, WebP or BMP image.")
    raise UnreadableImageError("The file is not an image we can read: upload a PNG, JPEG, WebP or BMP image.")


def _refuse_text_bomb(exc: Exception) -> None:
    """PIL refuses a PNG text chunk that unpacks past 1 MB (a zTXt of 200 KB can hold 200 MB): say so (it was
    "could not be read as an image", for a picture that is fine but for its metadata)."""
    if isinstance(exc, ValueError) and str(exc).lower().startswith(("decompressed data too large", "too much memory used in text")):
        raise ImageTooLargeError(
            "The PNG's metadata (text or colour profile) unpacks to more than 1 MB: save the image without metadata and upload it again."
        ) from exc


def open_image(data: bytes, max_pixels: int | None, *, draft_to: int | None = None) -> Image.Image:
    """Open, bomb-check (header only), then decode. Returns a loaded PIL image (any mode)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image expects bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise UnreadableImageError("The file is empty: upload a PNG, JPEG, WebP or BMP image.")
    if max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS
    other = unsupported_format(data)
    if other is not None:
        raise UnsupportedImageError(
            f"{other} files are not supported: upload a PNG, JPEG, WebP or BMP image."
        )
    try:
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:  # beyond PIL's own hard limit (2 x MAX_IMAGE_PIXELS)
        raise ImageTooLargeError(
            "The image has too many pixels to decode safely: upload a smaller image."
        ) from exc
    except ValueError as exc:
        _refuse_text_bomb(exc)
        raise UnreadableImageError() from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct.error, ...
        fmt = _identify_any(data)
        if fmt is not None:
            raise UnsupportedImageError(
                f"{fmt} images are not supported: upload a PNG, JPEG, WebP or BMP image."
            ) from exc
        raise UnreadableImageError() from exc
    width, height = im.size
    if width <= 0 or height <= 0:
        raise UnreadableImageError("The image has no pixels: upload a PNG, JPEG, WebP or BMP image.")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels, more than the limit of {max_pixels:,}: "
            "upload a smaller image."
        )
    if im.format in ("JPEG", "MPO") and data.count(b"\xff\xda") > MAX_JPEG_SCANS:  # (0xFF in scan data is
        raise UnreadableImageError(  # stuffed as FF 00: FF DA is a marker)
            f"The JPEG holds more than {MAX_JPEG_SCANS} scans, far more than a photo has: save it again as a "
            "plain JPEG or PNG and upload that."
        )
    if im.format in ("JPEG", "MPO") and len(data) * 8 < -(-width // 8) * -(-height // 8) * JPEG_MIN_BITS_PER_BLOCK:
        raise UnreadableImageError(
            f"The JPEG file is damaged: {len(data):,} bytes cannot hold the {width}x{height} pixels its header "
            "gives. Save it again and upload it."
        )
    try:
        if draft_to is not None and im.format in ("JPEG", "MPO"):  # MPO: a phone camera's JPEG
            im.draft(im.mode, (draft_to, draft_to))  # decode a large JPEG at 1/2, 1/4 or 1/8 scale
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            "The image has too many pixels to decode safely: upload a smaller image."
        ) from exc
    except MemoryError as exc:
        raise ImageTooLargeError("The image is too large to decode: upload a smaller image.") from exc
    except Exception as exc:  # truncated / corrupt data
        _refuse_text_bomb(exc)
        raise UnreadableImageError(
            "The image file is damaged or truncated: upload a PNG, JPEG, WebP or BMP image."
        ) from exc
    if im.format == "BMP":
        im = bmp_with_alpha(im, data)
    if im.format == "PNG" and not png_rows_complete(data):  # PIL filled the missing rows with black
        raise UnreadableImageError(
            "The image file is damaged or truncated: upload a PNG, JPEG, WebP or BMP image."
        )
    if im.format == "PNG" and (chunk := png_bad_checksum(data)):
        raise UnreadableImageError(
            f"The PNG file is damaged (its {chunk} chunk fails its checksum): save it again and upload it."
        )
    try:
        if im.getexif().get(0x0112, 1) != 1:  # phone photos: apply the EXIF orientation
            im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001, S110 -- a broken EXIF block does not make the picture unreadable
        pass
    return im


def bmp_with_alpha(im: Image.Image, data: bytes) -> Image.Image:
    """A 32-bit BMP's fourth byte is its alpha, as browsers read it, unless it is 0 everywhere (then the
    bitmap is opaque). PIL drops it: a drawing saved from a transparent canvas as BMP was all black ("nothing
    drawn"). `im` is loaded; only an uncompressed 32-bit bitmap PIL read as RGB is read again."""
    if im.mode != "RGB" or len(data) < 34 or struct.unpack("<HI", data[28:34]) != (32, 0):
        return im
    (offset,) = struct.unpack("<I", data[10:14])
    (height,) = struct.unpack("<i", data[22:26])
    width, rows = im.size
    pixels = data[offset : offset + width * rows * 4]
    if len(pixels) < width * rows * 4:
        return im
    alpha = np.frombuffer(pixels, np.uint8)[3::4]
    if not alpha.any():
        return im
    bgra = np.frombuffer(pixels, np.uint8).reshape(rows, width, 4)
    rgba = bgra[::-1] if height > 0 else bgra  # (positive height: bottom row first)
    out = Image.fromarray(np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]), "RGBA")
    out.format = im.format
    out.info = dict(im.info)
    return out


#: Chunks that do not change the pixels PIL decodes (text, timestamps, physical size, colour-space
#: hints PIL ignores). A PNG with any other chunk (tRNS, PLTE, eXIf, ...) takes PIL's path.
_PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"pHYs", b"sRGB", b"gAMA", b"cHRM", b"iCCP", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"bKGD"})
#: IHDR colour types decoded by libspng: grey, RGB, grey + alpha, RGBA (8 bits each).
_PLAIN_COLOUR_TYPES = frozenset({0, 2, 4, 6})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_plain_png(data: bytes, max_pixels: int, max_side: int) -> bool:
    """An 8-bit, non-interlaced grey/RGB/RGBA PNG of at most `max_side` px whose chunks leave PIL's
    decoding plain (no transparency key, palette or EXIF): what a canvas sends. Header walk only."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or colour not in _PLAIN_COLOUR_TYPES or interlace or not (0 < width <= max_side and 0 < height <= max_side):
        return False
    if width * height > max_pixels:
        return False
    pos, end = 8, len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind not in _PLAIN_CHUNKS or pos + 12 + length > end:
            return False
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:  # PIL refuses a bad CRC (pyspng would not)
            return False
        if _is_xmp(data, pos, kind):  # PIL turns the picture by its XMP orientation, libspng would not
            return False
        if kind == b"IEND":
            return True
        pos += 12 + length
    return False


#: chunks that make a PNG's picture (and its orientation); the rest is text, metadata or hidden payload
_PICTURE_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"eXIf", b"IEND"})
#: an iTXt chunk with this keyword is XMP, which may carry an orientation (PIL applies it)
_XMP_KEY = b"XML:com.adobe.xmp\x00"


def _is_xmp(data: bytes, pos: int, kind: bytes) -> bool:
    """Is the chunk at `pos` (of type `kind`) XMP?"""
    return kind == b"iTXt" and data[pos + 8 : pos + 8 + len(_XMP_KEY)] == _XMP_KEY


def png_bad_checksum(data: bytes) -> str | None:
    """The first picture chunk (`_PICTURE_CHUNKS`) whose CRC is wrong, by name; None if all are right. PIL
    does not check IDAT's CRC: a PNG damaged in transit was read (and answered, sure) where libpng, and so
    most programs, refuse it (a probe, session 35). Header walk and one CRC per chunk, no decoding."""
    pos, end = 8, len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > end:
            return None  # (a short file is png_rows_complete's to judge)
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if kind in _PICTURE_CHUNKS and zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:
            return kind.decode("latin-1")
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def png_picture_only(data: bytes) -> bytes | None:
    """The PNG with only the chunks that make its picture, nothing after IEND; None if it is not a
    well-formed PNG. What the store keeps of an upload: a 40 KB drawing with 5 MB of trailing bytes or of
    text chunks was stored as sent, once per model answering (header walk only, no decoding). A picture
    chunk with a wrong CRC is not well-formed: PIL decodes such a PNG (it does not check IDAT's CRC), and
    it was stored as sent, a file other programs refuse (a probe, session 27). A PNG with XMP (which may turn
    the picture, as the model saw it) gives None too: it is stored as decoded."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out, pos, end = [_PNG_SIGNATURE], 8, len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if pos + 12 + length > end:
            return None
        kind = data[pos + 4 : pos + 8]
        if _is_xmp(data, pos, kind):
            return None
        if kind in _PICTURE_CHUNKS:
            (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
            if zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:
                return None
            out.append(data[pos : pos + 12 + length])
        if kind == b"IEND":
            return b"".join(out)
        pos += 12 + length
    return None


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  #: per PNG colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rows_complete(data: bytes) -> bool:
    """Does the PNG's image data hold every row its header promises? A complete zlib stream with fewer rows
    is decoded by PIL without a word, the rest black: a clean 7 cut to 270 of 280 rows was read as a sure 2
    (a probe, session 28). Inflates in 1 MiB pieces, counting, never holding the pixels."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return True  # (not a PNG PIL opened: nothing to say)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    needed = 0
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            needed += h * (1 + (w * bits + 7) // 8)
    inflate, got, pos, end = zlib.decompressobj(), 0, 8, len(data)
    try:
        while pos + 12 <= end and got < needed:
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            if data[pos + 4 : pos + 8] == b"IDAT":
                piece = data[pos + 8 : pos + 8 + length]
                while piece and got < needed:
                    got += len(inflate.decompress(piece, 1 << 20))
                    piece = inflate.unconsumed_tail
            pos += 12 + length
    except zlib.error:
        return False
    return got >= needed


def decode_plain_png(data: bytes, max_pixels: int | None = None, *, max_side: int) -> np.ndarray | None:
    """RGBA uint8 (H, W, 4) of a plain PNG (`_is_plain_png`) through libspng, else None (use PIL).

    Same pixels as `pil_to_rgba(open_image(data))`, in 60 % of the time: for a canvas drawing the
    decode was the largest single cost of a prediction. Anything libspng refuses (a bad CRC, a short
    IDAT) returns None, so PIL's path gives its usual answer or error.
    """
    data = bytes(data)
    if not _is_plain_png(data, max_pixels or DEFAULT_MAX_PIXELS, max_side):
        return None
    try:
        import pyspng

        rgba = pyspng.load(data, "RGBA")
    except (ImportError, RuntimeError, ValueError, zlib.error):
        return None
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        return None
    return rgba


def _identify_any(data: bytes) -> str | None:
    """Does PIL recognise the bytes as some other image format (header only)?"""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format or "This"
    except Exception:  # noqa: BLE001 -- any parser error on untrusted bytes means "not recognised"
        return None


#: 16-bit grey -> 8-bit: rint(v * 255 / 65535), a lookup (no float copy of a whole image)
_SIXTEEN_TO_EIGHT = np.rint(np.arange(65536) * (255.0 / 65535.0)).astype(np.uint8)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def sixteen_to_grey(im: Image.Image) -> np.ndarray:
    """A 16-bit grey image (`SIXTEEN_BIT_MODES`) -> uint8 (H, W), scaled to the full range, not clipped."""
    return _SIXTEEN_TO_EIGHT[np.asarray(im)]


def pil_to_rgba(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGBA uint8 (H, W, 4); 16/32-bit grey is scaled, not clipped."""
    mode = im.mode
    if mode in (*SIXTEEN_BIT_MODES, "I", "F"):
        if mode in SIXTEEN_BIT_MODES:
            grey = sixteen_to_grey(im)
        else:
            arr = np.asarray(im).astype(np.float64)
            hi = float(arr.max()) if arr.size else 0.0
            if hi > 255.0:
                arr = arr * (255.0 / 65535.0) if hi <= 65535.0 else arr * (255.0 / hi)
            elif mode == "F" and hi <= 1.0:
                arr = arr * 255.0
            grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        out = np.empty(grey.shape + (4,), np.uint8)
        out[..., :3] = grey[..., None]
        out[..., 3] = 255
        return out
    if mode == "RGBA":
        return np.array(im, dtype=np.uint8)
    if mode == "CMYK" or mode not in ("RGB", "L", "LA", "P", "PA", "1", "RGBa", "La", "RGBX"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    return np.array(im.convert("RGBA"), dtype=np.uint8)


def decode_image(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode PNG / JPEG / WebP / BMP bytes to RGBA uint8 (H, W, 4): an animation's first frame; GIF refused.

    `max_pixels` (default `DEFAULT_MAX_PIXELS`, 25 000 000) is checked against the header's
    width x height *before* any pixel is decoded. EXIF orientation is applied. 16-bit, palette, grey,
    grey+alpha and CMYK images are converted.

    Raises UnreadableImageError (empty, garbage, truncated), UnsupportedImageError (a recognised
    format we do not take: TIFF, PDF, SVG, HEIC, ICO, ...), ImageTooLargeError (pixel limit).
    """
    return pil_to_rgba(open_image(data, max_pixels))
