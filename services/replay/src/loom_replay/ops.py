"""The ops endpoints: /healthz, /readyz (Redis and the events table), /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from loom_protocol.http import Liveness, Readiness
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from .state import StateDep

router = APIRouter(tags=["ops"])


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: StateDep) -> JSONResponse:
    problems: list[str] = []
    try:
        await state.redis.ping()
    except (RedisError, OSError) as exc:
        problems.append(f"redis: {type(exc).__name__}: {exc}")
    database = await state.reader.ready()
    if database is not None:
        problems.append(database)
    reason = "; ".join(problems) or None
    answer = Readiness.of(
        reason, redis=not any(p.startswith("redis") for p in problems), database=database is None
    )
    return JSONResponse(answer.to_wire(), answer.status)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


router.add_api_route("/healthz", Liveness.ok)  # live: the process answers
