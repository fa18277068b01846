"""Pure parts of the query service: cursors, filters, the memory replay, the live fan-out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from loom_query.cursor import CursorError, decode_cursor, encode_cursor
from loom_query.live import Client, EventView, LiveFeed, LiveFilters
from loom_query.memory import MemoryEvent, node_memory, replay
from loom_query.store import EventFilter, Where, event_where, node_id_of, topology

WaitFor = Callable[..., Awaitable[None]]  # the wait_for fixture (services/conftest.py)


def test_cursors_round_trip_and_refuse_the_other_order() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    cursor = encode_cursor(at, "id-1", "desc")
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor, "desc") == (at, "id-1")
    with pytest.raises(CursorError, match="issued for order=desc"):
        decode_cursor(cursor, "asc")
    for bad in ("", "!!!", encode_cursor(at, "x", "asc")[:-3], "eyJ0IjoxfQ"):
        with pytest.raises(CursorError):
            decode_cursor(bad, "asc")


def test_where_clauses_are_parameterised() -> None:
    w = event_where(
        EventFilter(
            node_id="agent:calc", event_type="tool.*", trace_id="t", kinds=("event", "task", "member")
        )
    )
    assert w.sql() == "trace_id = $1 AND node_id = $2 AND type LIKE $3"
    assert w.args == ["t", "calc", "tool.%"]
    w = event_where(EventFilter(event_type="a_b.*", session_id="s"))
    assert w.args == [["event"], "s", "a\\_b.%"]
    assert node_id_of("agent:x") == "x" and node_id_of("tool:x") == "tool:x"


def mem(
    i: int, kind: str, data: dict[str, Any], *, node: str = "n", instance: str = "w1", session: str = "s"
) -> MemoryEvent:
    return MemoryEvent(f"e{i}", kind, f"2030-01-01T00:00:{i:02d}+00:00", node, instance, session, "t", data)


def note(i: int, tier: str, importance: float, *, node: str = "n", **kw: Any) -> MemoryEvent:
    data = {"entry_id": f"m{i}", "node_id": node, "tier": tier, "content": f"c{i}", "importance": importance}
    return mem(i, "memory.add", data, node=node, **kw)


class FakeTopologyConnection:
    """Answers the topology query with fixed rows and the "which ran" query from a set."""

    def __init__(self, rows: list[dict[str, Any]], ran: set[str]) -> None:
        self.rows, self.ran = rows, ran
        self.asked: list[list[str]] = []

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if "unnest" in sql:
            self.asked.append(list(args[0]))
            return [{"name": n} for n in args[0] if n in self.ran]
        return self.rows


async def test_topology_makes_no_node_of_an_agent_that_never_ran() -> None:
    def row(node: str, target: str | None, n: int) -> dict[str, Any]:
        node_type = "agent" if node.startswith("agent:") else "service"
        return {"node": node, "node_type": node_type, "target": target, "n": n}

    conn = FakeTopologyConnection(
        [
            row("agent:orchestrator", "agent:calculator", 2),
            row("agent:orchestrator", "agent:calculater", 1),  # a plan step naming a typo
            row("agent:orchestrator", None, 5),
            row("agent:calculator", "tool:calculator", 4),
            row("agent:calculater", None, 2),  # the dispatcher's events of a task left waiting
            row("/services/ingest", None, 1),
        ],
        ran={"orchestrator", "calculator"},
    )
    graph = await topology(conn, Where())  # type: ignore[arg-type]
    assert conn.asked == [["calculater", "calculator", "orchestrator"]]
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert set(nodes) == {"agent:orchestrator", "agent:calculator", "tool:calculator", "/services/ingest"}
    assert nodes["agent:orchestrator"]["events"] == 8  # the typo step's event still counts for its emitter
    assert nodes["agent:orchestrator"]["callsOut"] == 2
    assert [(e["from"], e["to"]) for e in graph["edges"]] == [
        ("agent:calculator", "tool:calculator"),
        ("agent:orchestrator", "agent:calculator"),
    ]
    empty = FakeTopologyConnection([row("/services/ingest", None, 1)], ran=set())
    assert (await topology(empty, Where()))["nodes"][0]["id"] == "/services/ingest"  # type: ignore[arg-type]
    assert empty.asked == []  # no agent names: nothing to ask


def test_one_session_written_by_two_instances_is_one_consistent_memory() -> None:
    # the memory is shared: a consolidation on w2 moves notes w1 added
    events = [
        note(1, "working", 0.3, instance="w1"),
        note(2, "session", 0.9, instance="w1"),
        mem(
            3,
            "memory.consolidate",
            {"promoted_ids": ["m2"], "dropped_ids": [], "session": 0, "working": 1, "long_term": 1},
            instance="w2",
        ),
    ]
    (memory,) = replay(events)
    assert memory.instances == ["w1", "w2"] and memory.consistent
    body = node_memory("n", [memory])
    assert body["counts"] == {"session": 0, "working": 1, "long_term": 1}
    assert body["sessions"] == [
        {"session_id": "s", "instances": ["w1", "w2"], "entries": 2, "consolidations": 1, "consistent": True}
    ]


def test_concurrent_tasks_of_a_session_report_their_own_sizes_and_stay_consistent() -> None:
    # two tasks loaded the same (empty) memory, each added and promoted its own note; the
    # merged memory holds both, while each consolidation reports the sizes of its own view
    own_view = {"dropped_ids": [], "session": 0, "working": 0, "long_term": 1}
    events = [
        note(1, "session", 0.9, instance="w1"),
        note(2, "session", 0.9, instance="w2"),
        mem(3, "memory.consolidate", {"promoted_ids": ["m1"], **own_view}, instance="w1"),
        mem(4, "memory.consolidate", {"promoted_ids": ["m2"], **own_view}, instance="w2"),
    ]
    (memory,) = replay(events)
    assert memory.consistent
    assert [e["content"] for e in memory.tiers["long_term"]] == ["c1", "c2"]


def test_count_only_consolidation_promotes_the_most_important_and_drops_old_working_notes() -> None:
    # memory.consolidate events stored before they carried ids
    events = [
        note(1, "session", 0.9),
        note(2, "session", 0.1),
        note(3, "session", 0.8, node="other"),
        note(4, "working", 0.3),
        note(5, "working", 0.3),
        note(6, "working", 0.3),
        mem(
            7,
            "memory.consolidate",
            {"promoted": 2, "dropped_working": 2, "session": 1, "working": 1, "long_term": 2},
        ),
        note(8, "session", 0.5, session="s2"),  # another session's memory is separate
    ]
    memories = replay(events)
    assert [(m.session_key, m.consistent) for m in memories] == [("s", True), ("s2", True)]
    body = node_memory("n", memories)
    contents = {tier: [e["content"] for e in entries] for tier, entries in body["tiers"].items()}
    assert contents == {"session": ["c2", "c8"], "working": ["c6"], "long_term": ["c1"]}
    assert body["tiers"]["long_term"][0]["tier"] == "long_term"
    assert body["counts"] == {"session": 2, "working": 1, "long_term": 1}
    assert node_memory("other", memories)["counts"]["long_term"] == 1


def test_consolidation_applies_the_ids_the_worker_moved_even_with_events_missing() -> None:
    consolidate = {
        "promoted_ids": ["m1", "m3"],
        "dropped_ids": ["m4"],
        "promoted": 2,
        "dropped_working": 1,
        "session": 1,
        "working": 1,
        "long_term": 2,
    }
    events = [
        note(1, "session", 0.9),
        note(2, "session", 0.1),
        note(3, "session", 0.2),  # below any threshold: promoted because the worker says so
        note(4, "working", 0.3),
        note(5, "working", 0.3),
        mem(6, "memory.consolidate", consolidate),
    ]
    (memory,) = replay(events)
    contents = {tier: [e["content"] for e in entries] for tier, entries in memory.tiers.items()}
    assert contents == {"session": ["c2"], "working": ["c5"], "long_term": ["c1", "c3"]}
    assert memory.consistent

    # the memory.add of m1 is lost: the rest is still placed exactly, and the view is flagged
    (partial,) = replay([e for e in events if e.data.get("entry_id") != "m1"])
    contents = {tier: [e["content"] for e in entries] for tier, entries in partial.tiers.items()}
    assert contents == {"session": ["c2"], "working": ["c5"], "long_term": ["c3"]}
    assert not partial.consistent


def test_a_replay_that_does_not_add_up_is_flagged() -> None:
    events = [note(1, "session", 0.9), mem(2, "memory.consolidate", {"promoted": 1, "long_term": 5})]
    assert [m.consistent for m in replay(events)] == [False]


def view(**kw: Any) -> EventView:
    return EventView.of({"type": "tool.call", "taskid": "t1", "agentid": "calc", "sessionid": "s", **kw})


def test_live_filters_match_all_given_fields() -> None:
    assert LiveFilters().matches(view())
    assert LiveFilters.model_validate({"event_type": "tool.*", "task_id": ["t0", "t1"]}).matches(view())
    assert not LiveFilters.model_validate({"event_type": "tool.result"}).matches(view())
    assert LiveFilters.model_validate({"node_id": "agent:calc"}).matches(view())
    assert not LiveFilters.model_validate({"session_id": "other"}).matches(view())
    traced = view(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    assert LiveFilters.model_validate({"trace_id": "ab" * 16}).matches(traced)
    with pytest.raises(ValueError):
        LiveFilters.model_validate({"unknown": "x"})


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(json.loads(text))


SUBJECT = "loom.event.worker.w1.x"


async def test_a_full_client_queue_drops_and_reports_the_count_before_the_next_frame(
    wait_for: WaitFor,
) -> None:
    socket = FakeSocket()
    client = Client(socket, queue_size=2)  # type: ignore[arg-type]
    feed = LiveFeed(queue_size=2)
    feed.clients.add(client)
    sender = asyncio.create_task(client.send_forever())
    try:
        await asyncio.sleep(0)
        feed.publish(SUBJECT, json.dumps({"id": "e0", "type": "x"}).encode())
        for _ in range(3):  # the sender takes e0 and blocks on the socket
            await asyncio.sleep(0)
        for i in range(1, 6):
            feed.publish(SUBJECT, json.dumps({"id": f"e{i}", "type": "x"}).encode())
        feed.publish(SUBJECT, b"not json")
        feed.publish(SUBJECT, b"[1]")
        feed.publish(SUBJECT, json.dumps({"id": "forged", "type": "x", "instanceid": "w2"}).encode())
        feed.publish("loom.event.x", json.dumps({"id": "no-sender", "type": "x"}).encode())
        assert client.dropped == 3  # one taken by the blocked sender, two queued
        socket.gate.set()
        await wait_for(lambda: len(socket.sent) >= 4, 5.0)
        assert [m.get("data", {}).get("id", m["type"]) for m in socket.sent] == ["e0", "dropped", "e1", "e2"]
        assert socket.sent[1] == {"type": "dropped", "count": 3}
        feed.publish(SUBJECT, json.dumps({"id": "e9", "type": "x"}).encode())
        await wait_for(lambda: len(socket.sent) >= 5, 5.0)
        assert socket.sent[4]["data"]["id"] == "e9"
    finally:
        sender.cancel()


def test_the_api_refuses_bad_parameters_in_the_one_error_shape_and_documents_camel_case() -> None:
    from fastapi.testclient import TestClient
    from loom_query.app import create_app

    client = TestClient(create_app())  # no lifespan: no NATS, no database
    both = client.get("/api/events", params={"offset": 3, "cursor": "x"})
    assert both.status_code == 422
    assert both.json()["error"]["fields"] == [
        {"field": "query.offset", "reason": "use either offset or cursor, not both"}
    ]
    no_db = client.get("/api/events")
    assert no_db.status_code == 503 and no_db.json()["error"]["code"] == "service_unavailable"
    no_export = client.get("/api/tasks/t1/events.jsonl")  # not a 200 with an empty file
    assert no_export.status_code == 503 and no_export.json()["error"]["code"] == "service_unavailable"
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "nextCursor" in schemas["EventsPage"]["properties"]
    assert {"callsIn", "callsOut", "nodeId"} <= set(schemas["TopologyNode"]["properties"])
    assert {"bucketSeconds", "startTime", "groupBy"} <= set(schemas["Metrics"]["properties"])
