"""The worker's HTTP surface: /healthz, /readyz (NATS, not draining), /metrics; and the one
error body of every Loom API for anything else (e.g. an unknown path)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from loom_protocol.http import ErrorBody, Liveness, Readiness
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from .state import StateDep

router = APIRouter(tags=["ops"])


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: StateDep) -> JSONResponse:
    draining = state.executor.draining
    answer = Readiness.of(
        "draining" if draining else None, nats=state.broker.connection.is_connected, serving=not draining
    )
    return JSONResponse(answer.to_wire(), answer.status)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


router.add_api_route("/healthz", Liveness.ok)  # live: the process answers


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = (
    dict.fromkeys((HTTPException, RequestValidationError, Exception), error_answer)
)
