"""The exceptions Kairos raises: one class per kind of failure, each carrying the engine's
message (which names the column, the row and what was expected where the input was at fault)
and, from a server, the HTTP status it answered with.

Each also derives from the built-in exception a Python caller would catch for it
(``BadInput`` is a ``ValueError``, ``NotFound`` a ``LookupError``), so code that knows
nothing of Kairos still handles them sensibly.
"""

from __future__ import annotations


class KairosError(Exception):
    """Any failure the engine reports."""

    message: str
    status: int | None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BadInput(KairosError, ValueError):
    """The input is wrong, and nothing of it was written."""


class NotFound(KairosError, LookupError):
    """No such feature group, view, model or other object."""


class Conflict(KairosError):
    """The request conflicts with what exists (a name taken, a pipeline running already)."""


class Unauthorised(KairosError, PermissionError):
    """The API key is missing, unknown, or lacks the scope the request needs."""


class Unavailable(KairosError, ConnectionError):
    """Not now: a server or an engine behind it is out of reach, loading, or at capacity."""


class InternalError(KairosError):
    """The engine's own fault; a server logs the cause."""


__all__ = [
    "BadInput",
    "Conflict",
    "InternalError",
    "KairosError",
    "NotFound",
    "Unauthorised",
    "Unavailable",
]
