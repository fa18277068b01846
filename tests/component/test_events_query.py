"""The query API against a known data set: every filter, both paginations in both orders, the
422s, tasks and traces, metrics, memory tiers and topology. The events travel the real path
(JetStream → ingest → TimescaleDB) before they are queried."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from loom_protocol import CloudEvent

from tests.integration.events_support import (
    event,
    fresh_database,
    publish,
    start_pipeline,
    traceparent,
    wait_count,
)
from tests.integration.harness import AnyService, NatsServer, stack_of

pytestmark = pytest.mark.component

BASE = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
TRACE_A = "a" * 31 + "1"
TRACE_B = "b" * 31 + "2"


def at(ms: int) -> datetime:
    return BASE + timedelta(milliseconds=ms)


@dataclass
class Dataset:
    events: list[CloudEvent]

    def ids(self, predicate: Any = lambda e: True) -> list[str]:
        return [e.id for e in self.events if predicate(e)]


def build_dataset() -> Dataset:
    events: list[CloudEvent] = []
    tick = iter(range(0, 10_000_000, 1000))  # one event per second, in publication order

    def add(event_type: str, **kwargs: Any) -> None:
        events.append(event(event_type, time=at(next(tick)), **kwargs))

    # task qa-1 (agent alpha, trace A, session s1): submitted, 10 x (thought, call, result), completed
    ctx_a = {"task_id": "qa-1", "session_id": "s1", "traceparent": traceparent(TRACE_A)}
    add("task.submitted", source="/services/dispatcher", agent_id="alpha", subject="agent:alpha", **ctx_a)
    for i in range(10):
        worker = {"source": "/workers/w1/agents/alpha", "agent_id": "alpha", "instance_id": "w1", **ctx_a}
        add("agent.thought", data={"step": i}, extensions={"seq": 3 * i}, **worker)
        add("tool.call", data={"name": "calc"}, subject="tool:calc", extensions={"seq": 3 * i + 1}, **worker)
        add(
            "tool.result",
            data={"name": "calc", "duration_ms": 10.0 * (i + 1)},
            subject="tool:calc",
            extensions={"seq": 3 * i + 2},
            **worker,
        )
    add("task.completed", source="/services/dispatcher", agent_id="alpha", subject="agent:alpha", **ctx_a)

    # task qa-2: agent beta, trace B, session s2: 20 llm.usage with known tokens, cost and latency
    ctx_b = {"task_id": "qa-2", "session_id": "s2", "traceparent": traceparent(TRACE_B)}
    add("task.submitted", source="/services/dispatcher", agent_id="beta", subject="agent:beta", **ctx_b)
    for i in range(20):
        add(
            "llm.usage",
            source="/workers/w2/agents/beta",
            agent_id="beta",
            instance_id="w2",
            subject="llm:p/m",
            data={
                "input_tokens": 100 + i,
                "output_tokens": 10 + i,
                "cost_usd": 0.25,
                "latency_s": 0.1 * (i + 1),
                "model": "m",
            },
            extensions={"seq": i},
            **ctx_b,
        )
    add("task.failed", source="/services/dispatcher", agent_id="beta", subject="agent:beta", **ctx_b)

    # memory of agent gamma (instance w3, session s3): 2 session notes, 3 working notes, consolidation
    mem = {
        "source": "/workers/w3/agents/gamma",
        "agent_id": "gamma",
        "instance_id": "w3",
        "session_id": "s3",
        "task_id": "qa-3",
    }
    notes = [
        ("session", 0.9, "the user prefers metric units"),
        ("session", 0.2, "small talk"),
        ("working", 0.3, "obs 1"),
        ("working", 0.3, "obs 2"),
        ("working", 0.3, "obs 3"),
    ]
    for n, (tier, importance, content) in enumerate(notes):
        entry = {
            "entry_id": f"m{n}",
            "node_id": "gamma",
            "tier": tier,
            "content": content,
            "importance": importance,
            "metadata": {"role": "note"},
            "created_at": at(n).isoformat(),
            "role": "note",
        }
        add("memory.add", data=entry, **mem)
    add(
        "memory.consolidate",
        data={"promoted": 1, "dropped_working": 1, "session": 1, "working": 2, "long_term": 1},
        **mem,
    )
    return Dataset(events)


DATA = build_dataset()
TOTAL = len(DATA.events)


@pytest.fixture(scope="module")
async def api(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AnyService]:
    """One stack for the module: the tests only read the data set."""
    async with (
        fresh_database() as database_url,
        stack_of(nats_server, tmp_path_factory.mktemp("query-api")) as stack,
    ):
        _, query = await start_pipeline(stack, database_url)
        nc = await stack.nats()
        await publish(nc.jetstream(), DATA.events)
        await wait_count(database_url, "SELECT count(*) FROM events", TOTAL, 30)
        yield query


async def _events(http: httpx.AsyncClient, query: AnyService, **params: Any) -> dict[str, Any]:
    resp = await http.get(f"{query.url}/api/events", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["count"] == len(body["events"])
    return body


async def _walk(http: httpx.AsyncClient, query: AnyService, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await _events(http, query, **params, **({"cursor": cursor} if cursor else {}))
        ids += [e["id"] for e in page["events"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return ids


async def test_filters_return_exactly_the_matching_events(api: AnyService, http: httpx.AsyncClient) -> None:
    newest_first = list(reversed(DATA.ids()))
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, newest_first),
        ({"trace_id": TRACE_A}, DATA.ids(lambda e: e.traceid == TRACE_A)),
        ({"node_id": "alpha"}, DATA.ids(lambda e: e.agentid == "alpha")),
        ({"node_id": "agent:beta"}, DATA.ids(lambda e: e.agentid == "beta")),
        ({"event_type": "tool.call"}, DATA.ids(lambda e: e.type == "tool.call")),
        ({"event_type": "tool.*"}, DATA.ids(lambda e: e.type.startswith("tool."))),
        ({"event_type": "task.*"}, DATA.ids(lambda e: e.type.startswith("task."))),
        ({"task_id": "qa-2"}, DATA.ids(lambda e: e.taskid == "qa-2")),
        ({"session_id": "s3"}, DATA.ids(lambda e: e.sessionid == "s3")),
        ({"subject": "tool:calc"}, DATA.ids(lambda e: e.subject == "tool:calc")),
        (
            {"task_id": "qa-1", "event_type": "agent.thought"},
            DATA.ids(lambda e: e.taskid == "qa-1" and e.type == "agent.thought"),
        ),
        (
            {"start_time": at(5000).isoformat(), "end_time": at(9000).isoformat()},
            DATA.ids(lambda e: at(5000) <= e.time <= at(9000)),
        ),
        ({"start_time": at(40_000).timestamp()}, DATA.ids(lambda e: e.time >= at(40_000))),
        ({"trace_id": "f" * 32}, []),
    ]
    for params, expected in cases:
        assert expected or params == {"trace_id": "f" * 32}
        body = await _events(http, api, limit=1000, **params)
        got = [e["id"] for e in body["events"]]
        assert sorted(got) == sorted(expected), params
        times = [e["time"] for e in body["events"]]
        assert times == sorted(times, reverse=True), f"{params}: not newest first"
        assert body["nextCursor"] is None


async def test_events_come_back_as_they_were_published(api: AnyService, http: httpx.AsyncClient) -> None:
    body = await _events(http, api, task_id="qa-2", event_type="llm.usage", order="asc", limit=1)
    stored = body["events"][0]
    published = next(e for e in DATA.events if e.id == stored["id"])
    assert stored == published.model_dump(mode="json", exclude_none=True)
    assert stored["seq"] == 0 and stored["data"]["input_tokens"] == 100


async def test_cursor_and_offset_pagination_in_both_orders(api: AnyService, http: httpx.AsyncClient) -> None:
    everything = DATA.ids()
    assert await _walk(http, api, limit=7) == list(reversed(everything))
    assert await _walk(http, api, limit=7, order="asc") == everything
    assert await _walk(http, api, limit=4, order="asc", node_id="alpha") == DATA.ids(
        lambda e: e.agentid == "alpha"
    )
    by_offset: list[str] = []
    for offset in range(0, TOTAL, 9):
        by_offset += [
            e["id"] for e in (await _events(http, api, limit=9, offset=offset, order="asc"))["events"]
        ]
    assert by_offset == everything
    last = await _events(http, api, limit=5, offset=TOTAL - 5)
    assert last["count"] == 5 and last["nextCursor"] is None
    assert (await _events(http, api, limit=5, offset=TOTAL))["events"] == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": 1001}, "less than or equal to 1000"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"offset": -1}, "greater than or equal to 0"),
        ({"order": "sideways"}, "'asc' or 'desc'"),
        ({"kind": "everything"}, "'event'"),
        ({"cursor": "not-a-cursor"}, "cursor is not valid"),
        ({"start_time": "yesterday"}, "datetime"),
        ({"start_time": "2030-01-02T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"}, "is after end_time"),
    ],
    ids=[
        "limit-over-1000",
        "limit-zero",
        "negative-offset",
        "bad-order",
        "bad-kind",
        "bad-cursor",
        "bad-time",
        "reversed-range",
    ],
)
async def test_bad_parameters_get_422_with_the_reason(
    api: AnyService, http: httpx.AsyncClient, params: dict[str, Any], reason: str
) -> None:
    resp = await http.get(f"{api.url}/api/events", params=params)
    assert resp.status_code == 422, resp.text
    assert reason in resp.text


async def test_a_cursor_works_only_in_its_own_order(api: AnyService, http: httpx.AsyncClient) -> None:
    page = await _events(http, api, limit=3)
    resp = await http.get(
        f"{api.url}/api/events", params={"limit": 3, "order": "asc", "cursor": page["nextCursor"]}
    )
    assert resp.status_code == 422 and "order=desc" in resp.text
    resp = await http.get(f"{api.url}/api/events", params={"offset": 3, "cursor": page["nextCursor"]})
    assert resp.status_code == 422 and "either offset or cursor" in resp.text


async def test_task_and_trace_endpoints(api: AnyService, http: httpx.AsyncClient) -> None:
    task = (await http.get(f"{api.url}/api/tasks/qa-1")).json()
    assert [e["id"] for e in task["events"]] == DATA.ids(lambda e: e.taskid == "qa-1")
    assert task["task"] is None  # no task messages were published for it, only events
    seqs = [e["seq"] for e in task["events"] if "seq" in e]
    assert seqs == list(range(30))
    missing = await http.get(f"{api.url}/api/tasks/no-such-task")
    assert missing.status_code == 404 and "no-such-task" in missing.json()["error"]["message"]

    trace = (await http.get(f"{api.url}/api/traces/{TRACE_B}")).json()
    assert [e["id"] for e in trace["events"]] == DATA.ids(lambda e: e.traceid == TRACE_B)
    paged = (await http.get(f"{api.url}/api/traces/{TRACE_B}", params={"limit": 5})).json()
    assert paged["count"] == 5 and paged["nextCursor"]
    rest = (await http.get(f"{api.url}/api/traces/{TRACE_B}", params={"cursor": paged["nextCursor"]})).json()
    assert [e["id"] for e in paged["events"] + rest["events"]] == [e["id"] for e in trace["events"]]
    unknown = await http.get(f"{api.url}/api/traces/{'c' * 32}")
    assert unknown.status_code == 404 and "no trace" in unknown.json()["error"]["message"]


async def test_metrics_sum_tokens_cost_tasks_and_latency(api: AnyService, http: httpx.AsyncClient) -> None:
    params = {"start_time": (BASE - timedelta(minutes=1)).isoformat(), "bucket": "1h"}
    body = (await http.get(f"{api.url}/api/metrics", params=params)).json()
    totals = {t["agent"]: t for t in body["totals"]}
    beta = totals["beta"]
    assert beta["llmCalls"] == 20
    assert beta["inputTokens"] == sum(100 + i for i in range(20))
    assert beta["outputTokens"] == sum(10 + i for i in range(20))
    assert beta["costUsd"] == pytest.approx(5.0)
    assert beta["tasks"] == {"completed": 0, "failed": 1, "cancelled": 0, "dead": 0}
    llm_p50 = statistics.median(0.1 * (i + 1) for i in range(20))
    assert beta["latencyS"]["llm"]["p50"] == pytest.approx(llm_p50, rel=0.12)
    assert beta["latencyS"]["llm"]["p99"] == pytest.approx(2.0, rel=0.12)
    alpha = totals["alpha"]
    assert alpha["tasks"]["completed"] == 1
    assert alpha["latencyS"]["task"]["mean"] == pytest.approx(31.0)  # submitted -> completed: 31 events apart
    assert alpha["latencyS"]["task"]["p50"] == pytest.approx(31.0, rel=0.07)
    assert alpha["latencyS"]["tool"]["p50"] == pytest.approx(0.055, rel=0.12)
    assert sum(s["events"] for s in body["series"]) == TOTAL

    by_action = (
        await http.get(f"{api.url}/api/metrics", params={**params, "group_by": "agent,action"})
    ).json()
    rows = {(t["agent"], t["action"]): t for t in by_action["totals"]}
    assert rows[("beta", "llm:p/m")]["inputTokens"] == beta["inputTokens"]
    assert rows[("alpha", "tool:calc")]["events"] == 20
    bad = await http.get(f"{api.url}/api/metrics", params={"bucket": "7s"})
    assert bad.status_code == 422 and "bucket" in bad.text


async def test_memory_is_rebuilt_by_tier(api: AnyService, http: httpx.AsyncClient) -> None:
    body = (await http.get(f"{api.url}/api/memory/gamma")).json()
    tiers = {tier: [m["content"] for m in entries] for tier, entries in body["tiers"].items()}
    assert tiers == {
        "session": ["small talk"],
        "working": ["obs 2", "obs 3"],
        "long_term": ["the user prefers metric units"],
    }
    assert body["tiers"]["long_term"][0]["importance"] == 0.9
    assert body["sessions"] == [
        {"session_id": "s3", "instances": ["w3"], "entries": 4, "consolidations": 1, "consistent": True}
    ]
    assert (await http.get(f"{api.url}/api/memory/agent:gamma")).json()["tiers"] == body["tiers"]
    nobody = (await http.get(f"{api.url}/api/memory/nobody")).json()
    assert nobody["counts"] == {"session": 0, "working": 0, "long_term": 0}


async def test_topology_from_subjects(api: AnyService, http: httpx.AsyncClient) -> None:
    params = {"start_time": (BASE - timedelta(minutes=1)).isoformat()}
    body = (await http.get(f"{api.url}/api/topology", params=params)).json()
    edges = {(e["from"], e["to"]): e["count"] for e in body["edges"]}
    assert edges == {("agent:alpha", "tool:calc"): 20, ("agent:beta", "llm:p/m"): 20}
    nodes = {n["id"]: n for n in body["nodes"]}
    assert set(nodes) == {"agent:alpha", "agent:beta", "agent:gamma", "tool:calc", "llm:p/m"}
    assert nodes["tool:calc"]["type"] == "tool" and nodes["tool:calc"]["callsIn"] == 20
    assert nodes["agent:alpha"]["events"] == len(DATA.ids(lambda e: e.agentid == "alpha"))
    traced = (await http.get(f"{api.url}/api/topology", params={"trace_id": TRACE_B})).json()
    assert [(e["from"], e["to"]) for e in traced["edges"]] == [("agent:beta", "llm:p/m")]


async def test_openapi_documents_the_api(api: AnyService, http: httpx.AsyncClient) -> None:
    spec = (await http.get(f"{api.url}/openapi.json")).json()
    for path in (
        "/api/events",
        "/api/topology",
        "/api/memory/{node_id}",
        "/api/metrics",
        "/api/tasks/{task_id}",
    ):
        assert path in spec["paths"], path
    assert (await http.get(f"{api.url}/docs")).status_code == 200
