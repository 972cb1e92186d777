"""The plain multipart form every client sends, parsed in one pass over the body (bytes.find).

A prediction request is a few small parts: the image file and a handful of short text fields.
python-multipart parses it byte by byte through Python callbacks, which cost more CPU per request
than the CNN. `parse_plain_form` handles the plain shape (RFC 7578 as browsers, curl, requests and
httpx write it, with or without a preamble or an epilogue) and returns None for anything else --
quoted-pair escapes, `filename*`, a non-UTF-8 charset, repeated names, too many parts -- so that Starlette's parser decides those, with its own errors. Both give the same fields for a
plain form (tests/api/test_multipart.py). A text field that is not UTF-8 is refused (`NotText`):
Starlette's parser took its bytes as Latin-1 ("\xff\xfe" was stored as "ÿþ"; a probe, session 27), and
RFC 2046's preamble, which its parser refused, is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Starlette's limits as the predict route sets them (beyond them its parser answers the error).
MAX_FILES = 4
MAX_FIELDS = 32
MAX_TEXT_PART = 1024 * 1024


_TOKEN = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  #: an unquoted parameter value (RFC 7230 token)


class NotText(ValueError):
    """A text field whose bytes are not UTF-8 (its name is the message)."""


@dataclass(frozen=True)
class Part:
    """A form part: a file's bytes (it had a filename) or a text field's value."""

    is_file: bool
    value: bytes | str


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of `multipart/form-data; boundary=...` (plain or quoted), None if unusual."""
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/form-data":
        return None
    boundary = None
    for param in params.split(";"):
        name, eq, value = param.strip().partition("=")
        name = name.strip().lower()
        if not eq:
            if name:
                return None
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if '"' in value or "\\" in value:
            return None
        if name == "boundary" and boundary is None:
            boundary = value
        elif name == "charset" and value.lower() in ("utf-8", "utf8"):
            continue
        else:
            return None
    if not boundary or len(boundary) > 70 or not boundary.isascii():
        return None
    return boundary.encode("ascii")


def _disposition(value: bytes) -> tuple[str, str | None] | None:
    """(name, filename or None) of `form-data; name="..."[; filename="..."]`, None if unusual."""
    kind, _, rest = value.partition(b";")
    if kind.strip().lower() != b"form-data":
        return None
    found: dict[bytes, str] = {}
    for param in rest.split(b";"):
        key, eq, quoted = param.strip().partition(b"=")
        key = key.strip().lower()
        if not eq or key not in (b"name", b"filename") or key in found:
            return None
        quoted = quoted.strip()
        if _TOKEN.fullmatch(quoted):  # `name=session_id`, unquoted (RFC 7578 allows it; Starlette's parser
            text = quoted  # took such a field's text as Latin-1)
        elif len(quoted) < 2 or quoted[:1] != b'"' or quoted[-1:] != b'"':
            return None
        else:
            text = quoted[1:-1]
        if b'"' in text or b"\\" in text:
            return None
        try:
            found[key] = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if b"name" not in found:
        return None
    return found[b"name"], found.get(b"filename")


def _after_delimiter_line(body: bytes, pos: int) -> int | None:
    """Where the line of a delimiter ending at `pos` ends: after any spaces or tabs and its CRLF; None if no CRLF."""
    while body[pos : pos + 1] in (b" ", b"\t"):
        pos += 1
    return pos + 2 if body.startswith(b"\r\n", pos) else None


def parse_plain_form(content_type: str, body: bytes) -> dict[str, Part] | None:
    """{name: Part} of a plain multipart/form-data body, or None (use the full parser)."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    delimiter = b"--" + boundary
    separator = b"\r\n" + delimiter
    # the first delimiter line: at the start, or after a preamble (RFC 2046: ignored); spaces or tabs may pad a
    # delimiter line before its CRLF (RFC 2046's transport padding: it was a 400 from the full parser)
    pos = _after_delimiter_line(body, len(delimiter)) if body.startswith(delimiter) else None
    found = 0
    while pos is None:
        found = body.find(separator, found)
        if found < 0:
            return None
        found += len(separator)
        pos = _after_delimiter_line(body, found)
    parts: dict[str, Part] = {}
    files = fields = 0
    while True:
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return None
        disposition = None
        for line in body[pos:head_end].split(b"\r\n"):
            name, colon, value = line.partition(b":")
            name = name.strip().lower()
            if not colon:
                return None
            if name == b"content-disposition":  # (other headers are ignored, as Starlette's parser ignores them:
                # left to it, a part with one more header had its text taken as Latin-1; a probe, session 29)
                if disposition is not None:
                    return None
                disposition = _disposition(value.strip())
                if disposition is None:
                    return None
        if disposition is None:
            return None
        start = head_end + 4
        end = body.find(separator, start)
        if end < 0:
            return None
        field, filename = disposition
        if field in parts:
            return None
        content = body[start:end]
        if filename is not None:
            files += 1
            parts[field] = Part(True, content)
        else:
            fields += 1
            if len(content) > MAX_TEXT_PART:
                return None
            try:
                parts[field] = Part(False, content.decode("utf-8"))
            except UnicodeDecodeError:
                raise NotText(field) from None
        if files > MAX_FILES or fields > MAX_FIELDS:
            return None
        after = end + len(separator)
        if body.startswith(b"--", after):  # the close delimiter: what follows is an epilogue, ignored (RFC 2046;
            return parts  # with a preamble too it was a 400: the full parser refuses preambles; a probe, session 46)
        pos = _after_delimiter_line(body, after)
        if pos is None:
            return None
