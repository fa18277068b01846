"""``WS /ws/events``: live events of a submitted task with their emit → client latency, per-client
filters, and a slow client that neither slows a fast one nor goes unaware of what it missed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from loom_nats import flushed
from loom_protocol import subjects
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    metric_value,
    parse_time,
    start_pipeline,
    wait_count,
    ws_url,
)
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.component


async def _subscribe(ws: ClientConnection, filters: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"filters": filters}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply["type"] != "event":
            return dict(reply)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def test_live_events_of_submitted_tasks_arrive_in_milliseconds(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("live0", agents="calculator")
    _, query = await start_pipeline(stack, database_url)
    await stack.wait_instances("calculator", 1)
    task_ids = [f"live-{uuid.uuid4().hex[:12]}" for _ in range(16)]
    latencies: list[float] = []
    seen: dict[str, list[str]] = {t: [] for t in task_ids}

    async with connect(ws_url(query, "/ws/events")) as ws:
        reply = await _subscribe(ws, {"task_id": task_ids})
        assert reply == {"type": "subscribed", "filters": {"task_id": task_ids}}

        def finished(types: list[str]) -> bool:
            # the worker's last events and the dispatcher's task.completed travel separately
            return "task.completed" in types and "memory.consolidate" in types

        async def receive_until_done() -> None:
            while not all(finished(types) for types in seen.values()):
                frame = json.loads(await ws.recv())
                received = datetime.now(UTC)
                assert frame["type"] == "event", frame
                data = frame["data"]
                seen[data["taskid"]].append(data["type"])
                latencies.append((received - parse_time(data["time"])).total_seconds())

        receiver = asyncio.create_task(receive_until_done())  # reads while the tasks are submitted
        try:
            for task_id in task_ids:
                resp = await http.post(
                    f"{stack.api}/api/tasks",
                    json={
                        "taskId": task_id,
                        "targetAgent": "calculator",
                        "parameters": {"prompt": "what is 6*7?"},
                    },
                )
                assert resp.status_code == 202, resp.text
            await asyncio.wait_for(asyncio.shield(receiver), 60)
        finally:
            receiver.cancel()

    for task_id, types in seen.items():
        assert types[0] == "task.submitted", (task_id, types)
        missing = {"task.assigned", "llm.usage", "tool.call", "tool.result", "agent.answer"} - set(types)
        assert not missing, (task_id, missing, types)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    print(
        f"\nWS /ws/events emit->client latency over {len(latencies)} events: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert len(latencies) >= 150
    assert p50 < 0.1, f"p50 {p50:.3f}s: the live feed should deliver in well under 100 ms"


async def test_filters_are_per_connection_and_bad_ones_get_a_reason(database_url: str, stack: Stack) -> None:
    _, query = await start_pipeline(stack, database_url)
    nc = await stack.nats()
    async with connect(ws_url(query, "/ws/events")) as tools, connect(ws_url(query, "/ws/events")) as node:
        assert (await _subscribe(tools, {"event_type": "tool.*"}))["type"] == "subscribed"
        assert (await _subscribe(node, {"node_id": "agent:n1", "event_type": ["a.b", "c.d"]}))[
            "type"
        ] == "subscribed"
        for reply in [
            await _subscribe(node, {"colour": "red"}),
            await _subscribe(node, {"task_id": 7}),
            await _subscribe(node, {"task_id": []}),
        ]:
            assert reply["type"] == "error" and "invalid filters" in reply["reason"], reply
        await node.send("not json")
        assert json.loads(await node.recv())["type"] == "error"
        await node.send(json.dumps(["filters"]))
        assert "expected" in json.loads(await node.recv())["reason"]

        events = [
            {"type": "tool.call", "agentid": "n2", "i": 0},
            {"type": "a.b", "agentid": "n1", "i": 1},
            {"type": "tool.result", "agentid": "n1", "i": 2},
            {"type": "c.d", "agentid": "n1", "i": 3},
            {"type": "c.d", "agentid": "n2", "i": 4},
        ]
        for i, e in enumerate(events):
            body = {"id": f"f{i}", "source": "/t", "specversion": "1.0", **e}
            await nc.publish(subjects.service_event("ingest", e["type"]), json.dumps(body).encode())
        await nc.publish(
            subjects.service_event("ingest", "tool.end"),
            json.dumps({"id": "end", "source": "/t", "type": "tool.end"}).encode(),
        )

        async def received(ws: ClientConnection, last: str) -> list[int]:
            got: list[int] = []
            while True:
                data = json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]
                if data["id"] == last:
                    return got
                got.append(data["i"])

        assert await received(tools, last="end") == [0, 2]  # tool.end closes the tool.* stream
        await nc.publish(
            subjects.service_event("ingest", "c.d"),
            json.dumps({"id": "end2", "type": "c.d", "agentid": "n1"}).encode(),
        )
        assert await received(node, last="end2") == [1, 3]


async def test_a_slow_client_does_not_delay_a_fast_one_and_learns_what_it_missed(
    database_url: str, stack: Stack
) -> None:
    _, query = await start_pipeline(stack, database_url, LOOM_WS_QUEUE_SIZE="50")
    # the process's metrics registry is shared by every in-process query service: count from here
    clients = await metric_value(query, "loom_query_ws_clients")
    dropped_before = await metric_value(query, "loom_query_ws_dropped_total")
    nc = await stack.nats()
    total = 1500
    # incompressible payloads: the server compresses frames (permessage-deflate)
    payloads = [base64.b64encode(os.urandom(12 * 1024)).decode() for _ in range(total)]
    # the slow client reads nothing: a small fixed receive buffer keeps the kernel from absorbing
    # tens of MB for it (loopback autotuning allows 32 MB here), so the server's queue fills
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect(("127.0.0.1", query.port))
    async with (
        connect(ws_url(query, "/ws/events"), sock=sock, max_queue=1) as slow,
        connect(ws_url(query, "/ws/events"), max_queue=None) as fast,
    ):
        for ws in (slow, fast):
            assert (await _subscribe(ws, {"event_type": "load.test"}))["type"] == "subscribed"
        assert await metric_value(query, "loom_query_ws_clients") == clients + 2

        started = time.monotonic()
        for i in range(total):
            body = {
                "id": f"ld{i}",
                "source": "/load",
                "specversion": "1.0",
                "type": "load.test",
                "data": payloads[i],
            }
            await nc.publish(subjects.service_event("ingest", "load.test"), json.dumps(body).encode())
        await flushed(nc)

        async def fast_reads_all() -> list[str]:
            ids: list[str] = []
            while len(ids) < total:
                frame = json.loads(await fast.recv())
                assert frame["type"] == "event", f"the fast client was sent {frame}"
                ids.append(frame["data"]["id"])
            return ids

        ids = await asyncio.wait_for(fast_reads_all(), 60)
        fast_seconds = time.monotonic() - started
        assert ids == [f"ld{i}" for i in range(total)]

        # only now does the slow client read: what it got plus what it was told it missed is everything
        delivered, dropped, notices = 0, 0, 0

        async def slow_catches_up() -> None:
            nonlocal delivered, dropped, notices
            while delivered + dropped < total:
                frame = json.loads(await slow.recv())
                if frame["type"] == "dropped":
                    notices += 1
                    dropped += frame["count"]
                else:
                    delivered += 1

        await asyncio.wait_for(slow_catches_up(), 60)
    assert notices >= 1 and dropped > 0, "the slow client was never told it missed events"
    assert delivered + dropped == total
    assert await metric_value(query, "loom_query_ws_dropped_total") == dropped_before + dropped
    print(
        f"\nslow/fast WS clients: fast got all {total} 16 KiB events in {fast_seconds:.2f}s; "
        f"slow got {delivered} and {notices} dropped notice(s) for {dropped}"
    )


async def test_the_feed_hears_nats_only_while_a_client_is_connected(database_url: str, stack: Stack) -> None:
    """Nobody watching: query is not handed the stack's events (one wake-up per event saved)."""
    _, query = await start_pipeline(stack, database_url)
    nc = await stack.nats()
    clients = await metric_value(query, "loom_query_ws_clients")
    heard = "loom_query_live_events_total"
    run = uuid.uuid4().hex[:8]

    async def publish_stored(prefix: str, n: int) -> list[str]:
        """Publish n events and wait until ingest stored them: NATS has routed them by then."""
        ids = [f"{prefix}-{run}-{i}" for i in range(n)]
        for event_id in ids:
            body = {"id": event_id, "source": "/t", "specversion": "1.0", "type": "quiet.test"}
            await nc.publish(subjects.service_event("ingest", "quiet.test"), json.dumps(body).encode())
        await flushed(nc)
        await wait_count(database_url, "SELECT count(*) FROM events WHERE id = ANY($1)", n, 30, ids)
        return ids

    before = await metric_value(query, heard)
    await publish_stored("unwatched", 20)
    assert await metric_value(query, heard) == before, "events reached the feed with no client connected"

    async with connect(ws_url(query, "/ws/events")) as ws:
        assert (await _subscribe(ws, {"event_type": "quiet.test"}))["type"] == "subscribed"
        ids = await publish_stored("watched", 5)
        got = [json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["id"] for _ in ids]
        assert got == ids
        assert await metric_value(query, heard) >= before + 5

    async def left() -> bool:
        return await metric_value(query, "loom_query_ws_clients") == clients

    await wait_for(left, 10, "the client's departure")
    after = await metric_value(query, heard)
    await publish_stored("left", 20)
    assert await metric_value(query, heard) == after, "the feed kept listening after the last client left"
