"""The labelled drawings in the store, made fit to learn from: one sample per image, no contradictions,
no person dominating, and whole sessions held out to judge the result.

Rules (docs/learning.md says why):
- a sample is the 28x28 image the models saw (`processed_png`) with the digit its author gave; rows
  labelled "not a digit" and unlabelled rows are never used;
- duplicates: the same image is one sample (a drawing answered by several models is stored once per
  model); the same image with different labels is dropped altogether;
- a cap per session (at most CAP_PER_SESSION samples, CAP_PER_SESSION_DIGIT per digit, newest kept), so
  one person cannot dominate or poison the data; drawings without a session count as one session;
- hold-out: whole sessions, chosen by a hash of the session id (about HOLDOUT_SHARE of them, at least one
  when there are two or more), never trained on: the promotion gate judges on them.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CAP_PER_SESSION = 600
CAP_PER_SESSION_DIGIT = 80
HOLDOUT_SHARE = 0.25
ANONYMOUS = "(no session)"


@dataclass
class UserData:
    """Training and held-out user drawings (uint8 (n, 28, 28), int labels) and what was done to them."""

    train_x: np.ndarray
    train_y: np.ndarray
    holdout_x: np.ndarray
    holdout_y: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return len(self.train_y) + len(self.holdout_y) == 0


def _pixels(png: bytes) -> np.ndarray | None:
    """The 28x28 image the model saw; None for bytes that are not one (a damaged or imported row)."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            if im.size != (28, 28):
                return None
            return np.asarray(im.convert("L"), dtype=np.uint8).reshape(28, 28)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _is_holdout(session: str, share: float) -> bool:
    digest = hashlib.sha256(session.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def counted(n: int, noun: str) -> str:
    """ "1 drawing", "2 drawings": for messages people read ("drawing(s)" read badly)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def prepare(rows: Iterable[tuple[int, str | None, int, bytes]], *, holdout_share: float = HOLDOUT_SHARE) -> UserData:
    """`rows`: (id, session id, true digit, 28x28 PNG), oldest first (`Repository.labelled_drawings`)."""
    by_image: dict[bytes, list[tuple[int, str, int, np.ndarray]]] = defaultdict(list)
    n_rows = unreadable = 0
    for id_, session, digit, png in rows:
        n_rows += 1
        pixels = _pixels(png)
        if pixels is None:  # one damaged row must not stop learning for good
            unreadable += 1
            continue
        by_image[hashlib.sha256(png).digest()].append((id_, session or ANONYMOUS, digit, pixels))
    conflicts = sum(1 for copies in by_image.values() if len({c[2] for c in copies}) > 1)
    unique = [copies[-1] for copies in by_image.values() if len({c[2] for c in copies}) == 1]
    unique.sort(key=lambda c: -c[0])  # newest first, so the caps keep the newest
    per_session: Counter = Counter()
    per_digit: Counter = Counter()
    kept, capped = [], 0
    for id_, session, digit, png in unique:
        if per_session[session] >= CAP_PER_SESSION or per_digit[session, digit] >= CAP_PER_SESSION_DIGIT:
            capped += 1
            continue
        per_session[session] += 1
        per_digit[session, digit] += 1
        kept.append((session, digit, png))
    sessions = sorted(per_session)
    held = {s for s in sessions if _is_holdout(s, holdout_share)}
    if len(sessions) >= 2 and not held:  # at least one session to judge on
        held = {min(sessions, key=lambda s: hashlib.sha256(s.encode()).digest())}
    if held == set(sessions) and len(sessions) >= 2:  # ... and at least one to learn from
        held.discard(max(sessions, key=lambda s: hashlib.sha256(s.encode()).digest()))

    def arrays(samples):
        x = np.stack([pixels for _, _, pixels in samples]) if samples else np.zeros((0, 28, 28), np.uint8)
        return x, np.array([d for _, d, _ in samples], dtype=np.int64)

    train = [k for k in kept if k[0] not in held]
    holdout = [k for k in kept if k[0] in held]
    data = UserData(*arrays(train), *arrays(holdout))
    data.counts = {
        "rows": n_rows, "unreadable": unreadable, "images": len(by_image),
        "duplicates": n_rows - unreadable - len(by_image), "conflicting_images": conflicts,
        "capped": capped, "sessions": len(sessions), "holdout_sessions": len(held),
        "train": len(train), "holdout": len(holdout),
    }  # fmt: skip
    if unreadable:
        data.notes.append(f"{counted(unreadable, 'stored image')} not readable as 28x28 images: left out")
    if conflicts:
        data.notes.append(f"{counted(conflicts, 'image')} labelled with different digits: left out")
    if capped:
        data.notes.append(f"{counted(capped, 'drawing')} over a session's cap left out (at most {CAP_PER_SESSION} per "
                          f"session, {CAP_PER_SESSION_DIGIT} per digit)")  # fmt: skip
    return data  # (one session only: `learn` refuses and says why; a note here said it a second time)
