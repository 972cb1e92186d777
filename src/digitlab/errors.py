"""Errors a person can act on: each carries a stable snake_case code and a one-line message."""


class DigitlabError(Exception):
    """Base class; `code` is stable (used in API error bodies), the message says what to do."""

    code = "digitlab_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code
