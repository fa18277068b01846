"""The A2A methods over Loom: each takes the JSON-RPC ``params`` and answers a result object, or
an async iterator of stream responses (``SendStreamingMessage``, ``SubscribeToTask``) whose
NATS subscriptions are made when it is first iterated and ended when it closes.

Every answer is read from the shared Redis task store and the NATS subjects, so any replica
serves any task: a stream started on one replica can be resumed with ``SubscribeToTask`` on
another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from loom_protocol import ApprovalInput, Task, TaskStatus, TraceContext, is_terminal
from loom_protocol.base import new_id
from loom_protocol.limits import MAX_TASK_BYTES, check_json_value
from nats.js.errors import NoStreamResponseError
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from ..admission import wants_to_wait
from ..state import State
from ..telemetry import current_trace
from . import errors
from .cards import CardBook
from .feed import EventTail, TaskFeed, following
from .listing import TaskIndex, list_tasks
from .mapping import context_of, decision_of, state_of, task_inputs, task_of
from .progress import progress
from .settings import A2ASettings
from .wire import ListTasksRequest, SendMessageRequest, TaskRequest

log = logging.getLogger(__name__)

TARGET_AGENT = "targetAgent"
"""The metadata key naming the agent of a message sent to the deployment's endpoint."""

Stream = AsyncGenerator[dict[str, Any] | None, None]
Result = dict[str, Any] | Stream
M = TypeVar("M", bound=BaseModel)


@dataclass
class Runtime:
    """What the A2A endpoints of one dispatcher app hold (besides the dispatcher's State)."""

    settings: A2ASettings
    cards: CardBook
    events: EventTail
    index: TaskIndex


@dataclass(frozen=True)
class Call:
    """One JSON-RPC call: the app's state, and the agent whose endpoint it reached (None: the
    deployment's endpoint, which sees every agent's tasks)."""

    state: State
    a2a: Runtime
    agent_id: str | None

    async def task(self, task_id: str) -> Task:
        """The stored task ``task_id`` when this endpoint sees it, else TaskNotFoundError."""
        task = await self.state.store.get(task_id)
        if task is None or (self.agent_id is not None and task.target_agent != self.agent_id):
            raise errors.task_not_found(task_id)
        return task

    def follow(self, task: Task, *, steps: bool) -> contextlib.AbstractAsyncContextManager[TaskFeed]:
        return following(self.state.broker.connection, task.task_id, self.a2a.events if steps else None)

    async def drain(self, stream: Stream, timeout_s: float) -> None:
        """Consume ``stream`` until it ends or ``timeout_s`` passes."""
        async with contextlib.aclosing(stream):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    async for _ in stream:
                        pass

    def progress(self, feed: TaskFeed, task: Task) -> Stream:
        settings = self.a2a.settings
        return progress(
            self.state.store, feed, task, tick_s=settings.keepalive_s, record_wait_s=settings.record_wait_s
        )


def parsed(model: type[M], params: dict[str, Any]) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise errors.invalid_fields(exc) from exc


# -- tasks ------------------------------------------------------------------------------------


async def get_task(call: Call, params: dict[str, Any]) -> Result:
    request = parsed(TaskRequest, params)
    return task_of(await call.task(request.id))


async def list_tasks_method(call: Call, params: dict[str, Any]) -> Result:
    request = parsed(ListTasksRequest, params)
    return await list_tasks(call.a2a.index, call.state.store, call.agent_id, request)


async def cancel_task(call: Call, params: dict[str, Any]) -> Result:
    """Cancel a task and wait (``cancel_wait_s``) for a task at a worker to end; the task as it
    then stands (still WORKING when its worker did not stop in time: it ends CANCELED later)."""
    request = parsed(TaskRequest, params)
    task = await call.task(request.id)
    if is_terminal(task.status):
        raise errors.not_cancelable(task.task_id, state_of(task).value)
    async with call.follow(task, steps=False) as feed:
        current = await call.state.dispatcher.cancel(task.task_id) or task
        if not is_terminal(current.status):
            await call.drain(call.progress(feed, current), call.a2a.settings.cancel_wait_s)
    return task_of(await call.state.store.get(task.task_id) or current)


async def subscribe_to_task(call: Call, params: dict[str, Any]) -> Result:
    request = parsed(TaskRequest, params)
    task = await call.task(request.id)
    if is_terminal(task.status):
        raise errors.unsupported(
            f"task {task.task_id!r} already ended in {state_of(task).value}; read it with GetTask",
            taskId=task.task_id,
        )

    async def stream() -> Stream:
        async with call.follow(task, steps=True) as feed:
            current = await call.state.store.get(task.task_id) or task  # read after subscribing
            async for response in call.progress(feed, current):
                yield response

    return stream()


# -- messages -------------------------------------------------------------------------------


async def send_message(call: Call, params: dict[str, Any]) -> Result:
    """Start a task, or answer the one waiting for approval; block until it ends or waits for
    input (up to the dispatcher's ``max_wait_s``) unless ``configuration.returnImmediately``."""
    request = parsed(SendMessageRequest, params)
    start = await _start_of(call, request)
    wait_s = 0.0 if request.configuration.return_immediately else call.state.settings.max_wait_s
    async with call.follow(start.task, steps=False) as feed:
        first = await start.begin()
        if start.refused:
            wait_s = call.a2a.settings.refusal_wait_s  # the answer is the refusal
        if wait_s > 0:
            await call.drain(call.progress(feed, first), wait_s)
    return {"task": task_of(await call.state.store.get(first.task_id) or first)}


async def send_streaming_message(call: Call, params: dict[str, Any]) -> Result:
    request = parsed(SendMessageRequest, params)
    start = await _start_of(call, request)

    async def stream() -> Stream:
        async with call.follow(start.task, steps=True) as feed:
            first = await start.begin()
            async for response in call.progress(feed, first):
                yield response

    return stream()


@dataclass(frozen=True)
class Start:
    """What a message does, checked and ready: ``begin`` submits the new task (or records the
    decision) once the caller follows the task; ``refused``: the task is for an agent the
    registry never saw, and the dispatcher's consumer will refuse it."""

    task: Task
    begin: Callable[[], Awaitable[Task]]
    refused: bool = False


async def _start_of(call: Call, request: SendMessageRequest) -> Start:
    if request.configuration.task_push_notification_config is not None:
        raise errors.push_not_supported()
    if request.message.task_id:
        return await _answer(call, request)
    return await _new_task(call, request)


async def _new_task(call: Call, request: SendMessageRequest) -> Start:
    state = call.state
    parameters, metadata = task_inputs(request)
    agent_id = call.agent_id or metadata.pop(TARGET_AGENT, None)
    if not isinstance(agent_id, str):
        raise errors.invalid_params(
            f"name the agent in the message metadata {TARGET_AGENT}, or send to /a2a/<agentId>",
            [(f"message.metadata.{TARGET_AGENT}", "missing")],
        )
    size = len(json.dumps(parameters, separators=(",", ":")).encode())
    if size > state.settings.max_parameters_bytes:
        limit = state.settings.max_parameters_bytes
        raise errors.invalid_params(f"the task's parameters are {size} bytes; the limit is {limit} bytes")
    try:
        task = Task(
            target_agent=agent_id,
            parameters=parameters,
            metadata=metadata,
            session_id=request.message.context_id or new_id(),
            trace=current_trace() or TraceContext.new(),
        )
    except ValidationError as exc:
        raise errors.invalid_fields(exc) from exc
    for name, value in (("parameters", parameters), ("metadata", metadata)):
        if (problem := check_json_value(value)) is not None:  # NUL, lone surrogates, NaN, depth
            raise errors.invalid_params(f"message {name}: {problem}", [(f"message.{name}", problem)])
    if (task_size := len(task.to_json())) > MAX_TASK_BYTES:  # the assignment must fit NATS' payload
        raise errors.invalid_params(
            f"the task is {task_size} bytes as JSON; the limit is {MAX_TASK_BYTES} bytes"
        )
    known = True if wants_to_wait(task) else await state.dispatcher.is_known(agent_id)
    refused = known is False

    async def begin() -> Task:
        try:
            stored_new = await state.outbox.submitted(task)
        except (TimeoutError, NoStreamResponseError) as exc:  # nats' TimeoutError is one too
            raise errors.internal(
                "JetStream did not acknowledge the task in time; send the message again"
            ) from exc
        try:
            await call.a2a.index.add(task)
        except (RedisError, OSError) as exc:  # the task runs all the same; ListTasks misses it
            log.warning("task not indexed for ListTasks: %r", exc, extra={"task_id": task.task_id})
        if stored_new and not refused:  # an unknown agent's task: the consumer refuses it
            try:  # stored now, so GetTask finds it at once (else the consumer stores it)
                await state.dispatcher.accept(task)
            except (RedisError, OSError) as exc:
                log.warning("task not stored at submit: %r", exc, extra={"task_id": task.task_id})
        return task

    return Start(task, begin, refused)


async def _answer(call: Call, request: SendMessageRequest) -> Start:
    """A message to a task waiting for approval: the decision it carries."""
    message = request.message
    task = await call.task(message.task_id or "")
    if message.context_id and message.context_id != context_of(task):
        raise errors.invalid_params(
            f"contextId {message.context_id!r} is not the context of task {task.task_id!r}",
            [("message.contextId", f"the task's context is {context_of(task)!r}")],
        )
    if is_terminal(task.status):
        raise errors.unsupported(
            f"task {task.task_id!r} ended in {state_of(task).value}; it takes no more messages",
            taskId=task.task_id,
        )
    if task.status is not TaskStatus.INPUT_REQUIRED:
        raise errors.unsupported(
            f"task {task.task_id!r} is {state_of(task).value}: a Loom task takes a message only while it "
            "waits for approval of a tool call (TASK_STATE_INPUT_REQUIRED)",
            taskId=task.task_id,
        )
    approved, given = decision_of(message)
    return Start(task, lambda: _decide(call, task, approved, given))


async def _decide(call: Call, task: Task, approved: bool, given: ApprovalInput) -> Task:
    decided = await call.state.dispatcher.decide(task.task_id, approved, given)
    if decided is None:  # decided by someone else meanwhile, or cancelled
        current = await call.state.store.get(task.task_id) or task
        raise errors.unsupported(
            f"task {task.task_id!r} no longer waits for approval (it is {state_of(current).value})",
            taskId=task.task_id,
        )
    return decided


# -- what Loom does not offer -------------------------------------------------------------------


async def push_config(call: Call, params: dict[str, Any]) -> Result:
    raise errors.push_not_supported()


async def extended_card(call: Call, params: dict[str, Any]) -> Result:
    raise errors.unsupported("there is no extended agent card (capabilities.extendedAgentCard is false)")


Method = Callable[[Call, dict[str, Any]], Awaitable[Result]]
METHODS: dict[str, Method] = {
    "SendMessage": send_message,
    "SendStreamingMessage": send_streaming_message,
    "GetTask": get_task,
    "ListTasks": list_tasks_method,
    "CancelTask": cancel_task,
    "SubscribeToTask": subscribe_to_task,
    "CreateTaskPushNotificationConfig": push_config,
    "GetTaskPushNotificationConfig": push_config,
    "ListTaskPushNotificationConfigs": push_config,
    "DeleteTaskPushNotificationConfig": push_config,
    "GetExtendedAgentCard": extended_card,
}
STREAMING = frozenset({"SendStreamingMessage", "SubscribeToTask"})
SUBMITTING = frozenset({"SendMessage", "SendStreamingMessage"})
"""The methods that may start a task: held to the per-key submission rate."""
