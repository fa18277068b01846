"""The task path in process (registry, dispatcher and agent workers on the test's event loop)
over real NATS JetStream and Redis: REST and NATS submission, round-robin, delegation, cancel,
dead tasks, idempotent submission and bad input."""

from __future__ import annotations

import collections
import json
import uuid
from typing import Any

import httpx
import pytest
from loom_protocol import RejectedMessage, Task, subjects

from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import Finals, sleepy, submit_nats

pytestmark = pytest.mark.component


async def test_calculator_over_rest_answers_20(stack: Stack, http: httpx.AsyncClient) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("w1")
    await stack.wait_instances("calculator", 1)
    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 10},
        json={"targetAgent": "calculator", "action": "execute", "parameters": {"prompt": "what is (2+3)*4?"}},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "completed"
    assert body["result"]["answer"] == "20"
    assert body["instanceId"] == "w1"
    assert body["attempt"] == 1
    again = (await http.get(f"{stack.api}/api/tasks/{body['taskId']}")).json()
    assert again["status"] == "completed" and again["result"]["answer"] == "20"


async def test_round_robin_is_fair_over_three_instances(stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    for i in range(3):  # heartbeats every second: a loaded machine must not evict a live instance
        await stack.worker(f"rr{i}", agents="echo", LOOM_HEARTBEAT_INTERVAL_S="1")
    await stack.wait_instances("echo", 3)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    tasks = [Task(target_agent="echo", parameters={"n": n}) for n in range(300)]
    for task in tasks:
        await submit_nats(nc, task)
    ids = [t.task_id for t in tasks]
    await wait_for(lambda: finals.done(ids), 60, "300 tasks to finish")
    assert all(len(finals.by_task[t]) == 1 for t in ids), "a task ended more than once"
    assert {finals.by_task[t][0].status for t in ids} == {"completed"}
    per_instance = collections.Counter(finals.by_task[t][0].instance_id for t in ids)
    assert set(per_instance) == {"rr0", "rr1", "rr2"}
    assert all(99 <= n <= 101 for n in per_instance.values()), per_instance
    assert [finals.by_task[t][0].result for t in ids[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_orchestrator_delegates_to_child_tasks(stack: Stack, http: httpx.AsyncClient) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("o0")
    await stack.worker("o1")
    await stack.wait_instances("orchestrator", 2)
    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 20},
        json={
            "targetAgent": "orchestrator",
            "sessionId": "s-orch",
            "parameters": {"prompt": "what is 6*7; say hello"},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "completed", body
    children = body["result"]["children"]
    assert [c["agent"] for c in children] == ["calculator", "echo"]
    assert children[0]["answer"] == "42"
    assert "42" in body["result"]["answer"]
    for child in children:
        record = (await http.get(f"{stack.api}/api/tasks/{child['task_id']}")).json()
        assert record["parentTaskId"] == body["taskId"]
        assert record["sessionId"] == "s-orch"
        assert record["status"] == "completed"


async def test_cancel_a_running_task(stack: Stack, http: httpx.AsyncClient) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("c0", agents="calculator")
    await stack.wait_instances("calculator", 1)
    resp = await http.post(
        f"{stack.api}/api/tasks", json={"targetAgent": "calculator", "parameters": sleepy(30)}
    )
    assert resp.status_code == 202
    task_id = resp.json()["taskId"]

    async def status() -> str:  # 404 until a dispatcher has consumed the submission
        return str((await http.get(f"{stack.api}/api/tasks/{task_id}")).json().get("status"))

    await wait_for(lambda: _is(status, "running"), 10, "the task to run")
    cancel = await http.post(f"{stack.api}/api/tasks/{task_id}/cancel")
    assert cancel.status_code in (200, 202), cancel.text
    await wait_for(lambda: _is(status, "cancelled"), 10, "the task to be cancelled")
    again = await http.post(f"{stack.api}/api/tasks/{task_id}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["error"]["message"]


async def _is(getter: Any, value: str) -> bool:
    return bool(await getter() == value)


async def test_no_instance_of_agent_ends_dead_with_reason(stack: Stack, http: httpx.AsyncClient) -> None:
    await stack.registry()
    await stack.dispatcher(LOOM_NO_INSTANCE_TIMEOUT_S="1")
    resp = await http.post(
        f"{stack.api}/api/tasks", params={"wait": 15}, json={"targetAgent": "nobody", "parameters": {}}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "dead"
    assert body["error"] == "no instance of agent nobody"


async def test_same_task_id_runs_once(stack: Stack, http: httpx.AsyncClient) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("i0", agents="echo")
    await stack.wait_instances("echo", 1)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    task_id = f"dup-{uuid.uuid4().hex}"
    first = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 10},
        json={"taskId": task_id, "targetAgent": "echo", "parameters": {"v": 1}},
    )
    second = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 10},
        json={"taskId": task_id, "targetAgent": "echo", "parameters": {"v": 2}},
    )
    await submit_nats(nc, Task(task_id=task_id, target_agent="echo", parameters={"v": 3}))
    assert first.json()["result"] == {"v": 1}
    assert second.json()["result"] == {"v": 1}, "the second submission ran again"
    await wait_for(lambda: finals.by_task.get(task_id), 5, "the final status")
    assert len(finals.by_task[task_id]) == 1


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 422, "JSON"),
        (json.dumps({"action": "execute", "parameters": {}}).encode(), 422, "targetAgent"),
        (json.dumps({"targetAgent": "echo", "parameters": "not an object"}).encode(), 422, "parameters"),
        (json.dumps({"targetAgent": "echo", "attempts": 3}).encode(), 422, "attempts"),
        (json.dumps({"targetAgent": "a.b"}).encode(), 422, "targetAgent"),
        (json.dumps({"targetAgent": "echo", "parameters": {"blob": "x" * 1_100_000}}).encode(), 413, "limit"),
    ],
    ids=["invalid-json", "missing-target", "wrong-type", "unknown-field", "dot-in-agent", "oversize"],
)
async def test_bad_rest_input_is_refused_with_a_reason(
    stack: Stack, http: httpx.AsyncClient, body: bytes, status: int, reason: str
) -> None:
    await stack.registry()
    await stack.dispatcher()
    resp = await http.post(
        f"{stack.api}/api/tasks", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    assert reason in json.dumps(resp.json()["error"])
    assert (await http.get(f"{stack.api}/healthz")).status_code == 200


async def test_bad_nats_submission_is_dead_lettered_and_dispatching_goes_on(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("b0", agents="echo")
    await stack.wait_instances("echo", 1)
    nc = await stack.nats()
    rejected: list[RejectedMessage] = []

    async def on_rejected(msg: Any) -> None:
        rejected.append(RejectedMessage.from_json(msg.data))

    await nc.subscribe(subjects.rejected("dispatcher"), cb=on_rejected)
    js = nc.jetstream()
    await js.publish(subjects.task_submitted("echo"), b"\xff not json")
    await js.publish(subjects.task_submitted("echo"), json.dumps({"parameters": {}}).encode())
    await js.publish(subjects.task_submitted("echo"), Task(target_agent="other").to_json())
    await wait_for(lambda: len(rejected) == 3, 10, "three dead-letter records")
    reasons = [r.reason for r in rejected]
    assert "JSON" in reasons[0] or "json" in reasons[0]
    assert "targetAgent" in reasons[1]
    assert "does not match" in reasons[2]
    assert rejected[0].subject == subjects.task_submitted("echo")
    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 10},
        json={"targetAgent": "echo", "parameters": {"still": "alive"}},
    )
    assert resp.json()["status"] == "completed"
