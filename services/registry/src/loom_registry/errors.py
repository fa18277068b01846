"""How the registry's HTTP API answers errors: the one error body of every Loom API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody
from starlette.exceptions import HTTPException


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = (
    dict.fromkeys((HTTPException, RequestValidationError, Exception), error_answer)
)
