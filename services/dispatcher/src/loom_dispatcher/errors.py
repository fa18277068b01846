"""Dispatcher errors: one base class, each says whether the message is worth redelivering;
and how the HTTP API answers errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody
from starlette.exceptions import HTTPException


class DispatcherError(Exception):
    """Base class of dispatcher errors."""

    retryable = False


class BadSubmission(DispatcherError):
    """A submitted message that can never become a task (dead-lettered with the reason)."""


class RegistryUnavailable(DispatcherError):
    """The registry did not answer a pick in time; the submission is redelivered."""

    retryable = True


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


# every error the HTTP API answers, in the one error body of every Loom API
HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = (
    dict.fromkeys((HTTPException, RequestValidationError, Exception), error_answer)
)
