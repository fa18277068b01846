"""Ingest errors: one base class; whether a database error is worth retrying decides acks.
And how the HTTP side answers errors: the one error body of every Loom API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from asyncpg.exceptions import _base as _asyncpg_base
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody
from starlette.exceptions import HTTPException


class IngestError(Exception):
    """Base class of ingest errors."""


class MigrationError(IngestError):
    """The migration files or the recorded migrations are inconsistent; ingest will not start."""


# SQLSTATE classes that depend on the rows written, not on the database's health: retrying
# the same rows fails again, so the batch is split to find the rows to dead-letter.
#   22 data exception (e.g. "\u0000" in jsonb), 23 integrity constraint violation,
#   54 program limit exceeded (e.g. an index row too large for a btree).
_DATA_CLASSES = ("22", "23", "54")


def is_data_error(exc: BaseException) -> bool:
    """True when ``exc`` is caused by the rows themselves (poison), False when it is transient
    (connection lost, database shutting down, not accepting connections, deadlock...)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _DATA_CLASSES
    # asyncpg's client-side "invalid input for query argument" (a value it cannot encode)
    return isinstance(exc, _asyncpg_base.DataError)


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = (
    dict.fromkeys((HTTPException, RequestValidationError, Exception), error_answer)
)
