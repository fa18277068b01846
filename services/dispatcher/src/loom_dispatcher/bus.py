"""The dispatcher's side of NATS: what it publishes and the registry it asks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream.nats import NatsBroker
from loom_protocol import (
    MSG_ID_HEADER,
    SUPERSEDED_ATTEMPT_HEADER,
    SUPERSEDED_INSTANCE_HEADER,
    TASKS_STREAM,
    KnownAgents,
    PickReply,
    PickRequest,
    RejectedMessage,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatusChanged,
    TraceContext,
    assigned_msg_id,
    dead_msg_id,
    encode_event,
    status_msg_id,
    subjects,
    submitted_msg_id,
)
from loom_protocol.limits import MAX_TASK_BYTES, wire_size
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from .errors import MessageTooLarge, RegistryUnavailable
from .metrics import SUBMISSIONS_REJECTED
from .telemetry import current_trace, inject_headers, tracer
from .waiters import FinalWaiters, FinalWatch

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS_DROPPED = Counter("loom_dispatcher_events_dropped_total", "Events that could not be published")
SUBMIT_RETRIES = Counter(
    "loom_dispatcher_submit_retries_total",
    "Submissions published again: JetStream did not answer (no stream leader, no ack)",
    ["error"],
)
ANNOUNCE_RETRIES = Counter(
    "loom_dispatcher_announce_retries_total",
    "Task statuses published again: JetStream did not answer (no stream leader, no ack)",
    ["kind", "error"],
)
PUBLISH_FAILED = Counter(
    "loom_dispatcher_publish_failed_total",
    "JetStream publishes not acknowledged (error or timeout)",
    ["kind"],
)
SOURCE = "/services/dispatcher"
_JSON = {"content-type": "application/json"}
FINAL_MSG_ID_SUFFIX = ":final"
"""Ends the ``Nats-Msg-Id`` of a final status this dispatcher announces (:meth:`NatsOutbox.final`)."""
STATUS_MSG_ID_SUFFIX = ":status"
"""Ends the ``Nats-Msg-Id`` of a status on the way this dispatcher announces
(:meth:`NatsOutbox.status`): the worker's report it follows has the same id without it, and the
stream deduplicates by id."""


def _event_headers(event_id: str, trace: TraceContext) -> dict[str, str]:
    headers = {**_JSON, MSG_ID_HEADER: event_id}
    if trace.traceparent:  # so a consumer's span continues the trace the event belongs to
        headers["traceparent"] = trace.traceparent
    return headers


_MAX_RECORD_BYTES = MAX_TASK_BYTES
"""A final status or dead-letter record larger than this is sent without the task's bulk."""


_LIBRARY_HEADERS_BYTES = 256


def _omitted(what: str, size: int) -> dict[str, Any]:
    return {"omitted": f"{what} left out: the record was {size} bytes, over {_MAX_RECORD_BYTES}"}


class PendingAcks:
    """JetStream acks of pipelined publishes, collected off the hot path.

    nats-py's ``publish_async`` futures never time out on their own, so :meth:`expire` (run by
    the sweeper) gives up on acks older than ``timeout_s``; a failure is logged and counted.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._pending: dict[asyncio.Future[Any], tuple[float, str, str]] = {}

    def track(self, fut: asyncio.Future[Any], kind: str, msg_id: str) -> None:
        self._pending[fut] = (time.monotonic(), kind, msg_id)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        _, kind, msg_id = self._pending.pop(fut, (0.0, "?", "?"))
        exc: BaseException | None = TimeoutError("no ack") if fut.cancelled() else fut.exception()
        if exc is not None:
            PUBLISH_FAILED.labels(kind).inc()
            log.warning("%s publish not acknowledged: %r", kind, exc, extra={"msg_id": msg_id})

    def expire(self) -> None:
        oldest = time.monotonic() - self._timeout_s
        for fut, (sent, _, _) in list(self._pending.items()):
            if sent < oldest:
                fut.cancel()

    def __len__(self) -> int:
        return len(self._pending)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the acks still outstanding (at shutdown)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout_s)


class NatsOutbox:
    def __init__(
        self,
        broker: NatsBroker,
        ack_timeout_s: float = 10.0,
        max_stall_s: float = 5.0,
        submit_retry_s: float = 8.0,
        try_timeout_s: float = 2.0,
    ) -> None:
        self._broker = broker
        self._js: JetStreamContext | None = None
        self.acks = PendingAcks(ack_timeout_s)
        self._max_stall_s = max_stall_s
        self._submit_retry_s = submit_retry_s
        self._try_timeout_s = try_timeout_s
        self.waiters = FinalWaiters(lambda: self._broker.connection)

    @property
    def js(self) -> JetStreamContext:
        # one context for the connection: each ``connection.jetstream()`` makes a new one, and
        # each new one opens its own reply subscription on its first ``publish_async``
        if self._js is None:
            self._js = self._broker.connection.jetstream()
        return self._js

    def _check_size(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """Raise :class:`MessageTooLarge` rather than publish what the server would refuse.

        nats-py compares the body alone with ``max_payload``; the server adds the headers, and
        closes the connection for good on a message over it.
        """
        limit = self._broker.connection.max_payload
        # + what the client library may add to the headers (FastStream's correlation id)
        if (size := wire_size(body, headers) + _LIBRARY_HEADERS_BYTES) > limit:
            raise MessageTooLarge(f"a message on {subject} is {size} bytes with headers, over {limit}")

    async def _js_publish(self, subject: str, body: bytes, msg_id: str) -> bool:
        """Publish and wait (up to ``try_timeout_s``) for JetStream's ack; False when it was a
        duplicate (not stored again). The stream's own ack subscription carries the ack: no
        client-library layer per message on the path of every submission."""
        ack = await asyncio.wait_for(await self._pipelined(subject, body, msg_id), self._try_timeout_s)
        return not bool(getattr(ack, "duplicate", False))

    async def _js_publish_async(self, kind: str, subject: str, body: bytes, msg_id: str) -> None:
        """Publish without waiting for the ack; the ack is checked off the hot path.

        Used where the ack decides nothing: the task's state is already in Redis, and a lost
        message is covered there (a lost assignment by the deadline sweep, as before: an
        awaited ack that failed was never retried either, the redelivered message being a
        duplicate by then). Back-pressure: at most the client's pending-ack limit in flight.
        """
        self.acks.track(await self._pipelined(subject, body, msg_id), kind, msg_id)

    async def _pipelined(self, subject: str, body: bytes, msg_id: str) -> asyncio.Future[Any]:
        """Publish on the task stream without waiting: the future of its ack."""
        headers = inject_headers({**_JSON, MSG_ID_HEADER: msg_id})
        self._check_size(subject, body, headers)
        # a stall (the client's pending-ack limit reached) is bounded by a timeout scope: nats-py's
        # wait_stall is a wait_for, which on Python 3.11 runs every publish as a task of its own
        async with asyncio.timeout(self._max_stall_s):
            return await self.js.publish_async(subject, body, stream=TASKS_STREAM.name, headers=headers)

    async def _retried(self, publish: Callable[[], Awaitable[T]], on_retry: Callable[[Exception], None]) -> T:
        """``publish()`` again while JetStream does not answer -- a stream without a leader (an
        election after a node's loss) answers nothing -- or does not ack in time, for up to
        ``submit_retry_s``; then its error is raised. Each try publishes with the same
        ``Nats-Msg-Id``, so the stream stores the message once however often it is sent."""
        deadline = time.monotonic() + self._submit_retry_s
        delay = 0.05
        while True:
            try:
                return await publish()
            except (NoStreamResponseError, NatsTimeoutError, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                on_retry(exc)
                await asyncio.sleep(delay)  # backoff before the next try
                delay = min(delay * 2, 1.0)

    async def _stored(
        self, kind: str, subject: str, body: bytes, msg_id: str, sent: Callable[[], None] | None = None
    ) -> None:
        """Publish a status and wait until the stream stored it (retried as :meth:`_retried`);
        ``sent`` is called once it is first sent."""

        async def once() -> None:
            ack = await self._pipelined(subject, body, msg_id)
            if sent is not None:
                sent()
            await asyncio.wait_for(ack, self._try_timeout_s)

        def retrying(exc: Exception) -> None:
            ANNOUNCE_RETRIES.labels(kind, type(exc).__name__).inc()

        try:
            await self._retried(once, retrying)
        except Exception:
            PUBLISH_FAILED.labels(kind).inc()
            raise

    async def submitted(self, task: Task) -> bool:
        """Publish a submission and wait for JetStream's ack; published again for up to
        ``submit_retry_s`` while JetStream does not answer, then the error is raised.

        Returns False when JetStream already held a submission of this task id (deduplicated:
        this body was not stored).
        """
        subject, body, msg_id = (
            subjects.task_submitted(task.target_agent),
            task.to_json(),
            submitted_msg_id(task.task_id),
        )

        def retrying(exc: Exception) -> None:
            SUBMIT_RETRIES.labels(type(exc).__name__).inc()

        return await self._retried(lambda: self._js_publish(subject, body, msg_id), retrying)

    async def watch_final(self, task_id: str) -> FinalWatch:
        """Start watching a task's final status; the caller closes the watch when done."""
        return await self.waiters.watch(task_id)

    async def assigned(self, task: Task) -> None:
        await self._js_publish_async(
            "assigned",
            subjects.task_assigned(task.instance_id or ""),
            task.to_json(),
            assigned_msg_id(task.task_id, task.attempt),
        )

    async def final(self, task: Task) -> None:
        """Announce a task's terminal state and wait until it is stored: clients, ingest and
        other replicas learn the outcome from it alone. Raises when it could not be stored
        (:meth:`_retried`)."""
        change = TaskStatusChanged.from_task(task, at=datetime.now(UTC), final=True)
        body = change.to_json()
        if len(body) > _MAX_RECORD_BYTES:  # the result is in the task record; waiters learn the end
            change = change.model_copy(update={"result": _omitted("result", len(body))})
            body = change.to_json()
        with self.waiters.announcing(task) as sent:
            await self._stored(
                "final",
                subjects.task_status(task.task_id),
                body,
                status_msg_id(task.task_id, task.attempt, task.status) + FINAL_MSG_ID_SUFFIX,
                sent,
            )

    async def status(self, task: Task) -> None:
        """Announce a status a task reached on its way (running, input required, handed back)
        and wait until it is stored; raises when it could not be (:meth:`_retried`)."""
        await self._stored(
            "status",
            subjects.task_status(task.task_id),
            TaskStatusChanged.from_task(task, at=datetime.now(UTC)).to_json(),
            status_msg_id(task.task_id, task.attempt, task.status) + STATUS_MSG_ID_SUFFIX,
        )

    async def dead(self, task: Task, reason: str) -> None:
        body = TaskDeadLettered(task=task, reason=reason).to_json()
        if len(body) > _MAX_RECORD_BYTES:  # dead-lettered all the same, without its bulk
            update = {"parameters": _omitted("parameters", len(body)), "result": None}
            body = TaskDeadLettered(task=task.model_copy(update=update), reason=reason).to_json()
        await self._js_publish(subjects.task_dead(task.target_agent), body, dead_msg_id(task.task_id))

    async def cancel(self, task: Task) -> None:
        # core NATS: the worker holding the task listens; the request itself is kept in the task record
        await self._broker.publish(
            TaskCancelRequested(task_id=task.task_id).to_json(),
            subjects.task_cancel(task.task_id),
            headers=_JSON,
        )

    async def superseded(self, task: Task) -> None:
        """Tell the instance that ran ``task``'s current attempt to stop it and report nothing.

        Core NATS on the task's cancel subject, the attempt and instance in headers: best
        effort (an instance cut off from NATS cannot hear it; the dispatcher refuses its report).
        """
        request = TaskCancelRequested(
            task_id=task.task_id, reason=f"attempt {task.attempt} superseded ({task.status.value})"
        )
        headers = {
            **_JSON,
            SUPERSEDED_ATTEMPT_HEADER: str(task.attempt),
            SUPERSEDED_INSTANCE_HEADER: task.instance_id or "",
        }
        try:
            await self._broker.publish(request.to_json(), subjects.task_cancel(task.task_id), headers=headers)
        except Exception as exc:  # the fence holds without it
            log.warning("superseded notice not sent: %r", exc, extra={"task_id": task.task_id})

    async def event(self, event_type: str, task: Task, data: dict[str, Any] | None = None) -> None:
        trace = current_trace() or task.trace
        # encoded without a CloudEvent model: every attribute comes from the validated task
        event_id, body = encode_event(
            event_type,
            SOURCE,
            data={"status": task.status, "attempt": task.attempt, **(data or {})},
            subject=f"agent:{task.target_agent}",
            task_id=task.task_id,
            session_id=task.session_id,
            parent_task_id=task.parent_task_id,
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
            agent_id=task.target_agent,
        )
        # a plain publish on the stream's subject: JetStream stores it all the same, without
        # an ack to send back and to process here. Nothing retried a failed event before
        # either (the ack decided nothing), and Nats-Msg-Id still deduplicates.
        try:
            await self._broker.connection.publish(
                subjects.service_event("dispatcher", event_type),
                body,
                headers=_event_headers(event_id, trace),
            )
        except Exception as exc:  # never fail a task for its observation event
            EVENTS_DROPPED.inc()
            log.debug("event not published: %r", exc, extra={"event_id": event_id})

    async def rejected(self, subject: str, raw: bytes, reason: str) -> None:
        SUBMISSIONS_REJECTED.inc()
        record = RejectedMessage(subject=subject, reason=reason, raw=raw)
        await self._broker.publish(record.to_json(), subjects.rejected("dispatcher"), headers=_JSON)


class RegistryPicker:
    def __init__(self, broker: NatsBroker, timeout_s: float) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def pick(self, agent_id: str, task_id: str) -> PickReply:
        request = PickRequest(agent_id=agent_id, task_id=task_id)
        with tracer.start_as_current_span("registry.pick", kind=SpanKind.CLIENT) as span:
            span.set_attribute("loom.agent", agent_id)
            try:
                msg = await self._broker.connection.request(
                    subjects.REGISTRY_PICK,
                    request.to_json(),
                    timeout=self._timeout_s,
                    headers=inject_headers({"content-type": "application/json"}),
                )
            except (NatsTimeoutError, NoRespondersError) as exc:
                raise RegistryUnavailable(f"registry did not answer a pick for {agent_id}: {exc!r}") from exc
        if msg.headers and ERROR_CODE_HEADER in msg.headers:  # an error answer (registry picks.py)
            code, description = msg.headers[ERROR_CODE_HEADER], msg.headers.get(ERROR_HEADER, "")
            raise RegistryUnavailable(f"registry refused a pick for {agent_id}: {code} {description}")
        return PickReply.from_json(msg.data)

    async def known_agents(self) -> list[str]:
        """Every agent the registry ever saw (``loom.registry.agents``); RegistryUnavailable if none."""
        try:
            msg = await self._broker.connection.request(
                subjects.REGISTRY_AGENTS, b"", timeout=self._timeout_s, headers=dict(_JSON)
            )
        except (NatsTimeoutError, NoRespondersError) as exc:
            raise RegistryUnavailable(f"registry did not answer which agents it knows: {exc!r}") from exc
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            code, description = msg.headers[ERROR_CODE_HEADER], msg.headers.get(ERROR_HEADER, "")
            raise RegistryUnavailable(f"registry refused the known agents: {code} {description}")
        return list(KnownAgents.from_json(msg.data).agent_ids)
