"""Approvals and cancellation end to end (dispatcher, registry and workers in process on real NATS
and Redis): a tool call that needs approval stops its task in ``input_required``; approved it
runs once (with edited arguments when given), rejected it never runs and the agent is told; a
wait that runs out ends as configured; cancelling an orchestrator, or its giving up on a child,
cancels the children."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from loom_nats import flushed
from loom_protocol import Task, TaskStatusChanged, subjects

from tests.integration.durable_support import Published
from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import sleepy

pytestmark = pytest.mark.component

TERMINAL = ("completed", "failed", "dead", "cancelled")


async def start(stack: Stack, **dispatcher_env: str) -> Published:
    await stack.registry()
    await stack.dispatcher(**dispatcher_env)
    await stack.worker("w0", agents="calculator,orchestrator")
    await stack.wait_instances("calculator", 1)
    published = Published()
    await published.attach(await stack.nats())
    return published


async def submit(http: httpx.AsyncClient, stack: Stack, **body: Any) -> str:
    resp = await http.post(f"{stack.api}/api/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["taskId"])


async def status_of(
    http: httpx.AsyncClient, stack: Stack, task_id: str, wanted: tuple[str, ...]
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
        return body if body["status"] in wanted else None

    found: dict[str, Any] = await wait_for(reached, 30, f"task {task_id} to be {'/'.join(wanted)}")
    return found


def guarded(prompt: str = "what is 6*7?", **metadata: Any) -> dict[str, Any]:
    return {
        "targetAgent": "calculator",
        "parameters": {"prompt": prompt},
        "metadata": {"approvalTools": ["calculator"], **metadata},
    }


async def test_an_approved_call_runs_once_with_the_edited_arguments(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    published = await start(stack)
    task_id = await submit(http, stack, **guarded())
    waiting = await status_of(http, stack, task_id, ("input_required",))
    pending = waiting["pendingApproval"]
    assert (pending["key"], pending["tool"], pending["arguments"]) == (
        "1.0",
        "calculator",
        {"expression": "6*7"},
    )
    assert "calculator" in (pending["reasoning"] or "")
    assert published.of(task_id, "approval.requested")[0]["tool"] == "calculator"
    assert published.of(task_id, "tool.call") == []  # nothing ran while it waited

    resp = await http.post(
        f"{stack.api}/api/tasks/{task_id}/approve", json={"arguments": {"expression": "6*8"}, "by": "ann"}
    )
    assert resp.status_code == 202, resp.text
    done = await status_of(http, stack, task_id, TERMINAL)
    assert done["status"] == "completed", done
    assert done["result"]["answer"] == "48"
    assert [c["arguments"] for c in published.of(task_id, "tool.call")] == [{"expression": "6*8"}]
    granted = published.of(task_id, "approval.granted")
    assert len(granted) == 1 and granted[0]["by"] == "ann" and granted[0]["edited"] is True
    resumed = published.of(task_id, "task.resumed")
    assert len(resumed) == 1 and resumed[0]["llm_steps"] == 1  # the LLM was not asked again

    again = await http.post(f"{stack.api}/api/tasks/{task_id}/approve", json={})
    assert again.status_code == 409, again.text


async def test_a_rejected_call_never_runs_and_the_agent_is_told(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    published = await start(stack)
    task_id = await submit(http, stack, **guarded())
    await status_of(http, stack, task_id, ("input_required",))
    resp = await http.post(
        f"{stack.api}/api/tasks/{task_id}/reject", json={"by": "ops", "reason": "too risky"}
    )
    assert resp.status_code == 202, resp.text
    done = await status_of(http, stack, task_id, TERMINAL)
    assert done["status"] == "completed", done
    assert "rejected by ops: too risky" in done["result"]["answer"]
    assert published.of(task_id, "tool.call") == []  # never executed
    denied = published.of(task_id, "approval.denied")
    assert len(denied) == 1 and denied[0]["reason"] == "too risky"


async def test_decisions_on_tasks_that_do_not_wait_are_refused(stack: Stack, http: httpx.AsyncClient) -> None:
    await start(stack)
    missing = await http.post(f"{stack.api}/api/tasks/no-such-task/approve", json={})
    assert missing.status_code == 404, missing.text
    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 10},
        json={"targetAgent": "calculator", "parameters": {"prompt": "1+1"}},
    )
    assert resp.json()["status"] == "completed"
    ended = await http.post(f"{stack.api}/api/tasks/{resp.json()['taskId']}/reject", json={"reason": "late"})
    assert ended.status_code == 409, ended.text
    assert ended.json()["error"]["code"] == "not_waiting_for_approval"


@pytest.mark.parametrize(("action", "expected"), [("reject", "completed"), ("dead", "dead")])
async def test_an_approval_that_waits_too_long_ends_as_configured(
    stack: Stack, http: httpx.AsyncClient, action: str, expected: str
) -> None:
    published = await start(stack)
    task_id = await submit(http, stack, **guarded(approvalTimeoutS=0.5, approvalTimeoutAction=action))
    done = await status_of(http, stack, task_id, TERMINAL)
    assert done["status"] == expected, done
    assert published.of(task_id, "tool.call") == []
    if action == "reject":
        assert "timed out" in done["result"]["answer"]
        assert published.of(task_id, "approval.denied")[0]["by"] == "timeout"
    else:
        assert "timed out" in (done["error"] or "")


class Children:
    """The child tasks submitted on the test's account, by parent."""

    def __init__(self) -> None:
        self.of: dict[str, list[str]] = {}
        self.final: dict[str, str] = {}

    async def attach(self, nc: Any) -> None:
        async def on_submitted(msg: Any) -> None:
            task = Task.from_json(msg.data)
            if task.parent_task_id:
                self.of.setdefault(task.parent_task_id, []).append(task.task_id)

        async def on_status(msg: Any) -> None:
            change = TaskStatusChanged.from_json(msg.data)
            if change.final:
                self.final[change.task_id] = change.status.value

        await nc.subscribe(subjects.TASK_SUBMITTED_ALL, cb=on_submitted)
        await nc.subscribe(subjects.TASK_STATUS_ALL, cb=on_status)
        await flushed(nc)


async def test_cancelling_an_orchestrator_cancels_its_children(stack: Stack, http: httpx.AsyncClient) -> None:
    await start(stack)
    children = Children()
    await children.attach(await stack.nats())
    plan = [{"agent": "calculator", "parameters": sleepy(20)} for _ in range(2)]
    parent = await submit(http, stack, targetAgent="orchestrator", parameters={"plan": plan})

    async def running() -> bool:
        ids = children.of.get(parent, [])
        if len(ids) < 2:
            return False
        states = [(await http.get(f"{stack.api}/api/tasks/{i}")).json()["status"] for i in ids]
        return all(s == "running" for s in states)

    await wait_for(running, 30, "both children to run")
    resp = await http.post(f"{stack.api}/api/tasks/{parent}/cancel")
    assert resp.status_code in (200, 202), resp.text
    ids = children.of[parent]
    await wait_for(lambda: all(i in children.final for i in ids), 30, "the children to end")
    assert [children.final[i] for i in ids] == ["cancelled", "cancelled"]
    assert (await status_of(http, stack, parent, TERMINAL))["status"] == "cancelled"


async def test_a_parent_that_gives_up_on_a_child_cancels_it(stack: Stack, http: httpx.AsyncClient) -> None:
    await start(stack)
    children = Children()
    await children.attach(await stack.nats())
    plan = [{"agent": "calculator", "parameters": sleepy(20)}]
    parent = await submit(
        http, stack, targetAgent="orchestrator", parameters={"plan": plan, "child_timeout_s": 1.0}
    )
    done = await status_of(http, stack, parent, TERMINAL)
    assert done["status"] == "failed" and "timed out" in done["error"], done
    child = children.of[parent][0]
    await wait_for(lambda: child in children.final, 30, "the abandoned child to end")
    assert children.final[child] == "cancelled"
