"""Child tasks through the dispatcher: submit on JetStream, wait for the final status.

With a journal, every submission is recorded (child task id, agent, parameters) before it is
published, so a resumed attempt of the parent waits for the child an earlier attempt submitted
instead of submitting another: the same delegation (agent and parameters, in order) is matched
to the recorded child, submitted again under the same task id (a duplicate the dispatcher
ignores: it only matters when the earlier publish never happened), and awaited — its final status
read back from the stream when it ended before the parent resumed.

A parent that stops waiting (its timeout) asks the dispatcher to cancel the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from typing import Any

from faststream.nats import NatsBroker
from loom_protocol import (
    TASKS_STREAM,
    RecordedChild,
    Task,
    TaskCancelRequested,
    TaskStatus,
    TaskStatusChanged,
    cancel_request_msg_id,
    subjects,
    submitted_msg_id,
)
from nats.js.errors import NotFoundError

from .outbox import Outbox
from .runtime.durable import StepJournal

log = logging.getLogger(__name__)


def _delegation(agent: str, parameters: dict[str, Any]) -> str:
    return agent + "\x00" + json.dumps(parameters, sort_keys=True, default=str)


class NatsChildTasks:
    """The runtime's ChildTasks for one parent task."""

    def __init__(
        self, broker: NatsBroker, parent: Task, agent_id: str, journal: StepJournal | None = None
    ) -> None:
        self._broker = broker
        self._parent = parent
        self._agent_id = agent_id
        self._journal = journal
        self._recorded: dict[str, deque[RecordedChild]] = {}
        for child in journal.children() if journal is not None else []:
            if child.task_id:
                self._recorded.setdefault(_delegation(child.agent, child.parameters), deque()).append(child)

    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task:
        parent = self._parent
        recorded = self._recorded.get(_delegation(target_agent, parameters))
        earlier = recorded.popleft() if recorded else None
        child = Task(
            task_id=earlier.task_id if earlier is not None and earlier.task_id else uuid.uuid4().hex,
            source_agent=self._agent_id,
            target_agent=target_agent,
            parameters=parameters,
            parent_task_id=parent.task_id,
            session_id=parent.session_id,
            trace=parent.trace,
        )
        if self._journal is not None:
            if earlier is not None:
                self._journal.child_restored()
            else:
                await self._journal.record_child(
                    RecordedChild(
                        agent=target_agent,
                        parameters=parameters,
                        task_id=child.task_id,
                        status=TaskStatus.PENDING.value,
                    )
                )
        finished: asyncio.Future[TaskStatusChanged] = asyncio.get_running_loop().create_future()

        async def on_status(msg: Any) -> None:
            change = TaskStatusChanged.from_json(msg.data)
            if change.final and not finished.done():
                finished.set_result(change)

        sub = await self._broker.connection.subscribe(subjects.task_status(child.task_id), cb=on_status)
        try:
            if earlier is not None and (ended := await self._final_status(child.task_id)) is not None:
                finished.set_result(ended)
            else:
                await Outbox(self._broker).stored(
                    subjects.task_submitted(target_agent), child.to_json(), submitted_msg_id(child.task_id)
                )
            try:
                change = await asyncio.wait_for(finished, timeout=timeout_s)
            except TimeoutError:
                await self._cancel(child, f"parent {parent.task_id} stopped waiting after {timeout_s:g} s")
                return child.model_copy(
                    update={
                        "status": TaskStatus.FAILED,
                        "error": f"child task timed out after {timeout_s:g} s",
                    }
                )
        finally:
            await sub.unsubscribe()
        return child.model_copy(
            update={
                "status": change.status,
                "result": change.result,
                "error": change.error,
                "attempt": change.attempt,
                "instance_id": change.instance_id,
            }
        )

    async def _final_status(self, task_id: str) -> TaskStatusChanged | None:
        """The child's final status if it already ended (the last message on its status subject)."""
        try:
            msg = await self._broker.connection.jetstream().get_last_msg(
                TASKS_STREAM.name, subjects.task_status(task_id), direct=True
            )
        except NotFoundError:
            return None
        except Exception as exc:  # the live subscription still sees a final status to come
            log.warning("child %s: status not readable: %r", task_id, exc)
            return None
        try:
            change = TaskStatusChanged.from_json(msg.data or b"")
        except ValueError:
            return None
        return change if change.final else None

    async def _cancel(self, child: Task, reason: str) -> None:
        """Ask the dispatcher to cancel ``child`` (best effort: a child left running still ends)."""
        request = TaskCancelRequested(task_id=child.task_id, reason=reason)
        with contextlib.suppress(Exception):
            await Outbox(self._broker).stored(
                subjects.task_cancel_request(child.task_id),
                request.to_json(),
                cancel_request_msg_id(child.task_id),
            )
