"""The shapes every Loom HTTP API shares: the error body and the ops endpoints' answers.

Every service answers an error (an HTTP error it raised, a request that failed validation, an
unknown route, a body too large) with one body, :class:`ErrorBody`::

    {"error": {"code": "not_found", "message": "no task with id 'x'", ...details}}

``code`` is a stable snake_case identifier a client may branch on; ``message`` is for people;
any further keys are details of that code (``fields`` for a validation error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

from pydantic import ConfigDict, Field

from loom_protocol.base import LoomModel

__all__ = [
    "BodyLimitMiddleware",
    "ErrorBody",
    "ErrorDetail",
    "FieldError",
    "Liveness",
    "Readiness",
    "error_code",
    "unavailable",
]


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


UNAVAILABLE_RETRY_AFTER_S = 1
"""The ``Retry-After`` of an :func:`unavailable` answer, in seconds."""


def unavailable(message: str) -> tuple[int, ErrorBody, dict[str, str]]:
    """Return the status, body and headers of the answer when a store or the broker a request
    needs failed it or did not answer in time: 503 ``unavailable`` with ``Retry-After``, so the
    client tries again.

    Args:
        message: Which store or broker, and what happened.

    Returns:
        (503, body, headers).
    """
    body = ErrorBody.of(503, message, code="unavailable")
    return 503, body, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}


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


AsgiScope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
AsgiReceive = Callable[[], Awaitable[AsgiMessage]]
AsgiSend = Callable[[AsgiMessage], Awaitable[None]]
AsgiApp = Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]
"""The ASGI shapes the package's middlewares (here and in :mod:`loom_protocol.auth`) are typed with."""


class BodyLimitMiddleware:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 with :class:`ErrorBody`
    while it is read, never buffered or parsed whole.

    A declared ``Content-Length`` over the limit is answered before anything is read. Otherwise
    the bytes are counted as the app reads them; once past the limit the app's next read gets an
    empty, final chunk, and whatever the app answers to that truncated body is replaced by the
    413 (frameworks map a failed read to their own answer, e.g. FastAPI's 400). Pure ASGI, like
    :class:`~loom_protocol.auth.ApiKeyMiddleware`, so the package needs no web framework.
    """

    def __init__(self, app: AsgiApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send, int(declared))
        seen = 0
        over = False
        answered = False

        async def counting() -> AsgiMessage:
            nonlocal seen, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message: AsgiMessage) -> None:
            nonlocal answered
            if over:  # the app answered a truncated body: the client gets the 413 instead
                if not answered:
                    answered = True
                    await self._too_large(send)
                return
            await send(message)

        await self.app(scope, counting, guarded)
        if over and not answered:
            await self._too_large(send)

    async def _too_large(self, send: AsgiSend, size: int | None = None) -> None:
        told = f"the body is {size} bytes," if size is not None else "the body is"
        message = f"{told} over the limit of {self.limit} bytes"
        body = ErrorBody.of(413, message, limit=self.limit).to_json()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def header(scope: AsgiScope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) of an ASGI request, or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
