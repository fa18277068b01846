"""The A2A endpoints: agent cards (``GET .../.well-known/agent-card.json``) and the JSON-RPC 2.0
binding (``POST /a2a/<agentId>``, ``POST /a2a`` for the deployment), answers as JSON or, for the
streaming methods, as Server-Sent Events.

Every JSON-RPC answer is HTTP 200 with a JSON-RPC response, whatever the input: malformed JSON is
a parse error, a body that is no request object an invalid request, a method this server does
not have "method not found", wrong params "invalid params", an A2A-Version other than 1.0
"version not supported", and anything unexpected an internal error (logged), never a 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter

from ..rate_limit import refused_submission
from ..state import State, StateDep
from . import errors
from .cards import SECURED, CardBook, agent_card, deployment_card, unheard_card
from .feed import EventTail
from .listing import TaskIndex
from .methods import METHODS, STREAMING, SUBMITTING, Call, Runtime, Stream
from .settings import A2ASettings

log = logging.getLogger(__name__)

VERSION_HEADER = "A2A-Version"
CARD_PATH = "/.well-known/agent-card.json"
CARD_MAX_AGE_S = 60
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.\d+)?\s*$")
_AGENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

CALLS = Counter(
    "loom_dispatcher_a2a_calls_total",
    "A2A JSON-RPC calls by method (other: a method this server does not have) and outcome "
    "(ok, or the JSON-RPC error code)",
    ["method", "outcome"],
)


def runtime_of(app: FastAPI) -> Runtime:
    """The app's A2A runtime, made on first use."""
    runtime = getattr(app.state, "a2a", None)
    if runtime is None:
        state = cast(State, app.state.loom)
        settings = A2ASettings()
        index = TaskIndex(state.redis, state.settings.redis_prefix, settings.list_window)
        runtime = app.state.a2a = Runtime(settings, CardBook(), EventTail(), index)
    return cast(Runtime, runtime)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Hear the heartbeats' agent cards while the app runs (after the app's own start-up)."""
    runtime = runtime_of(app)
    await runtime.cards.start(cast(State, app.state.loom).broker.connection)
    try:
        yield
    finally:
        await runtime.cards.stop()


router = APIRouter(tags=["a2a"], lifespan=lifespan)


# -- agent cards --------------------------------------------------------------------------------


def _base_url(runtime: Runtime, request: Request) -> str:
    return (runtime.settings.public_url or str(request.base_url)).rstrip("/")


def _card_response(card: dict[str, Any], request: Request, state: State) -> Response:
    if state.keys.required:  # the card is public; calling the agent needs a key
        card = {**card, **SECURED}
    body = json.dumps(card, separators=(",", ":")).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"Cache-Control": f"public, max-age={CARD_MAX_AGE_S}", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get(CARD_PATH, summary="The A2A agent card of the deployment")
@router.get(f"/a2a{CARD_PATH}", summary="The A2A agent card of the deployment")
async def deployment_card_endpoint(request: Request, state: StateDep) -> Response:
    runtime = runtime_of(request.app)
    heard = runtime.cards.all()
    named = {card.agent_id for card in heard}
    known = state.dispatcher.agents.known if state.dispatcher.agents is not None else []
    cards = sorted([*heard, *(unheard_card(a) for a in known if a not in named)], key=lambda c: c.agent_id)
    return _card_response(deployment_card(cards, _base_url(runtime, request)), request, state)


@router.get(
    "/a2a/{agent_id}" + CARD_PATH,
    summary="The A2A agent card of one agent",
    responses={404: {"description": "no such agent"}, 503: {"description": "the registry did not answer"}},
)
async def agent_card_endpoint(agent_id: str, request: Request, state: StateDep) -> Response:
    runtime = runtime_of(request.app)
    card = runtime.cards.get(agent_id)
    if card is None:
        known = await state.dispatcher.is_known(agent_id) if _AGENT_ID.match(agent_id) else False
        if known is None:
            raise HTTPException(503, "the registry did not answer which agents exist; try again")
        if not known:
            close = state.dispatcher.unknown_reason(agent_id)[1]
            hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
            raise HTTPException(404, f"no agent {agent_id!r}: no instance of it ever registered{hint}")
        card = await runtime.cards.wait(agent_id, runtime.settings.card_wait_s) or unheard_card(agent_id)
    url = f"{_base_url(runtime, request)}/a2a/{agent_id}"
    return _card_response(agent_card(card, url), request, state)


# -- JSON-RPC -----------------------------------------------------------------------------------


@router.post("/a2a", summary="A2A JSON-RPC endpoint of the deployment (every agent's tasks)")
async def deployment_rpc(request: Request, state: StateDep) -> Response:
    return await _rpc(request, state, None)


@router.post("/a2a/{agent_id}", summary="A2A JSON-RPC endpoint of one agent")
async def agent_rpc(agent_id: str, request: Request, state: StateDep) -> Response:
    return await _rpc(request, state, agent_id)


RpcId = str | int | None


async def _rpc(request: Request, state: StateDep, agent_id: str | None) -> Response:
    rpc_id: RpcId = None
    method = "other"
    try:
        runtime = runtime_of(request.app)
        payload = await _payload(request, runtime.settings.max_request_bytes)
        rpc_id = _request_id(payload)
        asked, params = _envelope(payload)
        handler = METHODS.get(asked)
        if handler is None:
            raise errors.method_not_found(asked)
        method = asked
        _check_version(request)
        if method in SUBMITTING and (refused := refused_submission(request, state.submits)) is not None:
            CALLS.labels(method, "429").inc()
            return refused
        result = await handler(Call(state, runtime, agent_id), params)
    except errors.A2AError as exc:
        CALLS.labels(method, str(exc.code)).inc()
        return _error(rpc_id, exc)
    except Exception:
        log.exception("A2A call failed")
        CALLS.labels(method, "-32603").inc()
        return _error(rpc_id, errors.internal("the dispatcher could not answer; try again"))
    CALLS.labels(method, "ok").inc()
    if method in STREAMING:
        stream = cast(Stream, result)
        return StreamingResponse(_sse(rpc_id, stream), media_type="text/event-stream", headers=_SSE_HEADERS)
    return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "result": result})


async def _payload(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise errors.invalid_request(f"the request is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise errors.invalid_request(f"the request is over {limit} bytes")
    try:
        return json.loads(body, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.parse_error(str(exc)) from exc
    except RecursionError as exc:
        raise errors.parse_error("nested too deeply") from exc


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _request_id(payload: Any) -> RpcId:
    """The id of a JSON-RPC 2.0 request object (what its error answers carry)."""
    if isinstance(payload, list):
        raise errors.invalid_request("batch requests are not supported")
    if not isinstance(payload, dict):
        raise errors.invalid_request("the body must be a JSON-RPC request object")
    rpc_id = payload.get("id")
    if isinstance(rpc_id, bool) or not isinstance(rpc_id, str | int | None):
        raise errors.invalid_request("id must be a string, an integer or null")
    return rpc_id


def _envelope(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The method and params of a JSON-RPC 2.0 request object."""
    if payload.get("jsonrpc") != "2.0":
        raise errors.invalid_request('jsonrpc must be exactly "2.0"')
    method = payload.get("method")
    if not isinstance(method, str) or not method:
        raise errors.invalid_request("method must be a non-empty string")
    params = payload.get("params", {})
    if not isinstance(params, dict):
        raise errors.invalid_params("params must be an object", [("params", "not an object")])
    return method, params


def _check_version(request: Request) -> None:
    """A2A-Version (header, else query parameter) must be 1.0; none means 0.3 (spec 3.6.2)."""
    requested = request.headers.get(VERSION_HEADER) or request.query_params.get(VERSION_HEADER) or "0.3"
    match = _VERSION.match(requested)
    if match is None or (int(match.group(1)), int(match.group(2))) != (1, 0):
        raise errors.version_not_supported(requested.strip()[:32])


def _error(rpc_id: RpcId, exc: errors.A2AError) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "error": exc.body()})


def _frame(body: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


async def _sse(rpc_id: RpcId, stream: Stream) -> AsyncIterator[bytes]:
    """The stream responses as SSE ``data:`` events (a JSON-RPC response each), a comment line
    on a quiet stream, and an ``event: error`` with the JSON-RPC error if it fails."""
    try:
        async for response in stream:
            if response is None:
                yield b": ping\n\n"
            else:
                yield _frame({"jsonrpc": "2.0", "id": rpc_id, "result": response})
    except errors.A2AError as exc:
        yield _frame({"jsonrpc": "2.0", "id": rpc_id, "error": exc.body()}, "error")
    except Exception:
        log.exception("A2A stream failed")
        failure = errors.internal("the stream broke off; resume it with SubscribeToTask")
        yield _frame({"jsonrpc": "2.0", "id": rpc_id, "error": failure.body()}, "error")
    finally:
        await stream.aclose()
