"""How the query API answers errors: the one error body of every Loom API.

A database error is told apart: unavailable (503), a query cancelled by the statement timeout
(503), a data exception caused by the request's values (a NUL character, a time or number out of
range, SQLSTATE class 22: 422) or a failed query (500).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody
from starlette.exceptions import HTTPException

# SQLSTATE classes that mean "the database is not available", not "this query is wrong":
# 08 connection exception, 53 insufficient resources, 55 object not in prerequisite state
# (e.g. the database does not allow connections), 57 operator intervention (shutdown, cancel)
_UNAVAILABLE = ("08", "53", "55", "57")
# 22 data exception: a value (from the request, or summed over stored rows) out of range
_DATA_EXCEPTION = "22"


def database_error(exc: Exception) -> tuple[int, ErrorBody]:
    if isinstance(exc, asyncpg.QueryCanceledError):
        return 503, ErrorBody.of(
            503, "the query took too long and was cancelled; narrow it", code="query_timeout"
        )
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, asyncpg.PostgresError) and state[:2] == _DATA_EXCEPTION:
        message = f"a value is out of what the database can hold or compute: {exc}; narrow the request"
        return 422, ErrorBody.of(422, message, code="out_of_range")
    if isinstance(exc, asyncpg.PostgresError) and state[:2] not in _UNAVAILABLE:
        return 500, ErrorBody.of(500, f"query failed: {type(exc).__name__}: {exc}", code="query_failed")
    return 503, ErrorBody.of(
        503, f"database unavailable: {type(exc).__name__}: {exc}", code="database_unavailable"
    )


async def error_answer(_: Request, exc: Exception) -> Response:
    database = isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError)
    status, body = database_error(exc) if database else ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = (
    dict.fromkeys(
        (
            HTTPException,
            RequestValidationError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            Exception,
        ),
        error_answer,
    )
)
