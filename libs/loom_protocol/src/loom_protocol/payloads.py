"""Typed ``data`` of Loom's events, one model per event type.

Event data keys are **snake_case** (``call_id``, ``input_tokens``): that is how the worker has
always emitted them and how they are stored, so unlike the rest of the protocol these models
are not camelCased. Read an event's payload with :func:`event_data` (or
:meth:`EventPayload.of` when the type is known); types without a model come back as the raw
mapping.

``memory.consolidate`` carries the ids it promoted and dropped, so a reader rebuilding a
memory applies the event (:meth:`MemoryConsolidated.apply`) and never re-derives the
consolidation rule, which lives in the worker alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar

from pydantic import AliasChoices, ConfigDict, Field

from loom_protocol.agents import MemberChanged
from loom_protocol.base import LoomModel
from loom_protocol.events import CloudEvent, EventType
from loom_protocol.mcp import McpToolCall, McpToolResult
from loom_protocol.memory import MemoryTier
from loom_protocol.stored import BUS_MEMBER_DOWN, BUS_MEMBER_UP

__all__ = [
    "EVENT_PAYLOADS",
    "AgentAction",
    "AgentAnswer",
    "AgentThought",
    "ApprovalDecided",
    "ApprovalRequested",
    "ErrorReported",
    "EventPayload",
    "LlmRequest",
    "LlmUsage",
    "MemoryAdded",
    "MemoryConsolidated",
    "TaskEventData",
    "TaskResumed",
    "ToolCalled",
    "ToolReturned",
    "event_data",
]

_Note = TypeVar("_Note")


class EventPayload(LoomModel):
    """Base of the typed event payloads: snake_case keys, unknown keys ignored.

    Attributes:
        TYPE: The event type this payload belongs to (a class constant, not a field).
    """

    model_config = ConfigDict(alias_generator=None)

    TYPE: ClassVar[str] = ""

    def to_data(self) -> dict[str, Any]:
        """Return the event's ``data``: the fields the producer set (None included), as JSON.

        Returns:
            ``model_dump(mode="json", exclude_unset=True)``.
        """
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def of(cls, event: CloudEvent) -> Self:
        """Read an event's ``data`` as this payload.

        Args:
            event: The event; its ``data`` must be a JSON object.

        Returns:
            The validated payload.

        Raises:
            pydantic.ValidationError: If ``data`` does not fit the model.
        """
        return cls.model_validate(event.data if event.data is not None else {})


class LlmRequest(EventPayload):
    """``llm.request``: a request sent to the LLM provider.

    Attributes:
        step: The ReAct step, from 1.
        message_count: Messages sent (system message included).
        provider: Provider name.
        model: Model name.
        tools: Names of the tools offered.
        message_digests: Digests of the conversation sent (system message excluded), the
            basis of a deterministic replay's divergence check.
        system_digest: Digest of the agent's system prompt (without the session facts the
            system message adds): a replay can tell whether the prompt changed.
        messages: The messages sent, system prompt included (``role``, ``content`` and,
            where set, ``tool_calls``, ``tool_call_id``, ``name``); None when the worker
            does not capture content (``LOOM_CAPTURE_CONTENT=false``).
    """

    TYPE: ClassVar[str] = EventType.LLM_REQUEST

    step: int = Field(ge=1)
    message_count: int = Field(default=0, ge=0)
    provider: str = ""
    model: str = ""
    tools: list[str] = Field(default_factory=list)
    message_digests: list[str] | None = None
    system_digest: str | None = None
    messages: list[dict[str, Any]] | None = None


MAX_TOKENS = 10**12
"""The most tokens one LLM call may report (sums over a window stay exact in a bigint)."""
MAX_COST_USD = 1e9
"""The highest cost one LLM call may report (sums over a window stay finite)."""


class LlmUsage(EventPayload):
    """``llm.usage``: tokens, cost and latency of one LLM call.

    Attributes:
        step: The ReAct step, from 1.
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
        cost_usd: Cost in US dollars from the worker's price table (None: the model has
            no price).
        latency_s: Latency of the call in seconds (retries and their waits included).
        model: The model that answered.
        provider: The provider that made the call.
        retries: Retries the provider made before this answer (429, 5xx, timeouts).
        completion: The completion text; None when the worker does not capture content.
        tool_calls: The tool calls the completion asked for.
        content_captured: False when prompt and completion text were left out.
    """

    TYPE: ClassVar[str] = EventType.LLM_USAGE

    step: int | None = Field(default=None, ge=1)
    input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    output_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    cost_usd: float | None = Field(default=None, ge=0, le=MAX_COST_USD, allow_inf_nan=False)
    latency_s: float = Field(default=0.0, allow_inf_nan=False)
    model: str = ""
    provider: str = ""
    retries: int = Field(default=0, ge=0)
    completion: str | None = None
    tool_calls: list[McpToolCall] = Field(default_factory=list)
    content_captured: bool = True


class AgentThought(EventPayload):
    """``agent.thought``: an agent's reasoning.

    Attributes:
        content: The text.
        step: The ReAct step it belongs to (a ReAct agent's text before its tool calls).
        plan: An orchestrator's plan (``[{agent, parameters}, ...]``).
    """

    TYPE: ClassVar[str] = EventType.AGENT_THOUGHT

    content: str | None = None
    step: int | None = None
    plan: list[dict[str, Any]] | None = None


class AgentAction(EventPayload):
    """``agent.action``: a tool call decided by a ReAct step, or a delegation of a plan step.

    A tool call has ``tool`` (with ``step``, ``arguments``, ``call_id``); a delegation has
    ``agent`` (with ``index``, ``parameters``).

    Attributes:
        step: The ReAct step (tool call).
        tool: The tool called (tool call).
        arguments: Its arguments (tool call).
        call_id: The call id, shared with ``tool.call`` / ``tool.result`` (tool call).
        index: The plan step, from 0 (delegation).
        agent: The agent delegated to (delegation).
        parameters: The child task's parameters (delegation).
    """

    TYPE: ClassVar[str] = EventType.AGENT_ACTION

    step: int | None = None
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    call_id: str | None = None
    index: int | None = Field(default=None, ge=0)
    agent: str | None = None
    parameters: dict[str, Any] | None = None

    @property
    def is_delegation(self) -> bool:
        """True for an orchestrator's delegation, False for a tool call."""
        return self.tool is None and self.agent is not None


class AgentAnswer(EventPayload):
    """``agent.answer``: an agent's final answer.

    Attributes:
        answer: The answer text.
        steps: LLM steps it took (ReAct).
        children: Child tasks it delegated (orchestrator).
    """

    TYPE: ClassVar[str] = EventType.AGENT_ANSWER

    answer: str | None = None
    steps: int | None = None
    children: int | None = None


class ToolCalled(EventPayload):
    """``tool.call``: a tool is called.

    Attributes:
        call_id: The call id.
        name: The tool.
        arguments: Its arguments.
    """

    TYPE: ClassVar[str] = EventType.TOOL_CALL

    call_id: str | None = None
    name: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_call(cls, call: McpToolCall) -> Self:
        """The payload of a tool call."""
        return cls(call_id=call.call_id, name=call.name, arguments=call.arguments)


class ToolReturned(EventPayload):
    """``tool.result``: a tool returned.

    Attributes:
        call_id: The call it answers.
        name: The tool.
        content: What it returned (or the error description when ``is_error``).
        is_error: Whether the call failed.
        duration_ms: How long it took, in milliseconds.
    """

    TYPE: ClassVar[str] = EventType.TOOL_RESULT

    call_id: str | None = None
    name: str | None = None
    content: Any = None
    is_error: bool = False
    duration_ms: float | None = Field(default=None, ge=0)

    @classmethod
    def from_result(cls, result: McpToolResult) -> Self:
        """The payload of a tool's result."""
        return cls(
            call_id=result.call_id,
            name=result.name,
            content=result.content,
            is_error=result.is_error,
            duration_ms=result.duration_ms,
        )


class MemoryAdded(EventPayload):
    """``memory.add``: a note was stored in a session memory (a memory entry, snake_case).

    Attributes:
        entry_id: The entry's id.
        node_id: The agent that wrote it.
        tier: Its tier.
        content: The note.
        importance: From 0 to 1.
        role: What kind of note (``observation``, ``child_result``, ``note``).
        metadata: Free-form annotations.
        created_at: When it was stored (RFC 3339 text as emitted).
    """

    TYPE: ClassVar[str] = EventType.MEMORY_ADD

    entry_id: str | None = None
    node_id: str | None = None
    tier: MemoryTier = MemoryTier.SESSION
    content: str = ""
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    role: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None


class MemoryConsolidated(EventPayload):
    """``memory.consolidate``: a session memory was consolidated, and exactly what moved.

    The worker decides (promotion threshold, working-set size); the ids say what it did, so
    readers apply them with :meth:`apply`. Counts and sizes after the step are kept for
    dashboards and for consistency checks.

    Attributes:
        promoted_ids: Ids of the session notes moved to long-term memory, in order.
        dropped_ids: Ids of the working notes dropped.
        promoted: How many were promoted.
        dropped_working: How many working notes were dropped.
        session: Session-tier size after the step.
        working: Working-tier size after the step.
        long_term: Long-term size after the step.
        threshold: The promotion threshold used.
        keep_working: The working-set size kept.
    """

    TYPE: ClassVar[str] = EventType.MEMORY_CONSOLIDATE

    promoted_ids: list[str] | None = None
    dropped_ids: list[str] | None = None
    promoted: int = Field(default=0, ge=0)
    dropped_working: int = Field(default=0, ge=0)
    session: int | None = Field(default=None, ge=0)
    working: int | None = Field(default=None, ge=0)
    long_term: int | None = Field(default=None, ge=0)
    threshold: float | None = None
    keep_working: int | None = Field(default=None, ge=0)

    @property
    def has_ids(self) -> bool:
        """Whether the event says which notes moved (events stored before the ids were added
        carry counts only)."""
        return self.promoted_ids is not None and self.dropped_ids is not None

    def apply(
        self,
        tiers: Mapping[str, Sequence[_Note]],
        id_of: Callable[[_Note], Any],
        importance_of: Callable[[_Note], float],
    ) -> dict[str, list[_Note]]:
        """Apply the consolidation to a reader's copy of the tiers.

        Promoted notes leave ``session`` for the end of ``long_term``, in session order (a
        caller whose notes carry their tier updates it); dropped notes leave ``working``. Ids
        the reader does not know (their ``memory.add`` is missing) are skipped.

        An event without ids (see :attr:`has_ids`) is applied by its counts, which name the
        same notes when the reader has every event: the ``promoted`` most important session
        notes (the earlier first on ties) and the ``dropped_working`` oldest working notes.

        Args:
            tiers: Notes by tier name (``session``, ``working``, ``long_term``).
            id_of: Returns a note's entry id.
            importance_of: Returns a note's importance (used by count-only events).

        Returns:
            New lists by tier; ``tiers`` is left unchanged.
        """
        out = {name: list(notes) for name, notes in tiers.items()}
        for tier in MemoryTier:
            out.setdefault(tier.value, [])
        session = out[MemoryTier.SESSION.value]
        working = out[MemoryTier.WORKING.value]
        if self.has_ids:
            promoted = set(self.promoted_ids or ())
            dropped = set(self.dropped_ids or ())
            chosen = {i for i, note in enumerate(session) if id_of(note) in promoted}
            gone = {i for i, note in enumerate(working) if id_of(note) in dropped}
        else:
            ranked = sorted(range(len(session)), key=lambda i: (-importance_of(session[i]), i))
            chosen = set(ranked[: self.promoted])
            gone = set(range(min(self.dropped_working, len(working))))
        out[MemoryTier.LONG_TERM.value].extend(session[i] for i in sorted(chosen))
        out[MemoryTier.SESSION.value] = [note for i, note in enumerate(session) if i not in chosen]
        out[MemoryTier.WORKING.value] = [note for i, note in enumerate(working) if i not in gone]
        return out

    def sizes_match(self, tiers: Mapping[str, Sequence[Any]]) -> bool:
        """Whether the sizes the event reports after the step equal the reader's (False when
        the reader misses events).

        Args:
            tiers: The reader's notes by tier, after :meth:`apply`.

        Returns:
            True when every reported size matches.
        """
        reported = {
            MemoryTier.SESSION.value: self.session,
            MemoryTier.WORKING.value: self.working,
            MemoryTier.LONG_TERM.value: self.long_term,
        }
        return all(size is None or size == len(tiers.get(name, ())) for name, size in reported.items())


class ErrorReported(EventPayload):
    """``error``: an error worth recording.

    Attributes:
        error: What went wrong (a failed task's error, ``"LLM provider error at step n: ..."``).
        exception: The exception class, when an agent raised.
        reason: Why events were lost (the worker's event buffer).
        dropped: How many events were lost.
    """

    TYPE: ClassVar[str] = EventType.ERROR

    error: str | None = None
    exception: str | None = None
    reason: str | None = None
    dropped: int | None = Field(default=None, ge=0)


class TaskEventData(EventPayload):
    """``task.*`` events (the dispatcher's view of a task's life cycle).

    Attributes:
        status: The task's status after the change.
        attempt: The attempt.
        instance_id: The instance assigned (``task.assigned``; read from ``instanceId`` too).
        reason: Why it was retried.
    """

    status: str | None = None
    attempt: int | None = Field(default=None, ge=0)
    instance_id: str | None = Field(default=None, validation_alias=AliasChoices("instance_id", "instanceId"))
    reason: str | None = None


class TaskResumed(EventPayload):
    """``task.resumed``: an attempt restored what earlier attempts of its task recorded.

    Restored steps are not emitted again: their ``llm.*`` and ``tool.*`` events are those of the
    attempt that ran them.

    Attributes:
        attempt: The resuming attempt.
        restored_steps: Step outcomes restored (LLM responses + tool results + child tasks).
        llm_steps: LLM responses restored (not asked again).
        tool_steps: Tool results restored (not run again).
        child_steps: Child tasks awaited instead of submitted again.
    """

    TYPE: ClassVar[str] = EventType.TASK_RESUMED

    attempt: int = Field(default=1, ge=0)
    restored_steps: int = Field(default=0, ge=0)
    llm_steps: int = Field(default=0, ge=0)
    tool_steps: int = Field(default=0, ge=0)
    child_steps: int = Field(default=0, ge=0)


class ApprovalRequested(EventPayload):
    """``approval.requested``: a tool call waits for a person (the task is ``input_required``).

    Attributes:
        key: The call within its task (``"<step>.<index>"``).
        tool: The tool.
        arguments: The arguments the agent gave (None without content capture).
        reasoning: What the agent said before the call (None without content capture).
        call_id: The LLM's id of the call.
        step: The LLM step.
    """

    TYPE: ClassVar[str] = EventType.APPROVAL_REQUESTED

    key: str
    tool: str
    arguments: dict[str, Any] | None = None
    reasoning: str | None = None
    call_id: str | None = None
    step: int | None = Field(default=None, ge=1)


class ApprovalDecided(EventPayload):
    """``approval.granted`` / ``approval.denied``: the decision on a waiting tool call.

    Attributes:
        key: The call within its task.
        tool: The tool.
        approved: The decision.
        by: Who decided (``"timeout"`` when the wait ran out).
        reason: Why.
        edited: Whether the call runs with other arguments than the agent's.
    """

    TYPE: ClassVar[str] = EventType.APPROVAL_GRANTED

    key: str
    tool: str
    approved: bool
    by: str | None = None
    reason: str | None = None
    edited: bool = False


EVENT_PAYLOADS: Mapping[str, type[LoomModel]] = {
    **{
        model.TYPE: model
        for model in (
            LlmRequest,
            LlmUsage,
            AgentThought,
            AgentAction,
            AgentAnswer,
            ToolCalled,
            ToolReturned,
            MemoryAdded,
            MemoryConsolidated,
            ErrorReported,
        )
    },
    **{kind.value: TaskEventData for kind in EventType if kind.value.startswith("task.")},
    EventType.TASK_RESUMED.value: TaskResumed,
    EventType.APPROVAL_REQUESTED.value: ApprovalRequested,
    EventType.APPROVAL_GRANTED.value: ApprovalDecided,
    EventType.APPROVAL_DENIED.value: ApprovalDecided,
    EventType.REGISTRY_MEMBER_UP.value: MemberChanged,
    EventType.REGISTRY_MEMBER_DOWN.value: MemberChanged,
    BUS_MEMBER_UP: MemberChanged,
    BUS_MEMBER_DOWN: MemberChanged,
}
"""The model of each event type's ``data``."""


def event_data(event_type: str, data: Any) -> LoomModel | Any:
    """Read an event's ``data`` as the model of its type.

    Args:
        event_type: The CloudEvent ``type``.
        data: Its ``data``.

    Returns:
        The typed payload (see :data:`EVENT_PAYLOADS`), or ``data`` unchanged when the type
        has no model or ``data`` is not a JSON object.

    Raises:
        pydantic.ValidationError: If ``data`` is an object that does not fit the model.
    """
    model = EVENT_PAYLOADS.get(str(event_type))
    if model is None or not isinstance(data, Mapping):
        return data
    return model.model_validate(data)
