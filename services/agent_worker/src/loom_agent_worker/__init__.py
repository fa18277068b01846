"""Loom's agent worker, and the public API for writing agents it runs.

Write an agent as a subclass of :class:`Agent` (or build a ReAct agent with
:func:`react_agent`), give it tools made with :func:`tool`, and name it in the worker's
``LOOM_WORKER_AGENTS`` (``package.module:attribute``) or register it under the entry-point
group ``loom.agents``. See ``docs/agents.md``; for resume after a crash, approvals and
:func:`idempotency_key`, ``docs/durable.md``. Everything an agent author needs is importable
from here; the ``runtime`` subpackage is the worker's own and may change.
"""

from loom_protocol import AgentCapability, AgentCard, ApprovalDecision, ApprovalRequest, Task, TaskStatus

from loom_agent_worker.runtime import (
    Agent,
    ChatMessage,
    LLMProvider,
    LLMResponse,
    OpenAICompatibleProvider,
    ProviderError,
    ScriptedProvider,
    TaskContext,
    TokenUsage,
    Tool,
    ToolRegistry,
    tool,
)
from loom_agent_worker.runtime.agent import completed, failed
from loom_agent_worker.runtime.builder import WorkerProvider, react_agent
from loom_agent_worker.runtime.durable import (
    AwaitingApproval,
    ToolCallInfo,
    current_tool_call,
    idempotency_key,
)

__all__ = [
    "Agent",
    "AgentCapability",
    "AgentCard",
    "ApprovalDecision",
    "ApprovalRequest",
    "AwaitingApproval",
    "ChatMessage",
    "LLMProvider",
    "LLMResponse",
    "OpenAICompatibleProvider",
    "ProviderError",
    "ScriptedProvider",
    "Task",
    "TaskContext",
    "TaskStatus",
    "TokenUsage",
    "Tool",
    "ToolCallInfo",
    "ToolRegistry",
    "WorkerProvider",
    "completed",
    "current_tool_call",
    "failed",
    "idempotency_key",
    "react_agent",
    "tool",
]
