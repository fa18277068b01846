"""Cancellation down a task's children through the dispatcher in process (with a registry) over
real NATS JetStream and Redis, the test playing the worker of an agent (``FakeInstance``):
cancelling a parent over REST cancels its children (one running at the instance, one waiting
for an instance, one waiting for approval), and a ``loom.task.cancelrequest.<id>`` message
cancels a task and its children."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from loom_protocol import (
    MSG_ID_HEADER,
    TaskCancelRequested,
    TaskStatus,
    cancel_request_msg_id,
    subjects,
)

from tests.component.test_approvals import FakeInstance, approvals_stack, submit, waiting
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.component


async def ended(http: httpx.AsyncClient, stack: Stack, task_id: str, status: str) -> dict[str, Any]:
    """The task once it has ``status``."""

    async def read() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
        return body if body.get("status") == status else None

    body: dict[str, Any] = await wait_for(read, 10, f"{task_id} to be {status}")
    return body


async def running(fake: FakeInstance, task_id: str) -> None:
    await fake.report(await fake.assignment(task_id, 1), TaskStatus.RUNNING)


async def test_cancelling_a_parent_cancels_its_children(stack: Stack, http: httpx.AsyncClient) -> None:
    fake = await approvals_stack(stack, "fc-1")
    fake.obey_cancel = True
    parent = await submit(http, stack)
    await running(fake, parent)
    at_worker = await submit(http, stack, parentTaskId=parent)
    await running(fake, at_worker)
    asking = await submit(http, stack, parentTaskId=parent)
    await fake.stop_for_approval(await fake.assignment(asking, 1))
    await waiting(http, stack, asking)
    no_instance = await submit(
        http, stack, parentTaskId=parent, targetAgent="nobody-yet", metadata={"waitForAgent": True}
    )
    resp = await http.post(f"{stack.api}/api/tasks/{parent}/cancel")
    assert resp.status_code == 202, resp.text  # the parent runs at the instance: its worker is told

    named = f"parent task {parent} was cancelled"
    for task_id in (asking, no_instance):  # no worker holds them: cancelled at once
        body = await ended(http, stack, task_id, "cancelled")
        assert body["error"] == named, body
        assert "pendingApproval" not in body
    for task_id in (parent, at_worker):  # their worker stopped them on the cancel request
        body = await ended(http, stack, task_id, "cancelled")
        assert body["error"] == "stopped on request", body
    assert sorted(fake.cancels) == sorted([parent, at_worker])


async def test_a_cancel_request_over_nats_cancels_the_task_and_its_children(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    fake = await approvals_stack(stack, "fc-2")
    parent = await submit(http, stack)
    await fake.stop_for_approval(await fake.assignment(parent, 1))
    await waiting(http, stack, parent)
    child = await submit(http, stack, parentTaskId=parent)
    await running(fake, child)
    request = TaskCancelRequested(task_id=parent, reason="the orchestrator gave up waiting")
    await (
        (await stack.nats())
        .jetstream()
        .publish(
            subjects.task_cancel_request(parent),
            request.to_json(),
            headers={MSG_ID_HEADER: cancel_request_msg_id(parent)},
        )
    )
    body = await ended(http, stack, parent, "cancelled")
    assert body["error"] == "the orchestrator gave up waiting"
    await wait_for(lambda: child in fake.cancels, 10, "the child's worker to be told")
    marked = (await http.get(f"{stack.api}/api/tasks/{child}")).json()
    assert marked["metadata"]["cancelRequested"] is True
    await fake.report(fake.assigned[child][-1], TaskStatus.CANCELLED, error="stopped")
    await ended(http, stack, child, "cancelled")
    # a late child of the cancelled parent is cancelled as it comes: the submission's answer says so
    late_child = {"targetAgent": fake.agents[0], "parentTaskId": parent}
    resp = await http.post(f"{stack.api}/api/tasks", json=late_child)
    assert resp.status_code == 200, resp.text
    late = resp.json()
    assert late["status"] == "cancelled" and late["error"] == f"parent task {parent} was cancelled"
    assert late["taskId"] not in fake.assigned
