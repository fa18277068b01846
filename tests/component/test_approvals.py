"""Approvals through the dispatcher in process (a registry and a dispatcher on the test's event loop)
over real NATS JetStream and Redis, the test playing the worker: it heartbeats an instance,
receives its assignments and reports ``input_required`` with the call it stopped on. Approve and
reject (the decision travels in the next assignment), 404/409/422 answers, two decisions at
once, the approval timeout (reject or dead), and ``member.down`` leaving a waiting task alone."""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any

import httpx
import pytest
from loom_nats import flushed
from loom_protocol import (
    MSG_ID_HEADER,
    AgentCard,
    ApprovalDecided,
    ApprovalRequest,
    CloudEvent,
    Heartbeat,
    InstanceLoad,
    MemberChanged,
    MembershipChange,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatus,
    TaskStatusChanged,
    member_msg_id,
    status_msg_id,
    subjects,
)

from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import Finals

pytestmark = pytest.mark.component

AGENT = "approver"
CALL = ApprovalRequest(key="2.0", tool="delete_file", arguments={"path": "/tmp/a"}, step=2, attempt=1)


class FakeInstance:
    """An agent worker as the dispatcher sees it on NATS: one heartbeat naming its agents, the
    assignments and cancel requests it is sent, and the status changes it reports (JetStream,
    with a worker's Nats-Msg-Id). With ``obey_cancel`` it answers a cancel of a task it holds
    with a ``cancelled`` report, as a worker that stopped the task does."""

    def __init__(self, nc: Any, instance_id: str, agents: tuple[str, ...] = (AGENT,)) -> None:
        self.nc = nc
        self.instance_id = instance_id
        self.agents = agents
        self.assigned: dict[str, list[Task]] = collections.defaultdict(list)
        self.cancels: list[str] = []
        self.obey_cancel = False

    async def start(self, stack: Stack) -> FakeInstance:
        async def on_assigned(msg: Any) -> None:
            task = Task.from_json(msg.data)
            self.assigned[task.task_id].append(task)

        async def on_cancel(msg: Any) -> None:
            request = TaskCancelRequested.from_json(msg.data)
            held = self.assigned.get(request.task_id)
            if not held:
                return
            self.cancels.append(request.task_id)
            if self.obey_cancel:
                await self.report(held[-1], TaskStatus.CANCELLED, error="stopped on request")

        await self.nc.subscribe(subjects.task_assigned(self.instance_id), cb=on_assigned)
        await self.nc.subscribe(subjects.TASK_CANCEL_ALL, cb=on_cancel)
        beat = Heartbeat(
            instance_id=self.instance_id,
            agents=[AgentCard(agent_id=a, name=a) for a in self.agents],
            host="test",
            pid=os.getpid(),
            load=InstanceLoad(in_flight=0, capacity=100),
            interval_s=60,  # one is enough for the length of a test
        )
        await self.nc.publish(subjects.registry_heartbeat(self.instance_id), beat.to_json())
        await flushed(self.nc)
        for agent in self.agents:
            await stack.wait_instances(agent, 1)
        return self

    async def assignment(self, task_id: str, attempt: int, timeout: float = 10) -> Task:
        """The assignment of ``task_id``'s ``attempt``, once it arrived."""

        def arrived() -> Task | None:
            return next((t for t in self.assigned.get(task_id, []) if t.attempt == attempt), None)

        task: Task = await wait_for(arrived, timeout, f"attempt {attempt} of {task_id} at {self.instance_id}")
        return task

    async def report(self, task: Task, status: TaskStatus, **changes: Any) -> None:
        change = TaskStatusChanged.from_task(task, status=status, instance_id=self.instance_id, **changes)
        await self.nc.jetstream().publish(
            subjects.task_report(self.instance_id, task.task_id),
            change.to_json(),
            headers={MSG_ID_HEADER: status_msg_id(task.task_id, task.attempt, status)},
        )

    async def stop_for_approval(self, task: Task, call: ApprovalRequest = CALL) -> None:
        """Run ``task`` and stop it on ``call``, as a worker does before a call needing approval."""
        await self.report(task, TaskStatus.RUNNING)
        asked = call.model_copy(update={"attempt": task.attempt})
        await self.report(task, TaskStatus.INPUT_REQUIRED, approval=asked)


class Events:
    """The dispatcher's approval events, as published."""

    def __init__(self) -> None:
        self.seen: list[CloudEvent] = []

    async def attach(self, nc: Any) -> Events:
        async def on_event(msg: Any) -> None:
            self.seen.append(CloudEvent.from_json(msg.data))

        await nc.subscribe(subjects.EVENT_ALL, cb=on_event)
        await flushed(nc)
        return self

    def of(self, task_id: str, event_type: str) -> list[ApprovalDecided]:
        return [
            ApprovalDecided.model_validate(e.data)
            for e in self.seen
            if e.taskid == task_id and e.type == event_type
        ]


async def approvals_stack(stack: Stack, instance: str = "fa-1", **dispatcher_env: str) -> FakeInstance:
    """A registry, a dispatcher sweeping often, and a fake instance of ``AGENT``."""
    await stack.registry()
    await stack.dispatcher(LOOM_SWEEP_INTERVAL_S="0.05", **dispatcher_env)
    return await FakeInstance(await stack.nats(), instance).start(stack)


async def submit(http: httpx.AsyncClient, stack: Stack, **fields: Any) -> str:
    resp = await http.post(f"{stack.api}/api/tasks", json={"targetAgent": AGENT, **fields})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["taskId"])


async def waiting(http: httpx.AsyncClient, stack: Stack, task_id: str) -> dict[str, Any]:
    """The task once the dispatcher recorded it as waiting for approval."""

    async def read() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
        return body if body.get("status") == "input_required" else None

    body: dict[str, Any] = await wait_for(read, 10, f"{task_id} to wait for approval")
    return body


async def test_approve_dispatches_a_new_attempt_that_carries_the_decision(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    fake = await approvals_stack(stack)
    events = await Events().attach(await stack.nats())
    finals = Finals()
    await finals.attach(await stack.nats())
    task_id = await submit(http, stack, parameters={"prompt": "clean up"})
    first = await fake.assignment(task_id, 1)
    await fake.stop_for_approval(first)
    body = await waiting(http, stack, task_id)
    assert body["pendingApproval"]["key"] == "2.0" and body["pendingApproval"]["tool"] == "delete_file"
    assert body["pendingApproval"]["arguments"] == {"path": "/tmp/a"}
    assert "instanceId" not in body and body["attempt"] == 1

    resp = await http.post(
        f"{stack.api}/api/tasks/{task_id}/approve",
        json={"arguments": {"path": "/tmp/b"}, "by": "alice", "reason": "b, not a"},
    )
    assert resp.status_code == 202, resp.text
    decided = resp.json()
    assert "pendingApproval" not in decided or decided["pendingApproval"] is None
    assert decided["approvals"][0]["approved"] is True and decided["approvals"][0]["by"] == "alice"
    second = await fake.assignment(task_id, 2)
    decision = second.decision_for("2.0")
    assert decision is not None and decision.approved and decision.arguments == {"path": "/tmp/b"}
    assert second.pending_approval is None
    [granted] = await wait_for(lambda: events.of(task_id, "approval.granted"), 5, "approval.granted")
    assert (granted.key, granted.tool, granted.approved, granted.by, granted.edited) == (
        "2.0",
        "delete_file",
        True,
        "alice",
        True,
    )
    await fake.report(second, TaskStatus.COMPLETED, result={"answer": "done"})
    await wait_for(lambda: finals.by_task.get(task_id), 10, "the final status")
    assert finals.by_task[task_id][0].status == "completed"

    again = await http.post(f"{stack.api}/api/tasks/{task_id}/approve")
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "not_waiting_for_approval" and error["taskStatus"] == "completed"
    assert "completed" in error["message"] and error["taskId"] == task_id


async def test_reject_dispatches_a_new_attempt_that_never_runs_the_call(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    fake = await approvals_stack(stack)
    events = await Events().attach(await stack.nats())
    task_id = await submit(http, stack)
    await fake.stop_for_approval(await fake.assignment(task_id, 1))
    await waiting(http, stack, task_id)
    with_arguments = await http.post(f"{stack.api}/api/tasks/{task_id}/reject", json={"arguments": {}})
    assert with_arguments.status_code == 422, with_arguments.text
    assert with_arguments.json()["error"]["fields"][0]["field"] == "body.arguments"
    unknown_field = await http.post(f"{stack.api}/api/tasks/{task_id}/reject", json={"because": "x"})
    assert unknown_field.status_code == 422
    unknown = await http.post(f"{stack.api}/api/tasks/no-such-task/reject")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"

    resp = await http.post(f"{stack.api}/api/tasks/{task_id}/reject", json={"reason": "not that file"})
    assert resp.status_code == 202, resp.text
    second = await fake.assignment(task_id, 2)
    decision = second.decision_for("2.0")
    assert decision is not None and not decision.approved and decision.arguments is None
    assert decision.reason == "not that file" and decision.by is None
    [denied] = await wait_for(lambda: events.of(task_id, "approval.denied"), 5, "approval.denied")
    assert denied.approved is False and denied.reason == "not that file" and not denied.edited


async def test_a_decision_on_a_task_that_does_not_wait_is_409_and_two_at_once_one_wins(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    fake = await approvals_stack(stack)
    task_id = await submit(http, stack)
    first = await fake.assignment(task_id, 1)
    await fake.report(first, TaskStatus.RUNNING)
    early = await http.post(f"{stack.api}/api/tasks/{task_id}/approve")  # empty body: still 409
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "not_waiting_for_approval"
    assert early.json()["error"]["taskStatus"] in ("dispatched", "running")

    await fake.stop_for_approval(first)
    await waiting(http, stack, task_id)
    answers = await asyncio.gather(
        http.post(f"{stack.api}/api/tasks/{task_id}/approve", json={"by": "a"}),
        http.post(f"{stack.api}/api/tasks/{task_id}/reject", json={"by": "b"}),
    )
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 202).json()
    second = await fake.assignment(task_id, 2)
    assert len(second.approvals) == 1 and second.approvals[0].by == winner["approvals"][0]["by"]


async def test_a_wait_that_runs_out_is_rejected_by_the_timeout(stack: Stack, http: httpx.AsyncClient) -> None:
    fake = await approvals_stack(stack)
    events = await Events().attach(await stack.nats())
    task_id = await submit(http, stack, metadata={"approvalTimeoutS": 0.5})
    await fake.stop_for_approval(await fake.assignment(task_id, 1))
    second = await fake.assignment(task_id, 2)
    decision = second.decision_for("2.0")
    assert decision is not None and not decision.approved and decision.by == "timeout"
    assert decision.reason == "approval timed out after 0.5 s"
    [denied] = await wait_for(lambda: events.of(task_id, "approval.denied"), 5, "approval.denied")
    assert denied.by == "timeout"


async def test_a_wait_that_runs_out_ends_dead_when_so_configured(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    fake = await approvals_stack(stack, LOOM_APPROVAL_TIMEOUT_S="0.5", LOOM_APPROVAL_TIMEOUT_ACTION="dead")
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    dead: list[TaskDeadLettered] = []

    async def on_dead(msg: Any) -> None:
        dead.append(TaskDeadLettered.from_json(msg.data))

    await nc.subscribe(subjects.task_dead(AGENT), cb=on_dead)
    task_id = await submit(http, stack)
    await fake.stop_for_approval(await fake.assignment(task_id, 1))
    await wait_for(lambda: finals.by_task.get(task_id) and dead, 10, "the task to end dead")
    assert finals.by_task[task_id][0].status == "dead"
    assert dead[0].reason == "approval timed out after 0.5 s" and dead[0].task.task_id == task_id
    body = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
    assert body["status"] == "dead" and body["error"] == "approval timed out after 0.5 s"
    assert "pendingApproval" not in body
    assert len(fake.assigned[task_id]) == 1  # never dispatched again


async def test_member_down_leaves_a_task_waiting_for_approval_alone(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    fake = await approvals_stack(stack)
    asking = await submit(http, stack)
    await fake.stop_for_approval(await fake.assignment(asking, 1))
    await waiting(http, stack, asking)
    held = await submit(http, stack)  # at the instance, not started
    await fake.assignment(held, 1)
    down = MemberChanged(instance_id=fake.instance_id, change=MembershipChange.DOWN, reason="test")
    await (
        (await stack.nats())
        .jetstream()
        .publish(
            subjects.REGISTRY_MEMBER_DOWN,
            down.to_json(),
            headers={MSG_ID_HEADER: member_msg_id(down.instance_id, down.change, down.at)},
        )
    )
    # the instance's other task is dispatched again: the down has been handled
    await fake.assignment(held, 2)
    body = (await http.get(f"{stack.api}/api/tasks/{asking}")).json()
    assert body["status"] == "input_required" and body["attempt"] == 1
    assert body["pendingApproval"]["key"] == "2.0"
    resp = await http.post(f"{stack.api}/api/tasks/{asking}/approve")
    assert resp.status_code == 202, resp.text
    await fake.assignment(asking, 2)
