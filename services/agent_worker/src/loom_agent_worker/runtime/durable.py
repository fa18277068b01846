"""Durable execution: the step journal a task resumes from, approvals, and idempotency keys.

Every step outcome of a task (an LLM response, a tool result, a child task's submission) is
recorded in its :class:`StepJournal` once it happened; the worker's journal writes each entry to
a JetStream key-value bucket and waits for the broker's acknowledgement, so an entry counts only
once the broker has it. A later attempt of the task (its worker died, its deadline passed, it was
handed back, or a person decided on a call it waited for) starts with the entries of the earlier
attempts: the agent's code runs again from the top, each recorded step answered from the journal
(no LLM call, no tool run, no child submitted again, no event emitted again), and it goes live at
the first step with no recorded outcome.

A tool call that was sent but whose result was not recorded runs again. Tools that have effects
can de-duplicate them with :func:`idempotency_key`, the same for every attempt of one call.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from loom_protocol import (
    ApprovalRequest,
    JournalEntry,
    JournalKind,
    RecordedChild,
    RecordedLlmStep,
    RecordedToolStep,
    tool_step_id,
)

log = logging.getLogger(__name__)


class JournalWriter(Protocol):
    """Stores one journal entry; True once the broker accepted it, False when it was not stored
    (the step then simply runs again on a later attempt). Must not raise."""

    async def write(self, kind: JournalKind, entry_id: str, entry: JournalEntry) -> bool: ...


@dataclass
class Restored:
    """How many recorded step outcomes an attempt took from the journal instead of running them."""

    llm: int = 0
    tools: int = 0
    children: int = 0

    @property
    def total(self) -> int:
        return self.llm + self.tools + self.children


class StepJournal:
    """The recorded step outcomes of one task: what earlier attempts recorded (``entries``), and
    where this attempt records its own (``writer``; None keeps them in this object only).

    The first outcome recorded for a step is the one that counts: a later write of the same step
    (a zombie attempt) changes nothing here, and the bucket refuses it too.
    """

    def __init__(
        self,
        entries: Iterable[tuple[str, JournalEntry]] = (),
        writer: JournalWriter | None = None,
        *,
        attempt: int = 1,
        instance_id: str | None = None,
    ) -> None:
        self._entries: dict[tuple[JournalKind, str], JournalEntry] = {}
        for entry_id, entry in entries:
            self._entries.setdefault((entry.kind, entry_id), entry)
        self._writer = writer
        self.attempt = attempt
        self.instance_id = instance_id
        self.recorded_before = len(self._entries)
        self.restored = Restored()

    @property
    def entries(self) -> list[tuple[str, JournalEntry]]:
        """Every entry, earlier attempts' and this one's, as ``(entry id, entry)``."""
        return [(entry_id, entry) for (_, entry_id), entry in self._entries.items()]

    def counts(self) -> Restored:
        """How many entries of each kind earlier attempts recorded."""
        kinds = [kind for kind, _ in self._entries]
        return Restored(
            llm=kinds.count(JournalKind.LLM),
            tools=kinds.count(JournalKind.TOOL),
            children=kinds.count(JournalKind.CHILD),
        )

    # -- lookups (each hit counts as restored) --------------------------------------------------
    def llm(self, step: int) -> RecordedLlmStep | None:
        entry = self._entries.get((JournalKind.LLM, str(step)))
        if entry is None or entry.llm is None:
            return None
        self.restored.llm += 1
        return entry.llm

    def tool(self, step: int, index: int) -> RecordedToolStep | None:
        entry = self._entries.get((JournalKind.TOOL, tool_step_id(step, index)))
        if entry is None or entry.tool is None:
            return None
        self.restored.tools += 1
        return entry.tool

    def children(self) -> list[RecordedChild]:
        """The child tasks submitted by earlier attempts, in submission order."""
        found = [
            (int(entry_id), entry.child)
            for (kind, entry_id), entry in self._entries.items()
            if kind is JournalKind.CHILD and entry.child is not None and entry_id.isdigit()
        ]
        return [child for _, child in sorted(found, key=lambda pair: pair[0])]

    def child_restored(self) -> None:
        self.restored.children += 1

    # -- records ----------------------------------------------------------------------------------
    async def record_llm(self, step: RecordedLlmStep) -> bool:
        return await self._record(
            JournalKind.LLM, str(step.step), JournalEntry(kind=JournalKind.LLM, llm=step)
        )

    async def record_tool(self, index: int, step: RecordedToolStep) -> bool:
        entry = JournalEntry(kind=JournalKind.TOOL, tool=step)
        return await self._record(JournalKind.TOOL, tool_step_id(step.step, index), entry)

    async def record_child(self, child: RecordedChild) -> bool:
        """Record a child task's submission under the next free index (set on the entry)."""
        indexes = [int(i) for (kind, i) in self._entries if kind is JournalKind.CHILD and i.isdigit()]
        child = child.model_copy(update={"index": max(indexes, default=-1) + 1})
        entry = JournalEntry(kind=JournalKind.CHILD, child=child)
        return await self._record(JournalKind.CHILD, str(child.index), entry)

    async def _record(self, kind: JournalKind, entry_id: str, entry: JournalEntry) -> bool:
        entry = entry.model_copy(update={"attempt": self.attempt, "instance_id": self.instance_id})
        if (kind, entry_id) in self._entries:
            return False
        self._entries[(kind, entry_id)] = entry
        if self._writer is None:
            return True
        return await self._writer.write(kind, entry_id, entry)


class AwaitingApproval(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by an agent (through :meth:`TaskContext.await_approval`) to stop its task until a
    person decides on a tool call; the worker reports the task ``input_required`` and frees its
    slot. Agents do not catch it."""

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__(f"tool call {request.key} ({request.tool}) waits for approval")
        self.request = request


@dataclass(frozen=True)
class ToolCallInfo:
    """The tool call being run: its task, LLM step and position, and its idempotency key."""

    task_id: str
    step: int
    index: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.task_id}/{self.step}.{self.index}"


_CURRENT_CALL: contextvars.ContextVar[ToolCallInfo | None] = contextvars.ContextVar(
    "loom_tool_call", default=None
)


def current_tool_call() -> ToolCallInfo | None:
    """Inside a tool: the call being run (None outside a tool call)."""
    return _CURRENT_CALL.get()


def idempotency_key() -> str | None:
    """Inside a tool: a key naming this call, the same in every attempt of the task (``<task
    id>/<step>.<index>``): use it to de-duplicate the tool's own effects when a call runs again
    after a crash (e.g. as an idempotency key of a payment API). None outside a tool call."""
    call = _CURRENT_CALL.get()
    return call.idempotency_key if call is not None else None


def enter_tool_call(info: ToolCallInfo) -> contextvars.Token[ToolCallInfo | None]:
    return _CURRENT_CALL.set(info)


def leave_tool_call(token: contextvars.Token[ToolCallInfo | None]) -> None:
    _CURRENT_CALL.reset(token)
