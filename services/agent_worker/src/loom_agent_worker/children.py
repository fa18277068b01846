"""Child tasks through the dispatcher: submit on JetStream, wait for the final status."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from faststream.nats import NatsBroker
from loom_protocol import (
    Task,
    TaskStatus,
    TaskStatusChanged,
    subjects,
    submitted_msg_id,
)

from .outbox import Outbox


class NatsChildTasks:
    """The runtime's ChildTasks for one parent task."""

    def __init__(self, broker: NatsBroker, parent: Task, agent_id: str) -> None:
        self._broker = broker
        self._parent = parent
        self._agent_id = agent_id

    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task:
        parent = self._parent
        child = Task(
            task_id=uuid.uuid4().hex,
            source_agent=self._agent_id,
            target_agent=target_agent,
            parameters=parameters,
            parent_task_id=parent.task_id,
            session_id=parent.session_id,
            trace=parent.trace,
        )
        finished: asyncio.Future[TaskStatusChanged] = asyncio.get_running_loop().create_future()

        async def on_status(msg: Any) -> None:
            change = TaskStatusChanged.from_json(msg.data)
            if change.final and not finished.done():
                finished.set_result(change)

        sub = await self._broker.connection.subscribe(subjects.task_status(child.task_id), cb=on_status)
        try:
            await Outbox(self._broker).stored(
                subjects.task_submitted(target_agent), child.to_json(), submitted_msg_id(child.task_id)
            )
            try:
                change = await asyncio.wait_for(finished, timeout=timeout_s)
            except TimeoutError:
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
