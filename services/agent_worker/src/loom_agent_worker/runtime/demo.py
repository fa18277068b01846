"""The demo agents a worker hosts by default: echo, calculator and orchestrator."""

from __future__ import annotations

import asyncio

from loom_protocol import AgentCapability, AgentCard, Task

from loom_agent_worker.runtime.agent import Agent, completed
from loom_agent_worker.runtime.builtin_tools import builtin_registry
from loom_agent_worker.runtime.context import TaskContext
from loom_agent_worker.runtime.orchestrator import OrchestratorAgent
from loom_agent_worker.runtime.providers.base import LLMProvider
from loom_agent_worker.runtime.providers.scripted import ScriptedProvider
from loom_agent_worker.runtime.react import ReActAgent

DEMO_AGENT_IDS = ("echo", "calculator", "orchestrator")
MAX_ECHO_DELAY_S = 60.0

ECHO_CARD = AgentCard(
    agent_id="echo",
    name="Echo",
    description=(
        "Completes with its parameters as the result (for load tests); a number delayS "
        f"(at most {MAX_ECHO_DELAY_S:g}) makes it wait that many seconds first, like an I/O-bound task."
    ),
)


class EchoAgent(Agent):
    """Returns ``task.parameters`` as the result: no events, no memory, nothing else.

    ``parameters["delayS"]``, a number in (0, :data:`MAX_ECHO_DELAY_S`], is slept first (an
    I/O-bound task's shape); any other value of it is ignored.
    """

    def __init__(self, card: AgentCard = ECHO_CARD) -> None:
        self.agent_card = card

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        delay = task.parameters.get("delayS")
        if isinstance(delay, int | float) and not isinstance(delay, bool) and 0 < delay <= MAX_ECHO_DELAY_S:
            await asyncio.sleep(delay)
        return completed(task, task.parameters)


def build_demo_agents(provider: LLMProvider | None = None) -> dict[str, Agent]:
    """The demo agents by agent id; ``provider`` drives the calculator (default: scripted)."""
    tools = builtin_registry()
    calculator = ReActAgent(
        AgentCard(
            agent_id="calculator",
            name="Calculator",
            description="Answers arithmetic questions with a ReAct loop over a safe calculator tool.",
            capabilities=[AgentCapability.TOOL_USE],
            tools=tools.names(),
        ),
        provider or ScriptedProvider(),
        tools,
    )
    orchestrator = OrchestratorAgent(
        AgentCard(
            agent_id="orchestrator",
            name="Orchestrator",
            description="Splits a request, delegates the parts to other agents and combines the answers.",
            capabilities=[AgentCapability.PLANNING, AgentCapability.MULTI_AGENT],
        )
    )
    agents: dict[str, Agent] = {"echo": EchoAgent(), "calculator": calculator, "orchestrator": orchestrator}
    assert tuple(agents) == DEMO_AGENT_IDS
    return agents
