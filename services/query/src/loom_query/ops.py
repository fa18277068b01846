"""The ops endpoints: /healthz, /readyz (NATS, database reachable and migrated), /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from loom_protocol.http import Liveness, Readiness
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .state import StateDep

router = APIRouter(tags=["ops"])


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: StateDep) -> JSONResponse:
    database, reason = await state.database_ready()
    nats = state.broker.connection.is_connected
    answer = Readiness.of(reason, nats=nats, database=database)
    return JSONResponse(answer.to_wire(), answer.status)


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


router.add_api_route("/healthz", Liveness.ok)  # live: the process answers
