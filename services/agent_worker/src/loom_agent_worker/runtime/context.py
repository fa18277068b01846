"""What an agent gets besides its task: the event sink, child tasks, memory and its instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from loom_protocol import ApprovalDecision, ApprovalRequest, ApprovalRequested, EventPayload, MemoryTier, Task

from loom_agent_worker.runtime.durable import AwaitingApproval, StepJournal

if TYPE_CHECKING:
    from loom_protocol import MemoryEntry

    from loom_agent_worker.runtime.memory import ConsolidationReport, SessionMemory


class EventSink(Protocol):
    """Where an agent reports what it observes (``agent.thought``, ``tool.call``, ...).

    ``emit`` must not block and must never raise: the worker's implementation wraps the
    payload (its class gives the event type) in a CloudEvent carrying the task, session,
    parent and trace ids and buffers it.
    ``subject`` names the node addressed: ``tool:<name>``, ``agent:<id>`` or
    ``llm:<provider>/<model>``.
    """

    def emit(self, payload: EventPayload, *, subject: str | None = None) -> None: ...


class ChildTasks(Protocol):
    """Submits child tasks (delegation) and waits for them to finish.

    The worker's implementation sets ``parent_task_id`` and ``session_id`` and goes through
    the dispatcher. The returned task is terminal (completed, failed, cancelled or dead).
    """

    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task: ...


class AnswerStream(Protocol):
    """Where a streaming task's answer goes as it is produced (``action: "stream"``).

    The worker's implementation publishes each call as a ``TaskStreamChunk`` on
    ``loom.stream.<task_id>`` (core NATS, best effort: it never raises). ``delta`` appends
    text of ``step``; ``discard`` says the text of ``step`` so far was not the answer (the
    model went on to call tools); ``done`` ends the answer (later calls are ignored).
    """

    async def delta(self, text: str, *, step: int) -> None: ...

    async def discard(self, step: int) -> None: ...

    async def done(self) -> None: ...


@dataclass
class TaskContext:
    """Everything an agent needs to run one task, besides the task itself."""

    task: Task
    events: EventSink
    children: ChildTasks
    memory: SessionMemory
    instance_id: str
    capture_content: bool = True  # False: no prompt or completion text in events
    stream: AnswerStream | None = None  # set for tasks with action "stream"
    journal: StepJournal = field(default_factory=StepJournal)  # steps recorded by earlier attempts
    approval_tools: frozenset[str] = frozenset()  # tool names that need approval in this task

    def decision(self, key: str) -> ApprovalDecision | None:
        """The decision a person took on the call ``key`` (see ``loom_protocol.approval_key``)."""
        return self.task.decision_for(key)

    def await_approval(self, request: ApprovalRequest) -> AwaitingApproval:
        """Emit ``approval.requested`` for ``request`` and return the exception that stops the
        task until a person decides: ``raise ctx.await_approval(...)``. The next attempt finds
        the decision with :meth:`decision` under the same key."""
        request = request.model_copy(update={"attempt": self.task.attempt})
        self.events.emit(
            ApprovalRequested(
                key=request.key,
                tool=request.tool,
                arguments=request.arguments,
                reasoning=request.reasoning if self.capture_content else None,
                call_id=request.call_id,
                step=request.step,
            ),
            subject=f"tool:{request.tool}",
        )
        return AwaitingApproval(request)

    def note(
        self,
        content: str,
        *,
        tier: MemoryTier = MemoryTier.SESSION,
        importance: float = 0.5,
        role: str = "note",
    ) -> MemoryEntry:
        """Add a note to the session memory on behalf of the task's agent (emits ``memory.add``)."""
        return self.memory.add_note(
            content,
            node_id=self.task.target_agent,
            tier=tier,
            importance=importance,
            role=role,
            events=self.events,
        )

    def consolidate(self) -> ConsolidationReport:
        """Consolidate the session memory (emits ``memory.consolidate``)."""
        return self.memory.consolidate(events=self.events)


class NullEventSink:
    """An EventSink that drops everything (for callers that do not observe)."""

    def emit(self, payload: EventPayload, *, subject: str | None = None) -> None:
        return None
