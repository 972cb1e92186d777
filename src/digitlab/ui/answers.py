"""What became of a person's answer ("What did you draw / write?"): one wording for Draw, Compare and Number.

An answer is "saved", "queued" (the API took it; the database is away and it is stored when back), "unsent"
(the page keeps it and sends it again: the API is away, or it answers but cannot take the answer yet, its
database away, `api_errors.label_kept`) or "error" (refused, with the API's reason). Each page used to word the
four in its own copy.
"""

from __future__ import annotations

import streamlit as st

_ICONS = {"success": ":material/check_circle:", "warning": ":material/schedule:", "error": ":material/error:"}


def notice(kind: str, what: str, verdict: str = "", message: str = "", *, again: str = "",
           saved: str = "Saved") -> tuple[str, str]:  # fmt: skip
    """(level: "success" / "warning" / "error", text) for an answer's outcome. `what`: the answer ("you drew
    a **7**"); `verdict`: how the model did against it; `message`: the API's reason for an error, or for an
    "unsent" answer the `ApiError.code` it was kept by (`waiting`); `again`: how to send it again after an error;
    `saved`: the first words of a saved answer."""
    verdict = f" {verdict}" if verdict else ""
    kind = stored_since(kind, st.session_state.get("health"))
    if kind == "saved":
        return "success", f"{saved}: {what}.{verdict} Thank you!"
    if kind == "queued":
        return "warning", (f"Saved later: {what}.{verdict} The database is unavailable: your answer is queued and "
                           "saved when it is back.")  # fmt: skip
    if kind == "unsent":  # (the service's own error says "retrying": here the answer waits, and is sent)
        why = message if st.session_state.get("api_ok", True) else ""  # (the service gone away since: it waits for it)
        return "warning", f"Not saved yet: {what}. {waiting(why)} (keep this page open)."
    return "error", f"Your answer was not saved: {message}" + (f" {again}" if again else "")


def waiting(code: str) -> str:
    """Why a kept answer waits, by the code of the error it was kept by: the service away, or (it answers) its
    database. "The prediction service is away" was said of both: the header said the database was away, and the
    service did answer (a 503 `too_many_waiting_labels`, or a 404 by uid before the drawing is stored, a95c01f)."""
    if code == "too_many_waiting_labels":
        return ("The database is away and many answers already wait for it: yours is kept here and sent again once "
                "it is back")  # fmt: skip
    if code == "record_pending":
        return "The database has not stored this picture yet: your answer is kept here and sent again once it has"
    return "The prediction service is away; your answer is sent as soon as it is back"


def stored_since(kind: str, health) -> str:
    """A "queued" answer is "saved" once the database is back and every spool has been replayed into it (`health`,
    the monitor's last `Health`; the page reruns when the database's state changes): "Saved later ... the database
    is unavailable" stayed beside a database long back (a newcomer's tour, session 30)."""
    if kind == "queued" and health is not None and health.database == "ok" and health.spool == 0:
        return "saved"
    return kind


def show(kind: str, what: str, verdict: str = "", message: str = "", *, again: str = "", saved: str = "Saved") -> None:
    """`notice` shown on the page (a green, amber or red box with its icon)."""
    level, text = notice(kind, what, verdict, message, again=again, saved=saved)
    getattr(st, level)(text, icon=_ICONS[level])


def icon(level: str) -> str:
    """The icon of a notice level, for a toast that repeats it."""
    return _ICONS[level]
