from __future__ import annotations

import time

import loom_agent_worker.runtime as runtime
from loom_agent_worker.runtime import DEMO_AGENT_IDS, EchoAgent, build_demo_agents, run_with_interceptors
from loom_protocol import AgentCapability, TaskStatus


def test_demo_agents_and_their_cards() -> None:
    agents = build_demo_agents()
    assert tuple(agents) == DEMO_AGENT_IDS == ("echo", "calculator", "orchestrator")
    assert all(agent.node_id == agent_id for agent_id, agent in agents.items())
    assert agents["echo"].agent_card.capabilities == []
    assert agents["calculator"].agent_card.capabilities == [AgentCapability.TOOL_USE]
    assert "calculator" in agents["calculator"].agent_card.tools
    assert agents["orchestrator"].agent_card.capabilities == [
        AgentCapability.PLANNING,
        AgentCapability.MULTI_AGENT,
    ]
    assert isinstance(agents["echo"], EchoAgent)


async def test_echo_completes_with_its_parameters_and_emits_nothing(new_task, new_context) -> None:
    task = new_task("echo", {"prompt": "hi", "n": [1, 2]})
    ctx = new_context(task)
    done = await build_demo_agents()["echo"].execute_task(task, ctx)
    assert done.status is TaskStatus.COMPLETED
    assert done.result == {"prompt": "hi", "n": [1, 2]}
    assert ctx.events.events == []
    assert ctx.memory.messages == [] and ctx.memory.notes() == []


async def test_echo_waits_delay_s_first_and_ignores_a_delay_it_cannot_take(new_task, new_context) -> None:
    echo = build_demo_agents()["echo"]
    task = new_task("echo", {"delayS": 0.2})
    started = time.monotonic()
    done = await echo.execute_task(task, new_context(task))
    assert time.monotonic() - started >= 0.2
    assert done.result == {"delayS": 0.2}
    for ignored in ("0.2", True, -1, 1e9):
        task = new_task("echo", {"delayS": ignored})
        started = time.monotonic()
        assert (await echo.execute_task(task, new_context(task))).status is TaskStatus.COMPLETED
        assert time.monotonic() - started < 0.2


async def test_calculator_demo_answers_20(new_task, new_context) -> None:
    task = new_task("calculator", {"prompt": "what is (2+3)*4?"})
    done = await run_with_interceptors(build_demo_agents()["calculator"], task, new_context(task), [])
    assert done.result["answer"] == "20"


def test_every_exported_name_exists() -> None:
    assert all(hasattr(runtime, name) for name in runtime.__all__)
