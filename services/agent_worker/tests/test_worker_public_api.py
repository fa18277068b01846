"""The authoring API agent packages import from ``loom_agent_worker``: pinned, documented, and
importable without the worker's service stack (FastAPI, FastStream, OpenTelemetry)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import loom_agent_worker

PUBLIC = [
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


def test_the_public_names_are_pinned_and_documented() -> None:
    assert sorted(loom_agent_worker.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert inspect.getdoc(getattr(loom_agent_worker, name)), f"{name} has no docstring"


def test_importing_the_api_does_not_start_the_service_stack() -> None:
    code = (
        "import sys, loom_agent_worker; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'faststream', 'uvicorn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
