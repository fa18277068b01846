"""Deterministic replay and forks: the recording, the spec a replay task carries, the report.

The replay service rebuilds a finished task's :class:`Recording` from its stored events and
submits a new task to the same agent whose ``metadata.replay`` is a :class:`ReplaySpec`. The
worker runs the agent with its LLM, tool and delegation calls answered from the recording:

* mode ``deterministic``: everything comes from the recording; the task completes with
  ``result.replay``, a :class:`ReplayReport`;
* mode ``fork``: steps before ``from_step`` come from the recording, later ones run live with
  the :class:`ForkChanges`; the result is the agent's own plus ``result.fork``, a
  :class:`ForkInfo`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from loom_protocol.base import LoomModel
from loom_protocol.mcp import McpToolCall, McpToolResult
from loom_protocol.tasks import TaskStatus

__all__ = [
    "REPLAY_METADATA_KEY",
    "ForkChanges",
    "ForkInfo",
    "RecordedChild",
    "RecordedLlmStep",
    "RecordedOutcome",
    "RecordedToolStep",
    "Recording",
    "ReplayCounts",
    "ReplayMode",
    "ReplayReport",
    "ReplaySpec",
]

REPLAY_METADATA_KEY = "replay"
"""The key of :class:`ReplaySpec` in a task's ``metadata``."""


class RecordedLlmStep(LoomModel):
    """One LLM call of the original run: its response, or the provider's error.

    Attributes:
        step: The ReAct step, from 1.
        content: The response text.
        tool_calls: The tool calls the response asked for.
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
        cost_usd: Cost in US dollars, when known.
        latency_s: Latency in seconds.
        model: The model that answered.
        request_digests: Digests of the conversation the call was sent (``llm.request``'s
            ``message_digests``); a replay checks its own conversation against them.
        error: The provider's error, when the call failed.
    """

    step: int = Field(ge=1)
    content: str | None = None
    tool_calls: list[McpToolCall] = Field(default_factory=list)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = None
    latency_s: float = Field(default=0.0, ge=0)
    model: str = ""
    request_digests: list[str] | None = None
    error: str | None = None


class RecordedToolStep(LoomModel):
    """One tool call of the original run and its result.

    Attributes:
        step: The LLM step that asked for it.
        call: The call.
        result: Its result.
    """

    step: int = Field(default=0, ge=0)
    call: McpToolCall
    result: McpToolResult


class RecordedChild(LoomModel):
    """One delegation of the original run and the child task's outcome.

    Attributes:
        index: The plan step, from 0.
        agent: The agent delegated to.
        parameters: The child's parameters.
        task_id: The child task, when its events were found.
        status: How the child ended.
        result: Its result.
        error: Its error.
    """

    index: int = Field(default=0, ge=0)
    agent: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    status: str = TaskStatus.COMPLETED.value
    result: Any = None
    error: str | None = None


class RecordedOutcome(LoomModel):
    """How the original run ended.

    Attributes:
        status: Its terminal status.
        answer: Its answer.
        steps: LLM steps it took.
        error: Its error.
        result: Its result.
    """

    status: str | None = None
    answer: str | None = None
    steps: int | None = None
    error: str | None = None
    result: Any = None


class Recording(LoomModel):
    """Everything a deterministic replay of one task needs, rebuilt from the task's events.

    Attributes:
        version: Format version.
        agent: The agent that ran it.
        system_prompt: The system message of its first LLM call as sent (the agent's prompt and
            the session facts it was given), when content was captured.
        llm: The LLM calls, by step.
        tools: The tool calls, in order.
        children: The delegations, in plan order.
        outcome: How it ended.
    """

    version: int = 1
    agent: str | None = None
    system_prompt: str | None = None
    llm: list[RecordedLlmStep] = Field(default_factory=list)
    tools: list[RecordedToolStep] = Field(default_factory=list)
    children: list[RecordedChild] = Field(default_factory=list)
    outcome: RecordedOutcome = Field(default_factory=RecordedOutcome)

    @property
    def steps(self) -> int:
        """How many steps a fork can start from: LLM steps, else delegations, else one."""
        return len(self.llm) or len(self.children) or 1


class ReplayMode(StrEnum):
    """What a replay task does.

    Attributes:
        DETERMINISTIC: Answer everything from the recording and report divergence.
        FORK: Answer the steps before ``from_step`` from the recording, run the rest live.
    """

    DETERMINISTIC = "deterministic"
    FORK = "fork"


class ForkChanges(LoomModel):
    """What a fork runs its live steps with, instead of the agent's own settings.

    Attributes:
        provider: Another LLM provider (a worker may only allow some).
        model: Another model.
        tools: The subset of the agent's tools to offer.
        system_prompt: Another system prompt.
        max_steps: Another step limit.
    """

    provider: str | None = None
    model: str | None = Field(default=None, min_length=1)
    tools: list[str] | None = None
    system_prompt: str | None = None
    max_steps: int | None = Field(default=None, ge=1, le=1000)


class ReplaySpec(LoomModel):
    """``metadata.replay`` of a replay or fork task.

    Attributes:
        mode: Deterministic replay or fork.
        recording: The original run.
        original_task_id: The task replayed.
        from_step: The first step a fork runs live (forks only, from 1).
        changes: What the fork's live steps run with.
    """

    mode: ReplayMode
    recording: Recording = Field(default_factory=Recording)
    original_task_id: str | None = None
    from_step: int | None = Field(default=None, ge=1)
    changes: ForkChanges = Field(default_factory=ForkChanges)


class ReplayCounts(LoomModel):
    """How many recorded calls a replay used.

    Attributes:
        llm_calls: LLM calls answered.
        tool_calls: Tool calls answered.
        children: Delegations answered.
    """

    llm_calls: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    children: int = Field(default=0, ge=0)


class ReplayReport(LoomModel):
    """``result.replay`` of a deterministic replay: did the run leave the recording, and where.

    Attributes:
        diverged: Whether it did.
        step: The step where (LLM step for ``llm``, delegation number for ``child``).
        at: What diverged: ``llm``, ``tool``, ``child``, ``outcome`` or ``answer``.
        index: The 0-based index of the call among the calls of its kind.
        expected: What the recording holds there.
        got: What the replay asked for or produced.
        reason: A sentence saying it.
        replayed: How many recorded calls were used.
    """

    diverged: bool
    step: int | None = None
    at: str | None = None
    index: int | None = None
    expected: Any = None
    got: Any = None
    reason: str | None = None
    replayed: ReplayCounts = Field(default_factory=ReplayCounts)


class ForkInfo(LoomModel):
    """``result.fork`` of a fork task.

    Attributes:
        original_task_id: The task forked.
        from_step: The first step that ran live.
        replayed: How many steps came from the recording.
    """

    original_task_id: str | None = None
    from_step: int = Field(ge=1)
    replayed: int = Field(default=0, ge=0)
