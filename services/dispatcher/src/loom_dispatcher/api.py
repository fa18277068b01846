"""REST API: POST /api/tasks, GET /api/tasks/{task_id} (and its /stream, SSE),
POST /api/tasks/{task_id}/cancel, POST /api/tasks/{task_id}/approve and /reject."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from loom_protocol import (
    ApprovalInput,
    ErrorBody,
    Task,
    TaskStatus,
    TaskStatusChanged,
    TaskSubmission,
    TraceContext,
    is_terminal,
    subjects,
)
from loom_protocol.limits import MAX_TASK_BYTES, NATS_MAX_PAYLOAD
from nats.aio.msg import Msg
from nats.js.errors import NoStreamResponseError
from pydantic import ValidationError

from .admission import WAIT_FOR_AGENT, differing_fields, wants_to_wait
from .body_limit import LimitedBodyRoute
from .metrics import CONFLICTS, UNKNOWN_AGENT
from .rate_limit import refused_submission
from .state import State, StateDep
from .streaming import answer_events
from .telemetry import current_trace

log = logging.getLogger(__name__)

router = APIRouter(tags=["tasks"], route_class=LimitedBodyRoute)

_DONE_OR_NOT: dict[int | str, dict[str, Any]] = {
    200: {"model": Task, "description": "the task has ended (its terminal status)"},
    202: {"model": Task, "description": "the task is accepted and not finished yet"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (404, 409, 413, 422, 503)}


def _task_body(task: Task) -> dict[str, Any]:
    return task.to_wire()


def _conflict(task_id: str, fields: list[str]) -> JSONResponse:
    CONFLICTS.labels("http").inc()
    message = (
        f"task {task_id!r} already exists with a different {', '.join(fields)}; "
        "resubmit the same body to read it, or use a new taskId"
    )
    body = ErrorBody.of(409, message, code="task_id_conflict", taskId=task_id, differingFields=fields)
    return JSONResponse(body.to_wire(), 409)


async def _published(state: State, task: Task) -> bool:
    """Publish the submission (False: JetStream already had this task id); 503 when JetStream
    did not acknowledge it: not known to be accepted, the client may retry the same id."""
    try:
        return await state.outbox.submitted(task)
    except (TimeoutError, NoStreamResponseError) as exc:  # nats' TimeoutError is one too
        reason = f"JetStream did not acknowledge task {task.task_id!r} in time; retry the same taskId"
        raise HTTPException(503, reason) from exc


async def _recorded(state: State, task_id: str, tries: int = 200, every_s: float = 0.01) -> Task | None:
    """The stored task, looked up ``tries`` times (about 2 s) while the submit JetStream kept
    (another request's, or the consumer's) stores it; None if it never appears."""
    for _ in range(tries):
        if (task := await state.store.get(task_id)) is not None:
            return task
        await asyncio.sleep(every_s)
    return None


@router.post(
    "/api/tasks",
    status_code=202,
    response_model=Task,
    responses={
        **_DONE_OR_NOT,
        **_ERRORS,
        429: {"model": ErrorBody, "description": "the API key's submission rate is spent (Retry-After)"},
    },
    description=(
        "Submit a task. The same taskId with the same body is idempotent (200/202 with the task); "
        "with a different body it is 409. A task for an agent the registry has never seen is 404 "
        "(code unknown_agent, with the closest known names) unless waitForAgent is set. Past the "
        "key's submission rate it is 429 with Retry-After."
    ),
)
async def submit_task(
    submission: TaskSubmission,
    request: Request,
    state: StateDep,
    wait: Annotated[float, Query(ge=0, le=3600, description="seconds to wait for the outcome")] = 0,
    wait_for_agent: Annotated[
        bool,
        Query(
            alias=WAIT_FOR_AGENT,
            description=(
                "accept a task for an agent the registry has not seen yet: it waits for an instance "
                "(up to LOOM_NO_INSTANCE_TIMEOUT_S) instead of a 404; the same as metadata.waitForAgent"
            ),
        ),
    ] = False,
    traceparent: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    if (refused := refused_submission(request, state.submits)) is not None:
        return refused
    size = len(json.dumps(submission.parameters, separators=(",", ":"), ensure_ascii=False).encode())
    if size > state.settings.max_parameters_bytes:
        raise HTTPException(
            413, f"parameters are {size} bytes; the limit is {state.settings.max_parameters_bytes} bytes"
        )
    fields = submission.model_dump(exclude_none=True)
    if wait_for_agent:  # in the task itself, so the consumer that routes it knows too
        fields["metadata"] = {**fields.get("metadata", {}), WAIT_FOR_AGENT: True}
    # the server span continues the caller's traceparent; without tracing, keep the caller's own
    trace = current_trace() or (
        TraceContext(traceparent=traceparent) if _valid_traceparent(traceparent) else TraceContext.new()
    )
    task = Task(**fields, trace=trace)
    if (task_size := len(task.to_json())) > MAX_TASK_BYTES:
        # its assignment (this plus the dispatcher's fields and headers) must fit NATS's max_payload
        message = (
            f"the task is {task_size} bytes as JSON; the limit is {MAX_TASK_BYTES} bytes "
            f"(NATS max_payload {NATS_MAX_PAYLOAD} less room for headers and the dispatcher's fields)"
        )
        body = ErrorBody.of(413, message, code="too_large", limit=MAX_TASK_BYTES, size=task_size)
        return JSONResponse(body.to_wire(), 413)
    wait = min(wait, state.settings.max_wait_s)

    existing = await state.store.get(task.task_id)
    if existing is not None and (differing := differing_fields(existing, task)):
        return _conflict(task.task_id, differing)
    if existing is not None and (wait == 0 or is_terminal(existing.status)):
        return JSONResponse(_task_body(existing), status_code=200 if is_terminal(existing.status) else 202)
    if existing is None and not wants_to_wait(task):
        # None (the registry did not answer): accepted as before, the task waits for an instance
        if await state.dispatcher.is_known(task.target_agent) is False:
            UNKNOWN_AGENT.labels("http").inc()
            reason, close = state.dispatcher.unknown_reason(task.target_agent)
            body = ErrorBody.of(404, reason, code="unknown_agent", agent=task.target_agent, suggestions=close)
            return JSONResponse(body.to_wire(), 404)

    watch = await state.outbox.watch_final(task.task_id) if wait > 0 else None
    ended: Task | None = None  # the task as stored, when this process announced its end
    try:
        if existing is None:
            # its delivery to this process's consumer waits for this routing (routing_here)
            with state.dispatcher.routing_here(task.task_id):
                stored_new = await _published(state, task)
                if stored_new:
                    # routed now, as the submission's consumer would route it when it arrives:
                    # stored (so a GET right after this answer finds it) and given to an instance
                    # without waiting for JetStream to deliver it back; another replica's
                    # consumer that gets it first picks, and this finds it stored (one pick)
                    try:
                        await state.dispatcher.submit(task)
                    except Exception as exc:  # JetStream has it: the consumer or the sweeper routes it
                        log.warning("task not routed at submit: %r", exc, extra={"task_id": task.task_id})
            if not stored_new:
                # JetStream already had this task id (a concurrent submit, or one whose answer was
                # lost): the one it kept decides; a different body is a conflict
                recorded = await _recorded(state, task.task_id)
                if recorded is not None and (differing := differing_fields(recorded, task)):
                    return _conflict(task.task_id, differing)
        if watch is not None:
            deadline = time.monotonic() + wait
            # a task that existed before the subscription may have ended in between: look again.
            # A new one cannot have: its final status comes after our publish, which the
            # subscription precedes on this connection.
            current = await state.store.get(task.task_id) if existing is not None else None
            if current is None or not is_terminal(current.status):
                left = max(0.0, deadline - time.monotonic())
                try:
                    ended = await asyncio.wait_for(watch.finished, timeout=left)
                except TimeoutError:
                    pass
    finally:
        if watch is not None:
            watch.close()
    current = ended or await state.store.get(task.task_id)
    if current is None:  # accepted by JetStream, not yet recorded by a dispatcher
        return JSONResponse(_task_body(task), status_code=202)
    return JSONResponse(_task_body(current), status_code=200 if is_terminal(current.status) else 202)


def _valid_traceparent(value: str | None) -> bool:
    if not value:
        return False
    try:
        TraceContext(traceparent=value)
    except ValueError:
        return False
    return True


@router.get("/api/tasks/{task_id}", responses=_ERRORS, response_model_exclude_none=True)
async def get_task(task_id: str, state: StateDep) -> Task:
    task = await state.store.get(task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id!r}")
    return task


@router.get(
    "/api/tasks/{task_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": (
                "Server-Sent Events: one `data:` event per answer chunk (a TaskStreamChunk: delta, "
                "index, step, done, discard, attempt), then `event: done` with the task's status, result "
                "and error once it is terminal, or `event: timeout` when nothing came for `timeout` s"
            ),
        },
        **_ERRORS,
    },
)
async def stream_task(
    task_id: str,
    state: StateDep,
    idle_s: Annotated[
        float,
        Query(
            alias="timeout",
            gt=0,
            le=3600,
            description="seconds without a chunk or the task's end before giving up",
        ),
    ] = 60.0,
) -> StreamingResponse:
    """The answer of a task submitted with ``action: "stream"``, as it is produced.

    Other tasks stream no chunks: their stream is the ``done`` event when they end.
    """
    if await state.store.get(task_id) is None:
        raise HTTPException(404, f"no task with id {task_id!r}")
    reader = state.answers.follow(task_id)

    async def on_status(msg: Msg) -> None:
        try:
            change = TaskStatusChanged.from_json(msg.data)
        except (ValidationError, ValueError):
            return  # the status consumer dead-letters it
        if change.final:
            reader.queue.put_nowait(change)

    try:
        sub = await state.broker.connection.subscribe(subjects.task_status(task_id), cb=on_status)
    except BaseException:
        state.answers.leave(reader)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in answer_events(reader, lambda: state.store.get(task_id), timeout_s=idle_s):
                yield event
        finally:
            state.answers.leave(reader)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/api/tasks/{task_id}/cancel", status_code=202, response_model=Task, responses={**_DONE_OR_NOT, **_ERRORS}
)
async def cancel_task(task_id: str, state: StateDep) -> JSONResponse:
    task = await state.store.get(task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id!r}")
    if is_terminal(task.status):
        raise HTTPException(409, f"task {task_id!r} already ended with status {task.status.value}")
    task = await state.dispatcher.cancel(task_id) or task
    return JSONResponse(_task_body(task), status_code=200 if is_terminal(task.status) else 202)


_DECIDED: dict[int | str, dict[str, Any]] = {
    202: {"model": Task, "description": "the decision is recorded and the task dispatched again"},
    409: {"model": ErrorBody, "description": "the task waits for no decision (not_waiting_for_approval)"},
}
_DECISION_BODY = Body(description="optional; an empty body decides with nothing more said (by, reason unset)")


async def _decide(state: State, task_id: str, approved: bool, given: ApprovalInput | None) -> JSONResponse:
    """Record the decision on the call ``task_id`` waits on: 202 with the task, else 404 / 409."""
    if await state.store.get(task_id) is None:
        raise HTTPException(404, f"no task with id {task_id!r}")
    task = await state.dispatcher.decide(task_id, approved, given or ApprovalInput())
    if task is None:  # not waiting, or another decision got there first
        current = await state.store.get(task_id)
        status = current.status.value if current is not None else "unknown"
        message = (
            f"task {task_id!r} is not waiting for approval (status {status}); "
            f"only a task in status {TaskStatus.INPUT_REQUIRED.value} can be approved or rejected"
        )
        body = ErrorBody.of(409, message, code="not_waiting_for_approval", taskId=task_id, taskStatus=status)
        return JSONResponse(body.to_wire(), 409)
    return JSONResponse(_task_body(task), status_code=202)


@router.post(
    "/api/tasks/{task_id}/approve",
    status_code=202,
    response_model=Task,
    responses={**_ERRORS, **_DECIDED},
    description=(
        "Approve the tool call the task waits on (status input_required, its pendingApproval): the "
        "task is dispatched again and runs the call, with `arguments` instead of the agent's when "
        "given. 409 (code not_waiting_for_approval) when the task waits for no decision, including "
        "one already decided."
    ),
)
async def approve_task(
    task_id: str, state: StateDep, decision: Annotated[ApprovalInput | None, _DECISION_BODY] = None
) -> JSONResponse:
    return await _decide(state, task_id, True, decision)


@router.post(
    "/api/tasks/{task_id}/reject",
    status_code=202,
    response_model=Task,
    responses={**_ERRORS, **_DECIDED},
    description=(
        "Reject the tool call the task waits on: the task is dispatched again, the call is never run "
        "and the agent is told the rejection (`reason`). A rejection takes no `arguments` (422). "
        "409 (code not_waiting_for_approval) when the task waits for no decision."
    ),
)
async def reject_task(
    task_id: str, state: StateDep, decision: Annotated[ApprovalInput | None, _DECISION_BODY] = None
) -> JSONResponse:
    if decision is not None and decision.arguments is not None:
        body = ErrorBody.invalid(
            [{"loc": ("body", "arguments"), "msg": "a rejection takes no arguments (only approve does)"}]
        )
        return JSONResponse(body.to_wire(), 422)
    return await _decide(state, task_id, False, decision)
