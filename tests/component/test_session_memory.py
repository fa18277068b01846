"""Session memory follows the session (issue 12 item 7): two worker instances share it through
the JetStream key-value bucket, so the tasks of one session see each other's notes whichever
instance runs them, and the notes survive the instance that wrote them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from loom_agent_worker import Agent, TaskContext, completed
from loom_protocol import AgentCard, Task

from tests.integration.harness import Stack

pytestmark = pytest.mark.component


class NotesAgent(Agent):
    """Answers with the notes its session memory holds, then adds ``parameters.note``."""

    agent_card = AgentCard(agent_id="notes", name="Notes", description="Remembers what it is told.")

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        seen = [note.content for note in ctx.memory.notes()]  # session, working, long-term tiers
        ctx.note(str(task.parameters["note"]), importance=0.9)
        return completed(task, {"seen": seen})


async def _run(
    http: httpx.AsyncClient, api: str, session: str, agent: str, **parameters: Any
) -> dict[str, Any]:
    resp = await http.post(
        f"{api}/api/tasks",
        params={"wait": 20},
        json={"targetAgent": agent, "sessionId": session, "parameters": parameters},
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == "completed", body
    return body


async def test_the_next_task_of_a_session_sees_the_notes_on_another_instance(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    agents = f"calculator,{__name__}:NotesAgent"
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("m0", agents)
    await stack.worker("m1", agents)
    await stack.wait_instances("notes", 2)
    session = f"s-mem-{uuid.uuid4().hex[:8]}"

    # a real agent's notes: the calculator's tool observations
    calc = await _run(http, stack.api, session, "calculator", prompt="what is (2+3)*4?")
    first = await _run(http, stack.api, session, "notes", note="the user likes tea")
    observations = [n for n in first["result"]["seen"] if n.startswith("calculator(")]
    assert observations, (calc["instanceId"], first)

    # tasks until one runs on the other instance (round-robin: the next or the one after, unless
    # its heartbeat, every 0.2 s here, was late on a loaded machine and it sat out a few picks)
    written = ["the user likes tea"]
    deadline = time.monotonic() + 20
    n = 0
    while True:
        second = await _run(http, stack.api, session, "notes", note=f"note {n}")
        if second["instanceId"] != first["instanceId"] or time.monotonic() > deadline:
            break
        written.append(f"note {n}")
        n += 1
    assert {first["instanceId"], second["instanceId"]} == {"m0", "m1"}
    # it sees every note written on the other instance, in the order written
    assert sorted(second["result"]["seen"]) == sorted([*first["result"]["seen"], *written])
    session_tier = [n for n in second["result"]["seen"] if n in written]
    assert session_tier == written
    written.append(f"note {n}")

    # the instance that wrote last stops; the other still has everything
    await stack.workers[second["instanceId"]].stop()
    await stack.wait_instances("notes", 1)
    third = await _run(http, stack.api, session, "notes", note="done")
    assert third["instanceId"] == first["instanceId"]
    assert {*written, *observations} <= set(third["result"]["seen"])

    # another session starts empty
    other = await _run(http, stack.api, f"{session}-other", "notes", note="x")
    assert other["result"]["seen"] == []
