"""The shapes every Loom HTTP API shares: the error body and the ops endpoints' answers.

Every service answers an error (an HTTP error it raised, a request that failed validation, an
unknown route, a body too large) with one body, :class:`ErrorBody`::

    {"error": {"code": "not_found", "message": "no task with id 'x'", ...details}}

``code`` is a stable snake_case identifier a client may branch on; ``message`` is for people;
any further keys are details of that code (``fields`` for a validation error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from pydantic import ConfigDict, Field

from loom_protocol.base import LoomModel

__all__ = ["ErrorBody", "ErrorDetail", "FieldError", "Liveness", "Readiness", "error_code"]


def error_code(status: int) -> str:
    """Return the default error code of an HTTP status: its reason phrase in snake_case.

    Args:
        status: An HTTP status code, e.g. ``404``.

    Returns:
        e.g. ``"not_found"``, ``"content_too_large"``; ``"http_<status>"`` for an unknown status.
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"http_{status}"
    if status == 413:  # RFC 9110's name; Python < 3.13 still says "Request Entity Too Large"
        phrase = "Content Too Large"
    return "_".join(phrase.lower().replace("-", " ").split())


class FieldError(LoomModel):
    """Why one input field was refused."""

    field: str = Field(description="where: e.g. 'body.targetAgent', 'query.limit'")
    reason: str


class ErrorDetail(LoomModel):
    """The ``error`` member of :class:`ErrorBody`. Details beyond code and message are allowed."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="stable snake_case identifier, e.g. not_found, invalid_request")
    message: str = Field(description="what went wrong, for people")


class ErrorBody(LoomModel):
    """The body of every error answer of every Loom HTTP API."""

    error: ErrorDetail

    @classmethod
    def of(cls, status: int, message: Any, code: str | None = None, **details: Any) -> ErrorBody:
        """Build the body of an error answered with ``status``.

        Args:
            status: The HTTP status of the answer.
            message: What went wrong; a non-string (e.g. a raised ``detail`` list) becomes the
                ``details`` member and the message the status's phrase.
            code: The error code; default :func:`error_code` of ``status``.
            **details: Further members of ``error``.

        Returns:
            The body.
        """
        if not isinstance(message, str):
            details.setdefault("details", message)
            message = error_code(status).replace("_", " ")
        return cls(error=ErrorDetail(code=code or error_code(status), message=message, **details))

    @classmethod
    def answer(cls, exc: BaseException) -> tuple[int, ErrorBody]:
        """Return the status and body that answer an exception a web framework caught.

        Read by duck typing, so this package needs no web framework: an exception with an
        ``errors()`` method (a request validation error) answers 422 ``invalid_request``; one
        with ``status_code`` and ``detail`` (an HTTP exception) answers that status with the
        detail as message; anything else 500 ``internal_error``, without its text.

        Args:
            exc: The exception.

        Returns:
            (HTTP status, body).
        """
        errors = getattr(exc, "errors", None)
        if callable(errors):
            return 422, cls.invalid(errors())
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            return status, cls.of(
                status, getattr(exc, "detail", None) or error_code(status).replace("_", " ")
            )
        return 500, cls.of(500, "internal error; the service logged it", code="internal_error")

    @classmethod
    def invalid(cls, errors: Iterable[Mapping[str, Any]]) -> ErrorBody:
        """Build the 422 body of a request that failed validation.

        Args:
            errors: pydantic's error list (``ValidationError.errors()``), whose ``loc`` may
                start with where the value came from (``body``, ``query``, ``path``...).

        Returns:
            ``code`` ``invalid_request`` with one :class:`FieldError` per reason.
        """
        fields = [
            FieldError(
                field=".".join(str(p) for p in e.get("loc", ())) or "request", reason=str(e.get("msg", ""))
            )
            for e in errors
        ]
        message = "; ".join(f"{f.field}: {f.reason}" for f in fields) or "invalid request"
        return cls(
            error=ErrorDetail(code="invalid_request", message=message, fields=[f.to_wire() for f in fields])
        )


class Liveness(LoomModel):
    """The answer of ``GET /healthz``: the process is up."""

    status: str = "ok"

    @classmethod
    def ok(cls) -> Liveness:
        """The answer of a live process (the ``/healthz`` endpoint itself)."""
        return cls()


class Readiness(LoomModel):
    """The answer of ``GET /readyz`` (HTTP 200 when ``ready``, else 503)."""

    ready: bool
    checks: dict[str, bool] = Field(
        description="each dependency the service needs, e.g. nats, redis, database"
    )
    reason: str | None = Field(default=None, description="why not ready, when known")

    @property
    def status(self) -> int:
        """The HTTP status that answers it: 200 when ready, else 503."""
        return 200 if self.ready else 503

    @classmethod
    def of(cls, reason: str | None = None, **checks: bool) -> Readiness:
        """Ready when every check passed.

        Args:
            reason: Why not ready, when known.
            **checks: Each dependency's state, e.g. ``nats=True, database=False``.

        Returns:
            The answer.
        """
        return cls(ready=all(checks.values()), checks=checks, reason=reason)
