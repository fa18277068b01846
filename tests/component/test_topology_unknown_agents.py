"""A name the registry never saw makes no topology node: a task published for ``calculater``
(refused and dead-lettered by the dispatcher), one that asked to wait for ``calculatr`` (dead for
want of an instance) and an orchestrator step naming ``calculater`` leave the real agents'
graph as it was, with the real agents in it."""

from __future__ import annotations

import httpx
import pytest
from loom_protocol import Task, TraceContext

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    fetchval,
    start_pipeline,
)
from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import Finals, submit_nats

pytestmark = pytest.mark.component

_DEAD = "SELECT count(*) FROM tasks WHERE task_id = ANY($1::text[]) AND status = 'dead' AND final"


async def test_unknown_agents_make_no_topology_node(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.registry()
    await stack.dispatcher(LOOM_NO_INSTANCE_TIMEOUT_S="1")
    await stack.worker("topo0")
    _, query = await start_pipeline(stack, database_url)
    await stack.wait_instances("orchestrator", 1)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)

    typo = Task(target_agent="calculater", parameters={"prompt": "2+2"}, trace=TraceContext.new())
    waiting = Task(target_agent="calculatr", parameters={"prompt": "2+2"}, metadata={"waitForAgent": True})
    real = Task(
        target_agent="orchestrator",
        trace=TraceContext.new(),
        parameters={
            "plan": [
                {"agent": "calculator", "parameters": {"prompt": "what is 6*7?"}},
                {"agent": "calculater", "parameters": {"prompt": "what is 6*7?"}},
            ],
            "tolerate_failures": True,
            "child_timeout_s": 20,
        },
    )
    for task in (typo, waiting, real):
        await submit_nats(nc, task)
    ids = [typo.task_id, waiting.task_id, real.task_id]
    await wait_for(lambda: finals.done(ids), 30, "the three tasks to end")
    assert [finals.by_task[t][-1].status for t in ids] == ["dead", "dead", "completed"]

    async def stored() -> bool:
        return bool(await fetchval(database_url, _DEAD, ids[:2]) == 2)

    await wait_for(stored, 20, "ingest to store both dead tasks")

    async def orchestrated() -> bool:
        body = (await http.get(f"{query.url}/api/topology")).json()
        edges = {(e["from"], e["to"]) for e in body["edges"]}
        return ("agent:calculator", "tool:calculator") in edges and (
            "agent:orchestrator",
            "agent:calculator",
        ) in edges

    await wait_for(orchestrated, 20, "the orchestrator's run in the topology")
    for params in ({}, {"trace_id": real.trace.trace_id}, {"trace_id": typo.trace.trace_id}):
        resp = await http.get(f"{query.url}/api/topology", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        names = {n["id"] for n in body["nodes"]} | {e["to"] for e in body["edges"]}
        assert not any("calculater" in n or "calculatr" in n for n in names), (params, names)
        if params.get("trace_id") == typo.trace.trace_id:
            assert body["nodes"] == [] and body["edges"] == []
        else:
            assert {"agent:orchestrator", "agent:calculator"} <= names, (params, names)
    # the refused task's rows are stored all the same, under its name
    assert await fetchval(database_url, "SELECT count(*) FROM events WHERE agent_id = 'calculater'") > 0
