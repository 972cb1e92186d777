"""Errors a person can act on: each carries a stable snake_case code and a one-line message."""


class DigitlabError(Exception):
    """Base class; `code` is stable (used in API error bodies), the message says what to do."""

    code = "digitlab_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class UnknownModelError(DigitlabError):
    """A model name digitlab does not know."""

    code = "unknown_model"


class ModelNotReadyError(DigitlabError):
    """A known model that cannot answer now: not trained, still training, or its artefact is broken."""

    code = "model_not_ready"
