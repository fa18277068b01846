"""REST API: POST /api/tasks, GET /api/tasks/{task_id}, POST /api/tasks/{task_id}/cancel."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from loom_protocol import ErrorBody, Task, TaskSubmission, TraceContext, is_terminal
from nats.errors import TimeoutError as NatsTimeoutError

from .state import StateDep
from .telemetry import current_trace

router = APIRouter(tags=["tasks"])

_DONE_OR_NOT: dict[int | str, dict[str, Any]] = {
    200: {"model": Task, "description": "the task has ended (its terminal status)"},
    202: {"model": Task, "description": "the task is accepted and not finished yet"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (404, 409, 413, 422, 503)}


def _task_body(task: Task) -> dict[str, Any]:
    return task.to_wire()


@router.post("/api/tasks", status_code=202, response_model=Task, responses={**_DONE_OR_NOT, **_ERRORS})
async def submit_task(
    submission: TaskSubmission,
    state: StateDep,
    wait: Annotated[float, Query(ge=0, le=3600, description="seconds to wait for the outcome")] = 0,
    traceparent: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    size = len(json.dumps(submission.parameters, separators=(",", ":")).encode())
    if size > state.settings.max_parameters_bytes:
        raise HTTPException(
            413, f"parameters are {size} bytes; the limit is {state.settings.max_parameters_bytes} bytes"
        )
    fields = submission.model_dump(exclude_none=True)
    # the server span continues the caller's traceparent; without tracing, keep the caller's own
    trace = current_trace() or (
        TraceContext(traceparent=traceparent) if _valid_traceparent(traceparent) else TraceContext.new()
    )
    task = Task(**fields, trace=trace)
    wait = min(wait, state.settings.max_wait_s)

    existing = await state.store.get(task.task_id)
    if existing is not None and (wait == 0 or is_terminal(existing.status)):
        return JSONResponse(_task_body(existing), status_code=200 if is_terminal(existing.status) else 202)

    watch = await state.outbox.watch_final(task.task_id) if wait > 0 else None
    try:
        if existing is None:
            try:
                await state.outbox.submitted(task)
            except NatsTimeoutError as exc:  # not known to be accepted: the client may retry the same id
                reason = f"JetStream did not acknowledge task {task.task_id!r} in time; retry the same taskId"
                raise HTTPException(503, reason) from exc
        if watch is not None:
            deadline = time.monotonic() + wait
            # a task that existed before the subscription may have ended in between: look again.
            # A new one cannot have: its final status comes after our publish, which the
            # subscription precedes on this connection.
            current = await state.store.get(task.task_id) if existing is not None else None
            if current is None or not is_terminal(current.status):
                try:
                    await asyncio.wait_for(watch.finished, timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    pass
    finally:
        if watch is not None:
            await watch.unsubscribe()
    current = await state.store.get(task.task_id)
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
