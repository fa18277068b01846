"""The HTTP calls of the client, described without doing any I/O.

Each function returns a :class:`Call`: which service, method, path, query and body, and how to
read a successful answer. :class:`~loom_client.LoomClient` and
:class:`~loom_client.AsyncLoomClient` send the same calls, one with a blocking and one with an
asynchronous ``httpx`` client, so both speak exactly the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from loom_protocol import ApiKeyList, ApiKeyRecord, CreatedApiKey, LoomModel, Scope, Task, TaskSubmission
from loom_protocol.base import new_id
from pydantic import TypeAdapter, ValidationError

from .errors import LoomError, error_from_response
from .models import AgentInfo, ReplayFrame, ReplaySession, SessionDetail, TaskDetail, TaskPage

__all__ = [
    "MAX_SERVER_WAIT_S",
    "Call",
    "RetryPolicy",
    "Service",
    "agents",
    "approve",
    "cancel",
    "create_key",
    "create_replay",
    "delete_replay",
    "finish",
    "get_replay",
    "get_task",
    "jump_replay",
    "list_keys",
    "list_tasks",
    "reject",
    "revoke_key",
    "session",
    "step_replay",
    "stream_path",
    "submission_body",
    "submit",
    "task_detail",
]

T = TypeVar("T")
M = TypeVar("M", bound=LoomModel)
Service = Literal["dispatcher", "query", "registry", "replay"]

MAX_SERVER_WAIT_S = 300.0
"""The longest ``?wait=`` the client asks the dispatcher for (its ``max_wait_s``); a longer wait
goes on with :meth:`LoomClient.wait`."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP call: where it goes, what it sends and how its answer is read.

    Attributes:
        service: The service it is sent to (its base URL comes from the settings).
        method: The HTTP method.
        path: The path, ids already escaped.
        parse: Reads a successful (< 400) answer.
        params: Query parameters (None values are left out).
        json: The JSON body, if any.
        extra_s: Seconds the call may take beyond the client's timeout (a server-side wait).
        idempotent: Sending it twice has the effect of sending it once (every GET; a submission,
            which carries its task id). Only such a call is sent again after an answer that may
            have been lost; any call is sent again when it surely did not reach the service
            (connection refused) or the service refused it unprocessed (502/503/504).
    """

    service: Service
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    extra_s: float = 0.0
    idempotent: bool | None = None

    @property
    def repeatable(self) -> bool:
        """Whether sending it again after a lost answer is safe (GETs unless told otherwise)."""
        return self.method == "GET" if self.idempotent is None else self.idempotent

    def query(self) -> httpx.QueryParams:
        """The query parameters: None left out, lists repeated, booleans lower case."""
        out: list[tuple[str, str | int | float | bool | None]] = []
        for name, value in (self.params or {}).items():
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                if item is None:
                    continue
                if isinstance(item, bool):
                    out.append((name, "true" if item else "false"))
                elif isinstance(item, datetime):
                    out.append((name, item.isoformat()))
                else:
                    out.append((name, str(item)))
        return httpx.QueryParams(out)


def finish(call: Call[T], response: httpx.Response) -> T:
    """Read ``response`` to ``call``: its parsed body, or the error it stands for.

    Raises:
        LoomError: The matching subclass for an error status; ``LoomError`` (code
            ``bad_answer``) for a success whose body is not what the call expects.
    """
    if response.status_code >= 400:
        raise error_from_response(response)
    try:
        return call.parse(response)
    except (ValidationError, ValueError) as exc:
        raise LoomError(
            f"{call.method} {call.path}: unexpected answer ({exc.__class__.__name__}: {str(exc)[:300]})",
            code="bad_answer",
            status=response.status_code,
        ) from exc


RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that mean the service did not process the call (too many submissions for the key's
rate, a proxy without a backend, not ready, a gateway timeout): the call is sent again, to the
next dispatcher if several."""


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a call is sent again: bounded, with a doubling backoff.

    Attributes:
        retries: How many times a call is sent again at most (0: never).
        backoff_s: The wait before the first retry.
        max_backoff_s: The longest wait between two tries.
    """

    retries: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 2.0

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first)."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(0, retry - 1)))

    def after_error(self, call: Call[Any], exc: httpx.TransportError) -> bool:
        """Whether ``call`` may be sent again after it got no answer: always when it never
        reached the service (no connection), else only when it is idempotent."""
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) or call.repeatable

    @staticmethod
    def after_answer(call: Call[Any], response: httpx.Response) -> bool:
        """Whether ``call`` may be sent again after ``response``: a 429/502/503/504 (not processed),
        or a 500 of an idempotent call (whatever it did, doing it again changes nothing)."""
        status = response.status_code
        return status in RETRY_STATUSES or (status == 500 and call.repeatable)


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return cls.model_validate_json(response.content)

    return parse


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


def submission_body(
    agent: str | TaskSubmission,
    parameters: Mapping[str, Any] | None = None,
    *,
    action: str | None = None,
    task_id: str | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    parent_task_id: str | None = None,
    source_agent: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /api/tasks`` (camelCase), with a task id of the client's own when none
    is given, so that sending it again (after a lost answer) is the same task.

    The body is not validated here: the dispatcher is the authority on what it accepts and
    answers a bad one with 422 (:class:`~loom_client.InvalidRequest`, with the fields).

    Args:
        agent: The target agent, or a whole :class:`TaskSubmission` (the other arguments, when
            given, replace its fields).
        parameters: The task's input.
        action: ``execute`` (default) or ``stream`` (the answer is streamed as it is produced).
        task_id: The task id; a new one when not given.
        session_id: The session the task belongs to.
        metadata: Task metadata (``approvalTools``, ``timeoutS``...).
        parent_task_id: The delegating task.
        source_agent: Who submits it.
    """
    body: dict[str, Any] = agent.to_wire() if isinstance(agent, TaskSubmission) else {"targetAgent": agent}
    given = {
        "parameters": dict(parameters) if parameters is not None else None,
        "action": action,
        "taskId": task_id,
        "sessionId": session_id,
        "metadata": dict(metadata) if metadata is not None else None,
        "parentTaskId": parent_task_id,
        "sourceAgent": source_agent,
    }
    body.update({key: value for key, value in given.items() if value is not None})
    body.setdefault("parameters", {})
    body.setdefault("taskId", new_id())
    return body


def _task(response: httpx.Response) -> Task:
    return Task.model_validate_json(response.content)


def submit(body: Mapping[str, Any], *, wait_s: float = 0.0, wait_for_agent: bool = False) -> Call[Task]:
    """``POST /api/tasks``: 200 with the ended task, 202 with one still running."""
    wait_s = max(0.0, min(wait_s, MAX_SERVER_WAIT_S))
    params = {"wait": wait_s or None, "waitForAgent": True if wait_for_agent else None}
    return Call(
        "dispatcher",
        "POST",
        "/api/tasks",
        _task,
        params=params,
        json=dict(body),
        extra_s=wait_s,
        idempotent="taskId" in body,  # the same task id twice is one task
    )


def get_task(task_id: str) -> Call[Task]:
    """``GET /api/tasks/{taskId}`` of the dispatcher: the task as it is now."""
    return Call("dispatcher", "GET", f"/api/tasks/{_seg(task_id)}", _task)


def stream_path(task_id: str) -> str:
    """The path of the task's answer stream (Server-Sent Events, :mod:`loom_client.streaming`)."""
    return f"/api/tasks/{_seg(task_id)}/stream"


def cancel(task_id: str) -> Call[Task]:
    """``POST /api/tasks/{taskId}/cancel``: 409 when the task has already ended."""
    return Call("dispatcher", "POST", f"/api/tasks/{_seg(task_id)}/cancel", _task)


def _decision(
    task_id: str, verb: str, arguments: Mapping[str, Any] | None, by: str | None, reason: str | None
) -> Call[Task]:
    given = {"arguments": dict(arguments) if arguments is not None else None, "by": by, "reason": reason}
    body = {key: value for key, value in given.items() if value is not None}
    return Call("dispatcher", "POST", f"/api/tasks/{_seg(task_id)}/{verb}", _task, json=body)


def approve(
    task_id: str, arguments: Mapping[str, Any] | None = None, by: str | None = None, reason: str | None = None
) -> Call[Task]:
    """``POST /api/tasks/{taskId}/approve``: run the call the task waits on."""
    return _decision(task_id, "approve", arguments, by, reason)


def reject(task_id: str, by: str | None = None, reason: str | None = None) -> Call[Task]:
    """``POST /api/tasks/{taskId}/reject``: the call the task waits on is never run."""
    return _decision(task_id, "reject", None, by, reason)


def list_tasks(
    *,
    status: str | Sequence[str] | None = None,
    agent: str | None = None,
    session: str | None = None,
    parent: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    text: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[TaskPage]:
    """``GET /api/tasks`` of the query service: one page of the search, newest first."""
    statuses = [status] if isinstance(status, str) else list(status or ())
    params = {
        "status": statuses,
        "agent": agent,
        "session": session,
        "parent": parent,
        "since": since,
        "until": until,
        "q": text,
        "limit": limit,
        "cursor": cursor,
    }
    return Call("query", "GET", "/api/tasks", _model(TaskPage), params=params)


def session(session_id: str) -> Call[SessionDetail]:
    """``GET /api/sessions/{sessionId}``: the session's tasks and totals."""
    return Call("query", "GET", f"/api/sessions/{_seg(session_id)}", _model(SessionDetail))


def task_detail(task_id: str) -> Call[TaskDetail]:
    """``GET /api/tasks/{taskId}`` of the query service: the stored task, events and children."""
    return Call("query", "GET", f"/api/tasks/{_seg(task_id)}", _model(TaskDetail))


_AGENTS = TypeAdapter(list[AgentInfo])


def _agents(response: httpx.Response) -> list[AgentInfo]:
    body = response.json()
    raw = body.get("agents", []) if isinstance(body, dict) else body
    return _AGENTS.validate_python(raw)


def agents() -> Call[list[AgentInfo]]:
    """``GET /api/agents`` of the registry: every agent with a live instance."""
    return Call("registry", "GET", "/api/agents", _agents)


def create_replay(
    *,
    task_id: str | None = None,
    trace_id: str | None = None,
    session_id: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> Call[ReplaySession]:
    """``POST /api/replay/create``: a replay session over a task's, trace's or session's events."""
    given = {
        "taskId": task_id,
        "traceId": trace_id,
        "sessionId": session_id,
        "startTime": start_time.isoformat() if start_time is not None else None,
        "endTime": end_time.isoformat() if end_time is not None else None,
    }
    body = {key: value for key, value in given.items() if value is not None}
    return Call("replay", "POST", "/api/replay/create", _model(ReplaySession), json=body)


def get_replay(session_id: str) -> Call[ReplaySession]:
    """``GET /api/replay/{id}``: the session and its cursor."""
    return Call("replay", "GET", f"/api/replay/{_seg(session_id)}", _model(ReplaySession))


def delete_replay(session_id: str) -> Call[None]:
    """``DELETE /api/replay/{id}``."""
    return Call("replay", "DELETE", f"/api/replay/{_seg(session_id)}", lambda _: None)


ReplayState = Literal["full", "task", "none"]


def step_replay(
    session_id: str, direction: Literal["forward", "backward"] = "forward", state: ReplayState = "none"
) -> Call[ReplayFrame]:
    """``POST /api/replay/{id}/step``: 409 (:class:`~loom_client.Conflict`) at either end."""
    params = {"direction": direction, "state": state}
    return Call("replay", "POST", f"/api/replay/{_seg(session_id)}/step", _model(ReplayFrame), params=params)


def jump_replay(session_id: str, index: int, state: ReplayState = "none") -> Call[ReplayFrame]:
    """``POST /api/replay/{id}/jump``: 422 for an index outside the session."""
    params = {"index": index, "state": state}
    return Call("replay", "POST", f"/api/replay/{_seg(session_id)}/jump", _model(ReplayFrame), params=params)


def create_key(name: str, scopes: Iterable[Scope | str]) -> Call[CreatedApiKey]:
    """``POST /api/keys`` of the dispatcher (admin scope): a new API key, shown in the answer only.

    Not sent again after a lost answer (a second key would be made); the scopes are checked by
    the dispatcher (422 for an unknown one).
    """
    body = {"name": name, "scopes": [str(scope) for scope in scopes]}
    return Call("dispatcher", "POST", "/api/keys", _model(CreatedApiKey), json=body)


def _key_records(response: httpx.Response) -> list[ApiKeyRecord]:
    return ApiKeyList.model_validate_json(response.content).keys


def list_keys() -> Call[list[ApiKeyRecord]]:
    """``GET /api/keys`` of the dispatcher (admin scope): the stored keys' records, by name."""
    return Call("dispatcher", "GET", "/api/keys", _key_records)


def revoke_key(key_id: str) -> Call[None]:
    """``DELETE /api/keys/{id}`` of the dispatcher (admin scope): 404 for an unknown id."""
    return Call("dispatcher", "DELETE", f"/api/keys/{_seg(key_id)}", lambda _: None)
