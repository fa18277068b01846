"""The demo agents a worker hosts by default: echo, calculator and orchestrator."""

from __future__ import annotations

from loom_protocol import AgentCapability, AgentCard, Task

from loom_agent_worker.runtime.agent import Agent, completed
from loom_agent_worker.runtime.builtin_tools import builtin_registry
from loom_agent_worker.runtime.context import TaskContext
from loom_agent_worker.runtime.orchestrator import OrchestratorAgent
from loom_agent_worker.runtime.providers.base import LLMProvider
from loom_agent_worker.runtime.providers.scripted import ScriptedProvider
from loom_agent_worker.runtime.react import ReActAgent

DEMO_AGENT_IDS = ("echo", "calculator", "orchestrator")

ECHO_CARD = AgentCard(
    agent_id="echo",
    name="Echo",
    description="Completes at once with its parameters as the result (for load tests).",
)


class EchoAgent(Agent):
    """Returns ``task.parameters`` as the result: no events, no memory, nothing else."""

    def __init__(self, card: AgentCard = ECHO_CARD) -> None:
        self.agent_card = card

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
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
