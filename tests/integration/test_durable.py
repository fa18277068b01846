"""Durable execution through real processes: a worker killed with SIGKILL in the middle of a task,
the task resumed on another instance from the last recorded step; an approval pending while its
worker is killed and replaced is still approvable. (Approvals, rejections, timeouts and
cancellation run in process: tests/component/test_durable_flow.py.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from loom_protocol import Task

from .durable_support import PlanModel, Published
from .harness import Stack, process, wait_for
from .task_support import Finals, submit_nats

pytestmark = pytest.mark.integration

PLAN: list[dict[str, Any]] = [
    {"thought": "first 6*7", "tool": "calculator", "arguments": {"expression": "6*7"}},
    {"thought": "wait", "tool": "sleep", "arguments": {"seconds": 3}},
    {"thought": "then 7*8", "tool": "calculator", "arguments": {"expression": "7*8"}},
    {"answer": "42 and 56"},
]


@contextlib.asynccontextmanager
async def model_for(provider: str) -> AsyncIterator[tuple[dict[str, str], dict[str, Any], PlanModel | None]]:
    """The worker settings and task parameters that run PLAN through ``provider``."""
    if provider == "scripted":
        yield {}, {"script": PLAN}, None
        return
    fake = PlanModel(PLAN)
    async with fake.serving():
        yield fake.worker_env(), {"prompt": "compute 6*7, wait, then 7*8"}, fake


@pytest.mark.parametrize("provider", ["scripted", "openai"])
async def test_a_task_whose_worker_is_killed_resumes_from_its_last_recorded_step(
    stack: Stack, provider: str
) -> None:
    async with model_for(provider) as (env, parameters, fake):
        await stack.registry()
        await stack.dispatcher(LOOM_RETRY_BACKOFF_S="0.05")
        victim = process(await stack.worker("v0", agents="calculator", process=True, **env))
        await stack.wait_instances("calculator", 1)
        nc = await stack.nats()
        finals, published = Finals(), Published()
        await finals.attach(nc)
        await published.attach(nc)
        task = Task(target_agent="calculator", parameters=parameters)
        await submit_nats(nc, task)

        def sleeping() -> bool:
            return any(call.get("name") == "sleep" for call in published.of(task.task_id, "tool.call"))

        await wait_for(sleeping, 30, "the task to reach its sleep step")
        await stack.worker("v1", agents="calculator", **env)  # the instance it resumes on
        victim.kill()
        await wait_for(lambda: finals.done([task.task_id]), 60, "the task to end on the other instance")

        final = finals.by_task[task.task_id]
        assert [f.status for f in final] == ["completed"], final
        assert final[0].instance_id == "v1" and final[0].attempt >= 2
        assert final[0].result["answer"] == "42 and 56"
        calls = published.of(task.task_id, "tool.call")
        results = published.of(task.task_id, "tool.result")
        # the first calculator call ran once across both attempts; the interrupted sleep ran again
        assert [c["name"] for c in calls] == ["calculator", "sleep", "sleep", "calculator"]
        assert [r["content"] for r in results if r["name"] == "calculator"] == ["42", "56"]
        resumed = published.of(task.task_id, "task.resumed")
        assert len(resumed) == 1 and resumed[0]["restored_steps"] >= 1, resumed
        assert resumed[0]["llm_steps"] == 2 and resumed[0]["tool_steps"] == 1
        assert published.types(task.task_id).count("llm.request") == 4  # one per step, never again
        if fake is not None:
            assert dict(fake.requests) == {0: 1, 1: 1, 2: 1, 3: 1}  # no step asked twice


async def test_an_approval_pending_while_its_worker_is_killed_is_still_approvable(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.registry()
    await stack.dispatcher()
    victim = process(await stack.worker("a0", agents="calculator", process=True))
    await stack.wait_instances("calculator", 1)
    nc = await stack.nats()
    published = Published()
    await published.attach(nc)
    resp = await http.post(
        f"{stack.api}/api/tasks",
        json={
            "targetAgent": "calculator",
            "parameters": {"prompt": "what is 6*7?"},
            "metadata": {"approvalTools": ["calculator"]},
        },
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["taskId"]

    async def waiting() -> dict[str, Any] | None:
        body = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
        return body if body["status"] == "input_required" else None

    pending = await wait_for(waiting, 30, "the task to wait for approval")
    assert pending["pendingApproval"]["tool"] == "calculator"
    assert pending["pendingApproval"]["arguments"] == {"expression": "6*7"}
    victim.kill()
    await stack.worker("a1", agents="calculator")
    await stack.wait_instances("calculator", 1, timeout=30)  # a0 gone, a1 up

    resp = await http.post(f"{stack.api}/api/tasks/{task_id}/approve", json={"by": "ops"})
    assert resp.status_code == 202, resp.text

    async def ended() -> dict[str, Any] | None:
        body = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
        return body if body["status"] in ("completed", "failed", "dead", "cancelled") else None

    done = await wait_for(ended, 30, "the approved task to end")
    assert done["status"] == "completed", done
    assert done["instanceId"] == "a1"
    assert done["result"]["answer"] == "42"
    assert [c["name"] for c in published.of(task_id, "tool.call")] == ["calculator"]  # run once
