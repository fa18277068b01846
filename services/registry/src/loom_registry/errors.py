"""How the registry's HTTP API answers errors: the one error body of every Loom API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody, unavailable
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


async def unavailable_answer(_: Request, exc: Exception) -> Response:
    """503 with ``Retry-After`` when the registry's state (Redis) fails a request or does not
    answer in time (``OSError``: a refused connection, a ``TimeoutError``)."""
    status, body, headers = unavailable(
        f"the registry's state (Redis) is not available ({type(exc).__name__}); retry"
    )
    return JSONResponse(body.to_wire(), status, headers=headers)


HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    **dict.fromkeys((HTTPException, RequestValidationError, Exception), error_answer),
    **dict.fromkeys((RedisError, OSError), unavailable_answer),
}
