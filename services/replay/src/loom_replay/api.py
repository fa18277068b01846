"""The replay API (seed 000's Replay Engine, plus deterministic replay and forks).

- ``POST /api/replay/create`` (query parameters as in seed 000, or a JSON body):
  ``trace_id`` | ``task_id`` | ``session_id``, optional ``start_time`` / ``end_time``
  (epoch seconds or ISO 8601) -> 201 ``{"sessionId", "session_id", "total", "index": -1, ...}``
- ``GET /api/replay/{id}``, ``DELETE /api/replay/{id}``
- ``POST /api/replay/{id}/step?direction=forward|backward`` and
  ``POST /api/replay/{id}/jump?index=N`` -> ``{"event", "index", "total", "state", ...}``
  (``state=task`` answers only the event's task and its memory, ``state=none`` no state)
- ``WS /api/replay/{id}/play?speed=&from=&type=&node=&error=`` (play.py)
- ``POST /api/replay/deterministic`` ``{"taskId", "overrides"?, "waitS"?}``
- ``POST /api/replay/fork`` ``{"taskId", "fromStep", "changes": {...}, "waitS"?}``

Errors answer ``{"detail": reason}``: 404 unknown session / task / no events, 409 at the first
or last event (or the task has not finished), 410 events gone, 422 bad index / filter / input,
502 dispatcher trouble.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .engine import ReplayEngine
from .errors import Invalid
from .play import play
from .recording import Overrides
from .runs import Runs

router = APIRouter()


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CreateReplay(_Model):
    """What to replay: a trace, a task or a session (several narrow it down), in a time window."""

    trace_id: str | None = Field(default=None, min_length=1, max_length=128)
    task_id: str | None = Field(default=None, min_length=1, max_length=128)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    start_time: datetime | None = Field(default=None, description="epoch seconds or ISO 8601")
    end_time: datetime | None = Field(default=None, description="epoch seconds or ISO 8601")


class DeterministicReplay(_Model):
    task_id: str = Field(min_length=1, max_length=128)
    overrides: Overrides | None = Field(
        default=None,
        description="tamper with the recording before replaying it (tests what a replay detects)",
    )
    wait_s: float | None = Field(
        default=None, ge=0, le=300, description="how long to wait for the replay task"
    )


class ForkChanges(_Model):
    """What the fork changes. ``script`` is the scripted plan from ``fromStep`` on;
    ``parameters`` are merged into the original's (``parameters.script`` replaces the whole script)."""

    provider: str | None = Field(default=None, description="LLM provider for the live steps ('scripted')")
    model: str | None = Field(default=None, min_length=1)
    prompt: str | None = None
    tools: list[str] | None = Field(default=None, description="the tools the live steps may use")
    parameters: dict[str, Any] | None = None
    script: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    system_prompt: str | None = None
    max_steps: int | None = Field(default=None, ge=1, le=1000)


class ForkReplay(_Model):
    task_id: str = Field(min_length=1, max_length=128)
    from_step: int = Field(ge=1, description="1-based: steps before it come from the recording")
    changes: ForkChanges = Field(default_factory=ForkChanges)
    wait_s: float | None = Field(default=None, ge=0, le=300)


def _engine(request: Request) -> ReplayEngine:
    engine: ReplayEngine = request.app.state.engine
    return engine


def _runs(request: Request) -> Runs:
    runs: Runs = request.app.state.runs
    return runs


@router.post("/api/replay/create", status_code=201)
async def create_replay(
    request: Request,
    trace_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    task_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    session_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    start_time: Annotated[datetime | None, Query(description="epoch seconds or ISO 8601")] = None,
    end_time: Annotated[datetime | None, Query(description="epoch seconds or ISO 8601")] = None,
    body: Annotated[CreateReplay | None, Body()] = None,
) -> JSONResponse:
    spec = CreateReplay(
        trace_id=trace_id, task_id=task_id, session_id=session_id, start_time=start_time, end_time=end_time
    )
    if body is not None:
        spec = spec.model_copy(update=body.model_dump(exclude_none=True))
    session = await _engine(request).create(
        trace_id=spec.trace_id,
        task_id=spec.task_id,
        session_id=spec.session_id,
        start=spec.start_time,
        end=spec.end_time,
    )
    # "session_id": the name seed 000's Studio front end reads
    return JSONResponse({**session.describe(), "session_id": session.session_id}, status_code=201)


@router.get("/api/replay/{session_id}")
async def get_replay(session_id: str, request: Request) -> dict[str, Any]:
    return (await _engine(request).get(session_id)).describe()


@router.delete("/api/replay/{session_id}", status_code=204)
async def delete_replay(session_id: str, request: Request) -> None:
    await _engine(request).delete(session_id)


StateScope = Annotated[
    Literal["full", "task", "none", "true", "false"],
    Query(
        description="the reconstructed state to answer with: full (default), task (only the event's "
        "task and its memory) or none; true/false mean full/none"
    ),
]


def _scope(state: str) -> str:
    return {"true": "full", "false": "none"}.get(state, state)


def _json(body: dict[str, Any]) -> Response:
    # the state can be megabytes: encode it once, without FastAPI's jsonable_encoder walk
    return Response(orjson.dumps(body, default=str), media_type="application/json")


@router.post("/api/replay/{session_id}/step")
async def replay_step(
    session_id: str,
    request: Request,
    direction: Literal["forward", "backward"] = "forward",
    state: StateScope = "full",
) -> Response:
    return _json(await _engine(request).step(session_id, direction, scope=_scope(state)))


@router.post("/api/replay/{session_id}/jump")
async def replay_jump(session_id: str, request: Request, index: int, state: StateScope = "full") -> Response:
    return _json(await _engine(request).jump(session_id, index, scope=_scope(state)))


@router.websocket("/api/replay/{session_id}/play")
async def replay_play(websocket: WebSocket, session_id: str) -> None:
    params = websocket.query_params
    unknown = set(params) - {"speed", "from", "type", "node", "error"}
    engine: ReplayEngine = websocket.app.state.engine
    await play(
        websocket,
        engine,
        session_id,
        speed=params.get("speed"),
        start=params.get("from"),
        type_=params.get("type"),
        node=params.get("node"),
        error=params.get("error"),
        max_gap_s=engine.settings.play_max_gap_s,
        unknown=sorted(unknown),
    )


@router.post("/api/replay/deterministic")
async def deterministic_replay(spec: DeterministicReplay, request: Request) -> JSONResponse:
    status, body = await _runs(request).deterministic(spec.task_id, spec.overrides, spec.wait_s)
    return JSONResponse(body, status_code=status)


@router.post("/api/replay/fork")
async def fork_replay(spec: ForkReplay, request: Request) -> JSONResponse:
    changes = spec.changes.model_dump(by_alias=True)
    if spec.changes.script is not None and spec.changes.parameters and "script" in spec.changes.parameters:
        raise Invalid("give the new plan either as changes.script or as changes.parameters.script, not both")
    status, body = await _runs(request).fork(spec.task_id, spec.from_step, changes, spec.wait_s)
    return JSONResponse(body, status_code=status)
