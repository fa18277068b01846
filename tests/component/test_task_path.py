"""The task path in process (registry, dispatcher and agent workers on the test's event loop)
over real NATS JetStream and Redis: REST and NATS submission, round-robin, delegation, cancel,
dead tasks, idempotent and conflicting submission, unknown agents and bad input."""

from __future__ import annotations

import asyncio
import collections
import json
import statistics
import time
import uuid
from typing import Any

import httpx
import pytest
from loom_protocol import RejectedMessage, Task, TaskDeadLettered, subjects

from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import Finals, sleepy, submit_nats

pytestmark = pytest.mark.component


async def one_worker(stack: Stack, instance: str, agents: str, listed: str) -> None:
    """A registry, a dispatcher and one worker hosting ``agents``, ``listed`` known to the registry."""
    await stack.registry()
    await stack.dispatcher()
    await stack.worker(instance, agents=agents)
    await stack.wait_instances(listed, 1)


async def dispatcher_dead_letters(stack: Stack) -> list[RejectedMessage]:
    """The dispatcher's dead-letter records, collected as they are published from now on."""
    rejected: list[RejectedMessage] = []

    async def on_rejected(msg: Any) -> None:
        rejected.append(RejectedMessage.from_json(msg.data))

    await (await stack.nats()).subscribe(subjects.rejected("dispatcher"), cb=on_rejected)
    return rejected


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


async def test_rest_submissions_are_routed_by_the_api_one_pick_each(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.registry()
    await stack.dispatcher()
    for i in range(2):
        await stack.worker(f"rest{i}", agents="echo", LOOM_HEARTBEAT_INTERVAL_S="1")
    await stack.wait_instances("echo", 2)
    answers = []
    for n in range(40):  # one at a time: the consumer hears each submission again meanwhile
        resp = await http.post(f"{stack.api}/api/tasks", json={"targetAgent": "echo", "parameters": {"n": n}})
        # 202 on its way, 200 once ended: an echo may be over before the answer is read
        assert resp.status_code == (200 if resp.json()["status"] == "completed" else 202), resp.text
        answers.append(resp.json())
    # routed before the answer (no wait for JetStream to deliver the submission back)
    assert {a["status"] for a in answers} <= {"dispatched", "running", "completed"}, answers
    assert [a["attempt"] for a in answers] == [1] * 40

    async def finished() -> list[dict[str, Any]]:
        return [(await http.get(f"{stack.api}/api/tasks/{a['taskId']}")).json() for a in answers]

    deadline = time.monotonic() + 30
    done = await finished()
    while any(t["status"] != "completed" for t in done):
        assert time.monotonic() < deadline, "40 tasks did not complete"
        await asyncio.sleep(0.1)
        done = await finished()
    # one pick per task: two picks for any (the API's and its consumer's) would break the alternation
    instances = [t["instanceId"] for t in done]
    first = int(instances[0].removeprefix("rest"))
    assert instances == [f"rest{(first + n) % 2}" for n in range(40)], instances
    assert all(t["attempt"] == 1 for t in done)


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
    await one_worker(stack, "c0", "calculator", "calculator")
    resp = await http.post(
        f"{stack.api}/api/tasks", json={"targetAgent": "calculator", "parameters": sleepy(30)}
    )
    assert resp.status_code == 202
    task_id = resp.json()["taskId"]

    async def status() -> str:
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
    resp = await http.post(  # an agent never seen: only a task that asks to wait for it waits
        f"{stack.api}/api/tasks",
        params={"wait": 15, "waitForAgent": "true"},
        json={"targetAgent": "nobody", "parameters": {}},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "dead"
    assert body["error"] == "no instance of agent nobody"


async def test_same_task_id_runs_once(stack: Stack, http: httpx.AsyncClient) -> None:
    await one_worker(stack, "i0", "echo", "echo")
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
        json={"taskId": task_id, "targetAgent": "echo", "parameters": {"v": 1}},
    )
    assert first.json()["result"] == {"v": 1}
    assert second.status_code == 200 and second.json()["result"] == {"v": 1}, "the same body ran again"
    await wait_for(lambda: finals.by_task.get(task_id), 5, "the final status")
    assert len(finals.by_task[task_id]) == 1


async def test_a_known_task_id_with_a_different_body_is_a_conflict(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await one_worker(stack, "x0", "echo", "echo")
    nc = await stack.nats()
    rejected = await dispatcher_dead_letters(stack)
    task_id = f"dup-{uuid.uuid4().hex}"
    body = {"taskId": task_id, "targetAgent": "echo", "parameters": {"v": 1}, "metadata": {"k": "a"}}
    first = await http.post(f"{stack.api}/api/tasks", params={"wait": 10}, json=body)
    assert first.status_code == 200, first.text
    conflict = await http.post(f"{stack.api}/api/tasks", json={**body, "parameters": {"v": 2}})
    assert conflict.status_code == 409, conflict.text
    error = conflict.json()["error"]
    assert error["code"] == "task_id_conflict" and error["differingFields"] == ["parameters"]
    assert task_id in error["message"]
    # the same body is still idempotent, the wait flag is not part of the body
    same = await http.post(f"{stack.api}/api/tasks", params={"waitForAgent": "true"}, json=body)
    assert same.status_code == 200 and same.json()["result"] == {"v": 1}
    # over NATS, a conflicting resubmission is a dead-letter record, never silently dropped. (With
    # the usual Nats-Msg-Id and within the stream's duplicate window JetStream itself drops it and
    # answers the publisher duplicate=true; so it is published here as after that window.)
    conflicting = Task(task_id=task_id, target_agent="echo", parameters={"v": 3})
    await nc.jetstream().publish(subjects.task_submitted("echo"), conflicting.to_json())
    await wait_for(lambda: rejected, 10, "the conflict's dead-letter record")
    assert "already exists with a different submission" in rejected[0].reason
    stored = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
    assert stored["parameters"] == {"v": 1} and stored["attempt"] == 1


async def test_an_unknown_agent_is_404_at_once_naming_the_closest(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    registry = await stack.registry()
    await stack.dispatcher()
    await stack.worker("u0", agents="echo,calculator")
    await stack.wait_instances("calculator", 1)
    took = []
    for _ in range(5):  # each a cache miss: the dispatcher asks the registry every time
        start = time.perf_counter()
        resp = await http.post(
            f"{stack.api}/api/tasks", json={"targetAgent": "calculater", "parameters": {"prompt": "1+1"}}
        )
        took.append(time.perf_counter() - start)
        assert resp.status_code == 404, resp.text
    # at once: never the 3 s the dispatcher waits for an instance of a known agent (a loaded
    # machine may stall one request, so the bound is on that wait, not on the speed)
    assert statistics.median(took) < 0.5 and max(took) < 2.5, took
    error = resp.json()["error"]
    assert error["code"] == "unknown_agent" and error["agent"] == "calculater"
    assert error["suggestions"] == ["calculator"]
    assert "did you mean 'calculator'?" in error["message"] and "waitForAgent" in error["message"]
    # asked to wait: accepted and pending, as before
    waiting = await http.post(
        f"{stack.api}/api/tasks", params={"waitForAgent": "true"}, json={"targetAgent": "calculater"}
    )
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["metadata"] == {"waitForAgent": True}
    # an unknown name never becomes a metric label (the waiting task is counted as "(unknown)")
    for url in (stack.api, registry.url):
        text = (await http.get(f"{url}/metrics")).text
        assert 'agent="calculater"' not in text, url
    assert 'agent="(unknown)"' in (await http.get(f"{stack.api}/metrics")).text


async def test_an_unknown_agent_over_nats_is_dead_lettered_with_the_reason(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await one_worker(stack, "n0", "calculator", "calculator")
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    dead: list[TaskDeadLettered] = []

    async def on_dead(msg: Any) -> None:
        dead.append(TaskDeadLettered.from_json(msg.data))

    await nc.subscribe(subjects.TASK_DEAD_ALL, cb=on_dead)
    task = Task(target_agent="calculater", parameters={"prompt": "1+1"})
    waits = Task(target_agent="calculater", metadata={"waitForAgent": True})
    await submit_nats(nc, task)
    await submit_nats(nc, waits)
    await wait_for(lambda: finals.by_task.get(task.task_id) and dead, 5, "the dead-letter record")
    [record] = dead
    assert record.task.task_id == task.task_id and "did you mean 'calculator'?" in record.reason
    assert finals.by_task[task.task_id][0].status == "dead"
    stored = (await http.get(f"{stack.api}/api/tasks/{task.task_id}")).json()
    assert stored["status"] == "dead" and stored["error"] == record.reason
    waiting = (await http.get(f"{stack.api}/api/tasks/{waits.task_id}")).json()
    assert waiting["status"] == "pending"  # asked to wait: waits for an instance, as before


async def test_a_task_can_be_read_right_after_its_202(stack: Stack, http: httpx.AsyncClient) -> None:
    await one_worker(stack, "g0", "echo", "echo")

    async def submit_then_read(n: int) -> tuple[int, int, str]:
        resp = await http.post(f"{stack.api}/api/tasks", json={"targetAgent": "echo", "parameters": {"n": n}})
        got = await http.get(f"{stack.api}/api/tasks/{resp.json()['taskId']}")
        return resp.status_code, got.status_code, got.text

    answers = await asyncio.gather(*(submit_then_read(n) for n in range(20)))
    # accepted (202), or already over (200: an echo can end before its answer is read)
    assert all(posted in (200, 202) and read == 200 for posted, read, _ in answers), answers


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
    await one_worker(stack, "b0", "echo", "echo")
    nc = await stack.nats()
    rejected = await dispatcher_dead_letters(stack)
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
