"""The agent runtime: agents, their context, interceptors, tools, LLM providers, memory and replay.

The worker's NATS wiring builds a :class:`TaskContext` per task and runs the agent through
:func:`run_with_interceptors`; everything here is transport-free.
"""

from loom_agent_worker.runtime.agent import Agent
from loom_agent_worker.runtime.builtin_tools import (
    BUILTIN_TOOLS,
    builtin_registry,
    calculator,
    echo,
    sleep,
    word_count,
)
from loom_agent_worker.runtime.calculator import CalculatorError, safe_eval
from loom_agent_worker.runtime.context import AnswerStream, ChildTasks, EventSink, NullEventSink, TaskContext
from loom_agent_worker.runtime.demo import DEMO_AGENT_IDS, EchoAgent, build_demo_agents
from loom_agent_worker.runtime.interceptors import (
    Ended,
    Interceptor,
    LoggingInterceptor,
    MetricsInterceptor,
    TimingInterceptor,
    TimingStats,
    run_with_interceptors,
)
from loom_agent_worker.runtime.memory import ConsolidationReport, MemoryStore, SessionMemory
from loom_agent_worker.runtime.orchestrator import OrchestratorAgent, PlanStep, plan_from_prompt
from loom_agent_worker.runtime.providers import (
    ChatMessage,
    LLMProvider,
    LLMResponse,
    OpenAICompatibleProvider,
    ProviderError,
    ScriptedProvider,
    StreamingProvider,
    TaskAwareProvider,
    TokenUsage,
    extract_expression,
    make_provider,
)
from loom_agent_worker.runtime.react import ReActAgent
from loom_agent_worker.runtime.recorded import (
    RecordedChildren,
    RecordedProvider,
    RecordedTools,
    RecordingProvider,
    RecordingTools,
    ReplayDivergence,
    SplicedProvider,
    SplicedTools,
    recorded_provider,
    recorded_response,
    recorded_tools,
)
from loom_agent_worker.runtime.tools import Tool, ToolExecutor, ToolRegistry, tool

__all__ = [
    "BUILTIN_TOOLS",
    "DEMO_AGENT_IDS",
    "Agent",
    "AnswerStream",
    "CalculatorError",
    "ChatMessage",
    "ChildTasks",
    "ConsolidationReport",
    "EchoAgent",
    "Ended",
    "EventSink",
    "Interceptor",
    "LLMProvider",
    "LLMResponse",
    "LoggingInterceptor",
    "MemoryStore",
    "MetricsInterceptor",
    "NullEventSink",
    "OpenAICompatibleProvider",
    "OrchestratorAgent",
    "PlanStep",
    "ProviderError",
    "ReActAgent",
    "RecordedChildren",
    "RecordedProvider",
    "RecordedTools",
    "RecordingProvider",
    "RecordingTools",
    "ReplayDivergence",
    "ScriptedProvider",
    "SessionMemory",
    "SplicedProvider",
    "SplicedTools",
    "StreamingProvider",
    "TaskAwareProvider",
    "TaskContext",
    "TimingInterceptor",
    "TimingStats",
    "TokenUsage",
    "Tool",
    "ToolExecutor",
    "ToolRegistry",
    "build_demo_agents",
    "builtin_registry",
    "calculator",
    "echo",
    "extract_expression",
    "make_provider",
    "plan_from_prompt",
    "recorded_provider",
    "recorded_response",
    "recorded_tools",
    "run_with_interceptors",
    "safe_eval",
    "sleep",
    "tool",
    "word_count",
]
