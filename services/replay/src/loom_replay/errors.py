"""Replay's errors: each carries the HTTP status, error code and reason the client gets;
and how the HTTP API answers them and every other error (the one body of every Loom API)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody, unavailable
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException


class ReplayError(Exception):
    status = 400
    code: str | None = None  # default: the status's name (loom_protocol.http.error_code)

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def body(self) -> ErrorBody:
        return ErrorBody.of(self.status, self.reason, code=self.code)


class NotFound(ReplayError):
    status = 404


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no replay session {session_id!r}: it expired or never existed")


class Invalid(ReplayError):
    """The request is well-formed but asks for something impossible (a bad index or filter)."""

    status = 422
    code = "invalid_request"


class Conflict(ReplayError):
    """The session cannot move that way now (at its first / last event, or busy)."""

    status = 409


class Gone(ReplayError):
    """The session's events are no longer in the database (retention dropped them)."""

    status = 410


class Upstream(ReplayError):
    """The dispatcher refused or could not be reached."""

    status = 502
    code = "upstream_error"


class Refused(ReplayError):
    """The dispatcher refused the task a replay submits (a 4xx: e.g. its agent is unknown now);
    the replay answers the same status with the dispatcher's reason."""

    code = "refused_by_dispatcher"

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Unavailable(ReplayError):
    status = 503


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = (exc.status, exc.body()) if isinstance(exc, ReplayError) else ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


async def unavailable_answer(_: Request, exc: Exception) -> Response:
    """503 with ``Retry-After`` when a store replay reads fails a request: the events
    (TimescaleDB: refused, closed or lost connections) or the sessions (Redis), or a bounded
    wait on them ran out (``TimeoutError``, an ``OSError``)."""
    what = "the sessions store (Redis)" if isinstance(exc, RedisError) else "the event store (TimescaleDB)"
    status, body, headers = unavailable(f"{what} is not available ({type(exc).__name__}); retry")
    return JSONResponse(body.to_wire(), status, headers=headers)


HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    **dict.fromkeys((ReplayError, HTTPException, RequestValidationError, Exception), error_answer),
    **dict.fromkeys(
        (
            RedisError,
            OSError,
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError,
        ),
        unavailable_answer,
    ),
}
