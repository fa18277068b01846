"""The replay API (Studio's time travel, plus deterministic replay and forks).

- ``POST /api/replay/create`` (query parameters as Studio sends them, or a JSON body):
  ``trace_id`` | ``task_id`` | ``session_id``, optional ``start_time`` / ``end_time``
  (epoch seconds or ISO 8601) -> 201 ``{"sessionId", "total", "index": -1, "createdAt", ...}``
- ``GET /api/replay/{id}``, ``DELETE /api/replay/{id}``
- ``POST /api/replay/{id}/step?direction=forward|backward`` and
  ``POST /api/replay/{id}/jump?index=N`` -> ``{"event", "index", "total", "state", ...}``
  (``state=task`` answers only the event's task and its memory, ``state=none`` no state)
- ``WS /api/replay/{id}/play?speed=&from=&type=&node=&error=`` (play.py)
- ``POST /api/replay/deterministic`` ``{"taskId", "overrides"?, "waitS"?}``
- ``POST /api/replay/fork`` ``{"taskId", "fromStep", "changes": {...}, "waitS"?}``

Errors answer ``{"error": {"code", "message"}}`` (errors.py): 404 unknown session / task / no
events, 409 at the first or last event (or the task has not finished), 410 events gone, 422 bad
index / filter / input, 502 dispatcher trouble.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, WebSocket, WebSocketException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from loom_protocol import ForkChanges, LoomModel
from loom_protocol.http import ErrorBody
from loom_protocol.limits import bad_text, check_json_value
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError
from starlette.requests import HTTPConnection

from .errors import Invalid
from .play import play
from .recording import Overrides
from .runs import CALLER_AUTHORIZATION
from .state import StateDep


async def _storable_request(connection: HTTPConnection) -> None:
    """Refuse a path or query value nothing downstream can hold (a NUL or a lone surrogate):
    422 over HTTP, a policy-violation close over WebSocket."""
    places = [("path", k, v) for k, v in connection.path_params.items() if isinstance(v, str)]
    places += [("query", k, v) for k, v in connection.query_params.multi_items()]
    for where, name, value in places:
        what = bad_text(name) or bad_text(value)
        if what is None:
            continue
        field = name if bad_text(name) is None else "?"
        if connection.scope["type"] == "websocket":
            raise WebSocketException(code=1008, reason=f"{where} {field} contains {what}")
        raise RequestValidationError([{"loc": (where, field), "msg": f"contains {what}"}])


router = APIRouter(
    tags=["replay"],
    responses={code: {"model": ErrorBody} for code in (404, 409, 410, 422, 502, 503)},
    dependencies=[Depends(_storable_request)],
)


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # strings a database and JSON can hold, finite numbers, bounded nesting
        if (reason := check_json_value(data)) is not None:
            raise PydanticCustomError("unstorable_value", "{reason}", {"reason": reason})
        return data


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


class ForkRequestChanges(ForkChanges):
    """What the fork changes: what the worker runs the live steps with (``ForkChanges``), and the
    new task's input. ``script`` is the scripted plan from ``fromStep`` on; ``parameters`` are
    merged into the original's (``parameters.script`` replaces the whole script)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    parameters: dict[str, Any] | None = None
    script: list[dict[str, Any]] | None = Field(default=None, min_length=1)


class ForkReplay(_Model):
    task_id: str = Field(min_length=1, max_length=128)
    from_step: int = Field(ge=1, description="1-based: steps before it come from the recording")
    changes: ForkRequestChanges = Field(default_factory=ForkRequestChanges)
    wait_s: float | None = Field(default=None, ge=0, le=300)


class ReplaySession(LoomModel):
    """A replay session: a cursor over the selected events, kept in Redis."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    total: int = Field(description="events selected")
    index: int = Field(description="the cursor: -1 before the first event")
    checkpoint_every: int | None = None
    selection: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class ReplayFrame(LoomModel):
    """The event at the cursor after a step or a jump, and the state reconstructed up to it."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    event: dict[str, Any] = Field(description="the CloudEvent at the cursor")
    index: int
    total: int
    has_previous: bool
    has_next: bool
    state: dict[str, Any] | None = Field(default=None, description="absent with state=none")


class ReplayRun(LoomModel):
    """The outcome of a deterministic replay or a fork (the original and the new run compared)."""

    model_config = ConfigDict(extra="allow")


@router.post("/api/replay/create", status_code=201, response_model_exclude_none=True)
async def create_replay(
    state: StateDep,
    trace_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    task_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    session_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    start_time: Annotated[datetime | None, Query(description="epoch seconds or ISO 8601")] = None,
    end_time: Annotated[datetime | None, Query(description="epoch seconds or ISO 8601")] = None,
    body: Annotated[CreateReplay | None, Body()] = None,
) -> ReplaySession:
    spec = CreateReplay(
        trace_id=trace_id, task_id=task_id, session_id=session_id, start_time=start_time, end_time=end_time
    )
    if body is not None:
        spec = spec.model_copy(update=body.model_dump(exclude_none=True))
    session = await state.engine.create(
        trace_id=spec.trace_id,
        task_id=spec.task_id,
        session_id=spec.session_id,
        start=spec.start_time,
        end=spec.end_time,
    )
    return ReplaySession.model_validate(session.describe())


@router.get("/api/replay/{session_id}", response_model_exclude_none=True)
async def get_replay(session_id: str, state: StateDep) -> ReplaySession:
    return ReplaySession.model_validate((await state.engine.get(session_id)).describe())


@router.delete("/api/replay/{session_id}", status_code=204)
async def delete_replay(session_id: str, state: StateDep) -> None:
    await state.engine.delete(session_id)


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


@router.post("/api/replay/{session_id}/step", response_model=ReplayFrame)
async def replay_step(
    session_id: str,
    loom: StateDep,
    direction: Literal["forward", "backward"] = "forward",
    state: StateScope = "full",
) -> Response:
    return _json(await loom.engine.step(session_id, direction, scope=_scope(state)))


@router.post("/api/replay/{session_id}/jump", response_model=ReplayFrame)
async def replay_jump(session_id: str, loom: StateDep, index: int, state: StateScope = "full") -> Response:
    return _json(await loom.engine.jump(session_id, index, scope=_scope(state)))


@router.websocket("/api/replay/{session_id}/play")
async def replay_play(websocket: WebSocket, session_id: str, loom: StateDep) -> None:
    params = websocket.query_params
    unknown = set(params) - {"speed", "from", "type", "node", "error"}
    engine = loom.engine
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


@router.post("/api/replay/deterministic", response_model=ReplayRun)
async def deterministic_replay(
    spec: DeterministicReplay, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    CALLER_AUTHORIZATION.set(authorization)
    status, body = await state.runs.deterministic(spec.task_id, spec.overrides, spec.wait_s)
    return JSONResponse(body, status_code=status)


@router.post("/api/replay/fork", response_model=ReplayRun)
async def fork_replay(
    spec: ForkReplay, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    CALLER_AUTHORIZATION.set(authorization)
    changes = spec.changes.model_dump(by_alias=True)
    if spec.changes.script is not None and spec.changes.parameters and "script" in spec.changes.parameters:
        raise Invalid("give the new plan either as changes.script or as changes.parameters.script, not both")
    status, body = await state.runs.fork(spec.task_id, spec.from_step, changes, spec.wait_s)
    return JSONResponse(body, status_code=status)
