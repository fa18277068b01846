"""The common case in one call: a ReAct agent from an id, a system prompt, tools and a provider.

An agent built without a provider uses the LLM provider the worker is configured with
(``LOOM_LLM_*``): it holds a :class:`WorkerProvider` placeholder that the worker replaces with
its own provider when it loads the agent (:func:`bind_worker_provider`).
"""

from __future__ import annotations

from collections.abc import Iterable

from loom_protocol import AgentCapability, AgentCard, McpToolDefinition

from loom_agent_worker.runtime.agent import Agent
from loom_agent_worker.runtime.providers.base import ChatMessage, LLMProvider, LLMResponse, ProviderError
from loom_agent_worker.runtime.react import DEFAULT_MAX_STEPS, ReActAgent
from loom_agent_worker.runtime.tools import Tool, ToolRegistry


class WorkerProvider:
    """Stands for "the worker's configured LLM provider" until a worker loads the agent.

    Calling it outside a worker (e.g. in an agent's own unit test) fails with a ProviderError
    that says so: give such a test an explicit provider, e.g. ``ScriptedProvider()``.
    """

    name = "worker"
    model = "unbound"

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        raise ProviderError(
            "this agent uses the worker's LLM provider, and no worker has loaded it: "
            "run it in a worker or pass provider=... to react_agent"
        )


def react_agent(
    agent_id: str,
    *,
    system_prompt: str,
    tools: Iterable[Tool] = (),
    provider: LLMProvider | None = None,
    name: str | None = None,
    description: str = "",
    max_steps: int = DEFAULT_MAX_STEPS,
) -> ReActAgent:
    """Build a ReAct agent: it loops LLM call -> tool calls -> observations until an answer.

    Args:
        agent_id: The id tasks address it by (``targetAgent``); unique among a worker's agents.
        system_prompt: The system message of every conversation (part of the recording).
        tools: Functions decorated with :func:`tool`; their names must be unique.
        provider: The LLM provider; ``None`` uses the one the worker is configured with.
        name: A display name (default: the agent id).
        description: What the agent does (shown in the registry's agent list).
        max_steps: LLM calls per task before the task fails.

    The task's parameters are ``{"prompt": "..."}``; its result is
    ``{"answer": str, "steps": int, "usage": {...}}``.
    """
    registry = ToolRegistry(tools)
    card = AgentCard(
        agent_id=agent_id,
        name=name or agent_id,
        description=description,
        capabilities=[AgentCapability.TOOL_USE] if len(registry) else [],
        tools=registry.names(),
    )
    return ReActAgent(
        card,
        provider if provider is not None else WorkerProvider(),
        registry,
        system_prompt=system_prompt,
        max_steps=max_steps,
    )


def bind_worker_provider(agent: Agent, provider: LLMProvider) -> Agent:
    """``agent`` with the worker's ``provider`` in place of a :class:`WorkerProvider` placeholder
    (a copy; the agent is returned unchanged when it has no placeholder)."""
    if isinstance(agent, ReActAgent) and isinstance(agent.provider, WorkerProvider):
        return agent.with_runtime(provider=provider)
    return agent


__all__ = ["WorkerProvider", "bind_worker_provider", "react_agent"]
