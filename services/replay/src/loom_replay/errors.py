"""Replay's errors: each carries the HTTP status and the reason the client gets."""

from __future__ import annotations


class ReplayError(Exception):
    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(ReplayError):
    status = 404


class SessionNotFound(NotFound):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"no replay session {session_id!r}: it expired or never existed")


class Invalid(ReplayError):
    """The request is well-formed but asks for something impossible (a bad index or filter)."""

    status = 422


class Conflict(ReplayError):
    """The session cannot move that way now (at its first / last event, or busy)."""

    status = 409


class Gone(ReplayError):
    """The session's events are no longer in the database (retention dropped them)."""

    status = 410


class Upstream(ReplayError):
    """The dispatcher refused or could not be reached."""

    status = 502


class Unavailable(ReplayError):
    status = 503
