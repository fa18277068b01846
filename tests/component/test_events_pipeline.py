"""The event pipeline end to end, in process: workers and dispatcher → JetStream → ingest →
TimescaleDB, read back through the query service; ingest riding out a database outage, a deleted
consumer and a late database with every event stored exactly once (invariant 3)."""

from __future__ import annotations

import collections
from typing import Any

import httpx
import pytest

from tests.integration.events_support import (
    ADMIN_URL,
    FAST_INGEST,
    EventListener,
    connect,
    database_name,
    database_url_fixture,  # noqa: F401 (fixture)
    event,
    fetch,
    fetchval,
    is_ready,
    metric_value,
    publish,
    start_ingest,
    start_pipeline,
    start_query,
    wait_count,
)
from tests.integration.harness import AnyService, Stack, local, wait_for

pytestmark = pytest.mark.component

_EVENT_ROWS = "SELECT count(*) FROM events WHERE kind = 'event'"


async def _stream_messages(nc: Any, stream: str) -> int:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages)


async def test_task_events_are_stored_once_in_causal_order(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    nc = await stack.nats()
    listener = EventListener()
    await listener.attach(nc)
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("ev0")
    await stack.worker("ev1")
    await start_ingest(stack, database_url)
    query = await start_query(stack, database_url)
    await stack.wait_instances("calculator", 2)
    await stack.wait_instances("orchestrator", 2)

    submitted: list[dict[str, Any]] = []
    for i in range(6):
        resp = await http.post(
            f"{stack.api}/api/tasks",
            params={"wait": 20},
            json={"targetAgent": "calculator", "parameters": {"prompt": f"what is {i}*7?"}},
        )
        assert resp.status_code == 200, resp.text
        submitted.append(resp.json())
    for i in range(2):
        resp = await http.post(
            f"{stack.api}/api/tasks",
            params={"wait": 30},
            json={
                "targetAgent": "orchestrator",
                "sessionId": f"s-ev-{i}",
                "parameters": {"prompt": "what is 6*7; say hello"},
            },
        )
        assert resp.status_code == 200, resp.text
        submitted.append(resp.json())
    assert {t["status"] for t in submitted} == {"completed"}, submitted
    children = [
        c["task_id"] for t in submitted if t["targetAgent"] == "orchestrator" for c in t["result"]["children"]
    ]
    task_ids = [str(t["taskId"]) for t in submitted] + children

    # every event JetStream accepted is in the database, once
    async def settled() -> bool:
        stored = int(await fetchval(database_url, _EVENT_ROWS))
        in_stream = await _stream_messages(nc, "LOOM_EVENTS")
        return stored == in_stream == len(set(listener.ids)) > 0

    await wait_for(settled, 30, "ingest to store every published event")
    assert len(listener.ids) == len(set(listener.ids)), "a producer published an event id twice"
    rows = await fetch(database_url, "SELECT id FROM events WHERE kind = 'event'")
    assert sorted(r["id"] for r in rows) == sorted(listener.ids)
    assert await fetchval(database_url, "SELECT count(DISTINCT (time, id)) FROM events") == await fetchval(
        database_url, "SELECT count(*) FROM events"
    )

    # causal order per task: the worker's seq has no gap and follows time; dispatcher events bracket it
    targets = {
        r["task_id"]: r["target_agent"]
        for r in await fetch(
            database_url, "SELECT task_id, target_agent FROM tasks WHERE task_id = ANY($1)", task_ids
        )
    }
    assert set(targets) == set(task_ids)
    for task_id in task_ids:
        events = await fetch(
            database_url,
            "SELECT type, source, instance_id, seq, time FROM events WHERE kind = 'event' AND task_id = $1 "
            "ORDER BY time, seq NULLS FIRST, id",
            task_id,
        )
        types = [e["type"] for e in events]
        assert types[0] == "task.submitted", (task_id, types)
        assert types[-1] == "task.completed", (task_id, types)
        runs: dict[str, list[int]] = collections.defaultdict(list)
        for e in events:
            if e["seq"] is not None:
                runs[e["instance_id"]].append(e["seq"])
        for instance, seqs in runs.items():
            assert seqs == list(range(len(seqs))), f"task {task_id} on {instance}: seq {seqs}"
        worker_types = {e["type"] for e in events if e["seq"] is not None}
        if targets[task_id] != "echo":  # echo answers without a single event of its own
            assert "agent.answer" in worker_types, (task_id, worker_types)
        body = (await http.get(f"{query.url}/api/tasks/{task_id}")).json()
        assert [e["type"] for e in body["events"]] == types
        assert body["task"]["status"] == "completed"
        assert body["task"]["final"] is True

    # the tasks table and the bus rows: one final completed status per task
    finals = await fetch(
        database_url,
        "SELECT task_id, status, final, result FROM tasks WHERE task_id = ANY($1::text[])",
        task_ids,
    )
    assert len(finals) == len(task_ids)
    assert {(r["status"], r["final"]) for r in finals} == {("completed", True)}
    statuses = await fetchval(
        database_url,
        "SELECT count(*) FROM events WHERE kind = 'task' AND type = 'loom.task.status.completed' "
        "AND id LIKE '%:final' AND task_id = ANY($1::text[])",
        task_ids,
    )
    assert statuses == len(task_ids)

    # topology of the orchestrator runs, and the memory they left
    topology = (await http.get(f"{query.url}/api/topology")).json()
    edges = {(e["from"], e["to"]): e["count"] for e in topology["edges"]}
    assert edges[("agent:orchestrator", "agent:calculator")] == 2
    assert edges[("agent:orchestrator", "agent:echo")] == 2
    assert edges[("agent:calculator", "tool:calculator")] >= 2 * 8  # action, call, result per step
    assert edges[("agent:calculator", "llm:scripted/scripted")] >= 2 * 8
    nodes = {n["id"]: n for n in topology["nodes"]}
    assert nodes["tool:calculator"]["type"] == "tool"
    assert nodes["llm:scripted/scripted"]["type"] == "llm"
    assert nodes["agent:orchestrator"]["nodeId"] == "orchestrator"
    assert all(e["from"] in nodes and e["to"] in nodes for e in topology["edges"])

    memory = (await http.get(f"{query.url}/api/memory/orchestrator")).json()
    assert memory["counts"]["long_term"] == 4, memory  # 2 runs x 2 child results, importance 0.8 >= 0.7
    assert all(m["importance"] == 0.8 and m["role"] == "child_result" for m in memory["tiers"]["long_term"])
    assert all(s["consistent"] for s in memory["sessions"]), memory["sessions"]
    calculator = (await http.get(f"{query.url}/api/memory/agent:calculator")).json()
    assert calculator["counts"]["working"] >= 8, calculator["counts"]  # one observation per tool call
    assert {m["tier"] for m in calculator["memory"]} == {"working"}


async def test_database_outage_keeps_events_in_jetstream_and_catches_up(
    database_url: str, stack: Stack
) -> None:
    ingest, query = await start_pipeline(stack, database_url)
    # the process's metrics registry is shared by every in-process ingest: count from here
    db_errors = await metric_value(ingest, "loom_ingest_db_errors_total", '{stream="LOOM_EVENTS"}')
    nc = await stack.nats()
    js = nc.jetstream()
    name = database_name(database_url)
    sent = 0

    async def send(n: int) -> None:
        nonlocal sent
        batch = [event(data={"n": sent + i}, agent_id="outage") for i in range(n)]
        sent += await publish(js, batch)

    async def kick_ingest_out() -> int:
        async with connect(ADMIN_URL) as admin:
            return int(
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
            )

    await send(300)
    await wait_count(database_url, _EVENT_ROWS, 300, 20)

    # connections killed while events flow: writes fail, are retried, nothing lost
    kicked = 0
    for _ in range(3):
        await send(200)
        kicked += await kick_ingest_out()  # 0 when the pool has not reconnected yet
    assert kicked >= 1
    await wait_count(database_url, _EVENT_ROWS, sent, 30)

    # a real outage: the database refuses every connection
    async with connect(ADMIN_URL) as admin:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await kick_ingest_out()
        before = sent
        await send(1000)
        await wait_for(lambda: _status_is(ingest, 503), 15, "ingest /readyz to answer 503")
        consumer = await js.consumer_info("LOOM_EVENTS", "ingest-events")
        held = consumer.num_pending + consumer.num_ack_pending
        assert held >= sent - before, f"JetStream holds {held} messages, fewer than the {sent - before} sent"
        assert await metric_value(ingest, "loom_ingest_db_errors_total", '{stream="LOOM_EVENTS"}') > db_errors
        async with httpx.AsyncClient(timeout=5) as client:
            unavailable = await client.get(f"{query.url}/api/events")
        assert unavailable.status_code == 503 and "database unavailable" in unavailable.text
        await wait_for(lambda: _status_is(query, 503), 10, "query /readyz to answer 503")
    finally:
        async with connect(ADMIN_URL) as admin:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    await wait_for(lambda: _status_is(ingest, 200), 20, "ingest /readyz to recover")
    await wait_count(database_url, _EVENT_ROWS, sent, 60)
    assert await fetchval(database_url, "SELECT count(DISTINCT id) FROM events") == sent
    assert await fetchval(database_url, "SELECT sum(events) FROM event_metrics_1m") == sent
    await wait_for(lambda: _status_is(query, 200), 20, "query /readyz to recover")
    async with httpx.AsyncClient(timeout=5) as client:
        page = (
            await client.get(f"{query.url}/api/events", params={"node_id": "outage", "limit": 1000})
        ).json()
    assert page["count"] == 1000 and page["nextCursor"] is not None


async def _status_is(svc: AnyService, code: int) -> bool:
    return await is_ready(svc) == code


async def test_a_deleted_consumer_is_recreated_and_nothing_is_stored_twice(
    database_url: str, stack: Stack
) -> None:
    ingest = await start_ingest(stack, database_url)
    # the process's metrics registry is shared by every in-process ingest: count from here
    duplicates = await metric_value(ingest, "loom_ingest_duplicates_total")
    nc = await stack.nats()
    js = nc.jetstream()
    await publish(js, [event(data={"i": i}, agent_id="phoenix") for i in range(500)])
    await wait_count(database_url, _EVENT_ROWS, 500, 20)
    await js.delete_consumer("LOOM_EVENTS", "ingest-events")
    await publish(js, [event(data={"i": i}, agent_id="phoenix") for i in range(500, 800)])
    await wait_count(database_url, _EVENT_ROWS, 800, 30)
    # the new consumer starts from the stream's beginning: the first 500 come again and are absorbed
    await wait_for(
        lambda: _duplicates_at_least(ingest, duplicates + 500), 20, "the redelivered 500 to be skipped"
    )
    assert await fetchval(database_url, "SELECT count(DISTINCT id) FROM events") == 800
    info = await js.consumer_info("LOOM_EVENTS", "ingest-events")
    assert info.config.durable_name == "ingest-events"


async def _duplicates_at_least(svc: AnyService, n: float) -> bool:
    return await metric_value(svc, "loom_ingest_duplicates_total") >= n


async def test_ingest_started_before_the_database_waits_for_it(database_url: str, stack: Stack) -> None:
    name = database_name(database_url)
    async with connect(ADMIN_URL) as admin:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    ingest = local(
        stack.add("ingest-early", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST})
    )
    try:
        await ingest.start()

        async def waiting_for_database() -> bool:
            async with httpx.AsyncClient(timeout=3) as client:
                try:
                    health = await client.get(f"{ingest.url}/healthz")
                    ready = await client.get(f"{ingest.url}/readyz")
                except httpx.HTTPError:
                    return False
            return (
                health.status_code == 200 and ready.status_code == 503 and "startup" in ready.json()["reason"]
            )

        await wait_for(
            waiting_for_database, 20, "ingest to serve /healthz and report the database on /readyz"
        )
        nc = await stack.nats()
        await publish(nc.jetstream(), [event(data={"i": i}) for i in range(200)])
    finally:
        async with connect(ADMIN_URL) as admin:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    await ingest.ready(30)
    await wait_count(database_url, _EVENT_ROWS, 200, 30)
