"""The errors the client raises, one class per way a call can fail.

Every error is a :class:`LoomError`; branch on the subclass, or on ``code`` (the service's
stable error code, e.g. ``unknown_agent``, ``task_id_conflict``, ``not_waiting_for_approval``)::

    LoomError
    ├── NotFound         404: no such task, agent, session, replay session
    ├── Conflict         409: a different body under a known task id, a task that already ended...
    ├── Unauthorized     401: no API key, or one nobody issued (or revoked): set ``LOOM_API_KEY``
    ├── Forbidden        403: the API key lacks the scope the call needs (``scope``)
    ├── InvalidRequest   any other 4xx: the request was refused (``fields`` say which inputs)
    ├── Unavailable      no answer: connection refused, timed out, a 5xx / 503, or 429 (rate)
    └── Timeout          a wait ran out before the task ended (``task``: how it was then)
"""

from __future__ import annotations

from typing import Any

import httpx
from loom_protocol import ErrorBody, FieldError, Task, error_code
from pydantic import ValidationError

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "LoomError",
    "NotFound",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
    "error_from_status",
    "unavailable",
]


class LoomError(Exception):
    """A call to Loom failed.

    Attributes:
        message: What went wrong, for people.
        code: The service's error code (snake_case), or the client's own (``unavailable``,
            ``timeout``).
        status: The HTTP status of the answer, or None when there was no answer.
        details: The error body's further members (``suggestions``, ``differingFields``,
            ``taskStatus``...), camelCase as on the wire.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class NotFound(LoomError):
    """HTTP 404: the task, agent, session or replay session does not exist.

    An unknown agent (code ``unknown_agent``) has the closest known names in ``suggestions``.
    """

    @property
    def suggestions(self) -> list[str]:
        """For ``unknown_agent``: the known agent names closest to the one asked for."""
        value = self.details.get("suggestions")
        return [str(v) for v in value] if isinstance(value, list) else []


class Conflict(LoomError):
    """HTTP 409: the request contradicts the task's state (a different body under a known
    ``taskId``, a cancel of a task that ended, a decision on a task not waiting for one, a replay
    step past the first or last event)."""


class Unauthorized(LoomError):
    """HTTP 401: the service wants an API key and got none, or one it does not know (never
    issued, or revoked). Set ``LOOM_API_KEY`` (environment or ``.env``), or pass ``api_key=``."""


class Forbidden(LoomError):
    """HTTP 403: the API key is valid but lacks the scope this call needs (``scope``: ``read``,
    ``submit``, ``approve``, ``ingest`` or ``admin``)."""

    @property
    def scope(self) -> str | None:
        """The scope the call needed, when the service said."""
        value = self.details.get("scope")
        return str(value) if value is not None else None


class InvalidRequest(LoomError):
    """Any other HTTP 4xx (422, 413, 410...): the request itself was refused.

    Attributes:
        fields: For a validation error, which inputs were refused and why.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_request",
        status: int | None = None,
        details: dict[str, Any] | None = None,
        fields: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, details=details)
        self.fields: list[FieldError] = fields or []


class Unavailable(LoomError):
    """The service could not be reached or could not answer: connection refused or reset, no
    answer in time, or a 5xx (503: not ready)."""


class Timeout(LoomError):
    """A wait ran out before the task ended.

    Attributes:
        task: The task as it was last seen, when known.
    """

    def __init__(self, message: str, *, task: Task | None = None) -> None:
        super().__init__(message, code="timeout")
        self.task = task


def _body(status: int, content: bytes, reason: str) -> tuple[str, str, dict[str, Any]]:
    """(code, message, details) of an error answer: its ErrorBody, else the status's name."""
    try:
        body = ErrorBody.model_validate_json(content)
    except (ValidationError, ValueError):
        text = content.decode("utf-8", "replace").strip()[:500]
        return error_code(status), text or reason, {}
    extra = dict(body.error.model_extra or {})
    return body.error.code, body.error.message, extra


def _auth_error(status: int, code: str, message: str, details: dict[str, Any]) -> LoomError:
    """:class:`Unauthorized` (401) or :class:`Forbidden` (403), saying what to do about it."""
    if status == 401:
        hint = "set LOOM_API_KEY (or pass api_key=) to a valid API key"
        return Unauthorized(f"{message.rstrip('.')}: {hint}", code=code, status=status, details=details)
    scope = details.get("scope")
    if scope is not None:
        text = f"{message.rstrip('.')}: use a key with scope '{scope}' (or admin)"
    else:
        text = f"{message.rstrip('.')}: the API key lacks the scope this call needs"
    return Forbidden(text, code=code, status=status, details=details)


def error_from_status(status: int, content: bytes, *, where: str = "", reason: str = "") -> LoomError:
    """The error that an HTTP error answer (status >= 400) with body ``content`` stands for.

    Args:
        status: The answer's status.
        content: Its body (Loom's ``ErrorBody``, or anything else).
        where: What was asked (``GET /api/tasks``), for the message of a 5xx.
        reason: The status's phrase, the message when the body says nothing.

    Returns:
        :class:`Unauthorized` (401), :class:`Forbidden` (403), :class:`NotFound` (404),
        :class:`Conflict` (409), :class:`Unavailable` (5xx) or :class:`InvalidRequest` (other
        4xx), with the service's code, message and details.
    """
    code, message, details = _body(status, content, reason)
    if status in (401, 403):
        return _auth_error(status, code, message, details)
    if status == 404:
        return NotFound(message, code=code, status=status, details=details)
    if status == 409:
        return Conflict(message, code=code, status=status, details=details)
    if status >= 500 or status == 429:  # 429: too many submissions for now (the key's rate)
        text = f"{where}: {message}" if where else message
        return Unavailable(text, code=code, status=status, details=details)
    fields: list[FieldError] = []
    raw_fields = details.pop("fields", None)
    if isinstance(raw_fields, list):
        for item in raw_fields:
            try:
                fields.append(FieldError.model_validate(item))
            except ValidationError:
                continue
    return InvalidRequest(message, code=code, status=status, details=details, fields=fields)


def error_from_response(response: httpx.Response) -> LoomError:
    """The error that an HTTP error answer (status >= 400) stands for (see
    :func:`error_from_status`).

    Args:
        response: The answer, its body read.
    """
    where = f"{response.request.method} {response.request.url.path}"
    return error_from_status(
        response.status_code, response.content, where=where, reason=response.reason_phrase
    )


def unavailable(exc: Exception, url: str) -> Unavailable:
    """The error for a call that got no answer (``exc``: the transport's exception)."""
    if isinstance(exc, httpx.TimeoutException):
        reason = "no answer in time"
    elif isinstance(exc, httpx.ConnectError):
        reason = "connection refused or unreachable"
    else:
        reason = type(exc).__name__
    text = str(exc)
    return Unavailable(f"{url}: {reason}{f' ({text})' if text else ''}", code="unavailable")
