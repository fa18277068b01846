from __future__ import annotations

import asyncio

import pytest
from loom_agent_worker.runtime import MemoryStore, build_demo_agents, plan_from_prompt
from loom_protocol import MemoryTier, TaskStatus


@pytest.fixture
def agents():
    return build_demo_agents()


def test_plan_from_prompt_splits_and_routes() -> None:
    plan = plan_from_prompt("what is 2+3 and say hello; (2+3)*4 ;  ; 7 AND 8")
    assert [(step.agent, step.parameters) for step in plan] == [
        ("calculator", {"prompt": "what is 2+3"}),
        ("echo", {"prompt": "say hello"}),
        ("calculator", {"prompt": "(2+3)*4"}),
        ("echo", {"prompt": "7"}),
        ("echo", {"prompt": "8"}),
    ]
    assert plan_from_prompt("   ") == []


async def test_prompt_is_split_delegated_and_combined(agents, new_task, new_context) -> None:
    task = new_task(
        "orchestrator", {"prompt": "what is 2+3 and hello world; what is (2+3)*4?"}, session_id="s-7"
    )
    store = MemoryStore()
    ctx = new_context(task, agents=agents, memory=store)

    done = await agents["orchestrator"].execute_task(task, ctx)

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["answer"] == "5; hello world; 20"
    children = done.result["children"]
    assert [(c["agent"], c["status"], c["answer"], c["error"]) for c in children] == [
        ("calculator", "completed", "5", None),
        ("echo", "completed", "hello world", None),
        ("calculator", "completed", "20", None),
    ]
    submitted = ctx.children.submitted
    assert [c["task_id"] for c in children] == [child.task_id for child in submitted]
    assert all(child.parent_task_id == task.task_id and child.session_id == "s-7" for child in submitted)

    own = [e for e in ctx.events.events if e.task_id == task.task_id]
    assert [e.type for e in own] == [
        "agent.thought",
        "agent.action",
        "agent.action",
        "agent.action",
        "memory.add",
        "memory.add",
        "memory.add",
        "memory.consolidate",
        "agent.answer",
    ]
    assert [e.subject for e in own if e.type == "agent.action"] == [
        "agent:calculator",
        "agent:echo",
        "agent:calculator",
    ]
    assert [step["agent"] for step in own[0].data["plan"]] == ["calculator", "echo", "calculator"]
    # The children's own events (tool calls of the calculators) went to the shared log too.
    assert len([e for e in ctx.events.events if e.type == "tool.call"]) == 2
    # Child results are important: consolidation promoted them to long-term memory.
    long_term = [n.content for n in store.session("s-7").notes(MemoryTier.LONG_TERM)]
    assert long_term == ["calculator answered: 5", "echo answered: hello world", "calculator answered: 20"]


async def test_an_explicit_plan_is_followed(agents, new_task, new_context) -> None:
    plan = [
        {"agent": "echo", "parameters": {"text": "verbatim"}},
        {"agent": "calculator", "parameters": {"prompt": "2**10"}},
    ]
    task = new_task("orchestrator", {"prompt": "ignored 1+1", "plan": plan})
    ctx = new_context(task, agents=agents)
    done = await agents["orchestrator"].execute_task(task, ctx)
    assert done.result["answer"] == "verbatim; 1024"
    assert [c.target_agent for c in ctx.children.submitted] == ["echo", "calculator"]


async def test_children_run_concurrently(agents, new_task, new_context) -> None:
    task = new_task("orchestrator", {"prompt": "a; b; c"})
    ctx = new_context(task, agents=agents)
    barrier = asyncio.Barrier(3)

    async def wait_for_siblings(child) -> None:
        await barrier.wait()  # would never complete if children ran one after the other

    ctx.children.before_run = wait_for_siblings
    async with asyncio.timeout(5):
        done = await agents["orchestrator"].execute_task(task, ctx)
    assert done.result["answer"] == "a; b; c"


async def test_a_failed_child_fails_the_orchestrator(agents, new_task, new_context) -> None:
    plan = [
        {"agent": "echo", "parameters": {"prompt": "fine"}},
        {"agent": "calculator", "parameters": {"prompt": "x", "script": [{"tool": "echo", "arguments": {}}]}},
    ]
    task = new_task("orchestrator", {"plan": plan})
    ctx = new_context(task, agents=agents)
    done = await agents["orchestrator"].execute_task(task, ctx)
    assert done.status is TaskStatus.FAILED
    failed_child = ctx.children.submitted[1]
    assert done.error.startswith(f"child task {failed_child.task_id} on agent 'calculator' ended failed: ")
    assert "script exhausted" in done.error
    assert ctx.events.of_type("error")[-1].data == {"error": done.error}


async def test_failures_can_be_tolerated(agents, new_task, new_context) -> None:
    plan = [{"agent": "echo", "parameters": {"prompt": "fine"}}, {"agent": "nobody", "parameters": {}}]
    task = new_task("orchestrator", {"plan": plan, "tolerate_failures": True})
    ctx = new_context(task, agents=agents)
    done = await agents["orchestrator"].execute_task(task, ctx)
    assert done.status is TaskStatus.COMPLETED
    assert done.result["answer"] == "fine; [nobody dead: no instance of agent 'nobody']"
    assert done.result["children"][1]["status"] == "dead"


async def test_a_delegation_that_raises_counts_as_a_failed_child(agents, new_task, new_context) -> None:
    task = new_task("orchestrator", {"prompt": "hello"})
    ctx = new_context(task, agents=agents)

    async def transport_down(child) -> None:
        raise ConnectionError("nats unavailable")

    ctx.children.before_run = transport_down
    done = await agents["orchestrator"].execute_task(task, ctx)
    assert done.status is TaskStatus.FAILED
    assert done.error == (
        "child task None on agent 'echo' ended failed: delegation failed: ConnectionError: nats unavailable"
    )


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ({}, "nothing to do"),
        ({"prompt": " ; "}, "nothing to do"),
        ({"plan": "calculator"}, "invalid parameters: plan: Input should be a valid list"),
        (
            {"plan": [{"agent": "bad agent!"}]},
            "invalid parameters: plan.0.agent: String should match pattern",
        ),
        ({"plan": [{"agent": "echo"}] * 33}, "plan: List should have at most 32 items"),
        ({"prompt": "a", "child_timeout_s": 0}, "child_timeout_s: Input should be greater than 0"),
    ],
)
async def test_invalid_parameters_fail_clearly(parameters, error, agents, new_task, new_context) -> None:
    task = new_task("orchestrator", parameters)
    ctx = new_context(task, agents=agents)
    done = await agents["orchestrator"].execute_task(task, ctx)
    assert done.status is TaskStatus.FAILED
    assert error in done.error
    assert ctx.children.submitted == []
