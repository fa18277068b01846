"""Ingest as processes: killed with kill -9 mid-stream and two replicas sharing the durable
consumers, with every event stored exactly once (invariant 3); a WebSocket frame over the size
limit. (The rest of the event pipeline runs in process: tests/component/test_events_pipeline.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest
from loom_ingest.migrate import SCHEMA_VERSION
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    event,
    fetchval,
    metric_value,
    publish,
    start_ingest,
    wait_count,
)
from .harness import Stack, process, wait_for

pytestmark = pytest.mark.integration

_EVENT_ROWS = "SELECT count(*) FROM events WHERE kind = 'event'"


async def test_ingest_killed_mid_stream_loses_and_duplicates_nothing(database_url: str, stack: Stack) -> None:
    ingest = process(await start_ingest(stack, database_url, process=True, LOOM_BATCH_SIZE="100"))
    nc = await stack.nats()
    js = nc.jetstream()
    total = 8000
    events = [event(data={"i": i}, task_id=f"kill-{i % 40}", agent_id="killer") for i in range(total)]
    published = 0
    killed = asyncio.Event()

    async def publisher() -> None:
        # the second half goes out only after the kill, so the kill always lands mid-stream
        # (however fast this machine publishes) and publishing goes on while ingest is down
        nonlocal published
        for start in range(0, total, 50):
            if start == total // 2:
                await asyncio.wait_for(killed.wait(), 60)
            published += await publish(js, events[start : start + 50])

    pub = asyncio.create_task(publisher())
    try:
        await wait_for(lambda: _at_least(database_url, 1000), 30, "ingest to store the first 1000 events")
        assert not pub.done(), "the publisher finished before the kill: nothing was mid-stream"
        ingest.kill()
        killed.set()
        stored_at_kill = int(await fetchval(database_url, _EVENT_ROWS))
        await pub
    finally:
        pub.cancel()
    assert published == total
    assert stored_at_kill < total
    await ingest.restart()
    await wait_count(database_url, _EVENT_ROWS, total, 60)
    assert await fetchval(database_url, "SELECT count(DISTINCT id) FROM events") == total
    # the metrics rollup is maintained from the rows really inserted, so redeliveries do not inflate it
    assert await fetchval(database_url, "SELECT sum(events) FROM event_metrics_1m") == total
    print(f"\nkill -9 after {stored_at_kill} of {total} events stored; all {total} stored once after restart")


async def _at_least(url: str, n: int) -> bool:
    return int(await fetchval(url, _EVENT_ROWS)) >= n


async def test_two_ingest_replicas_share_the_work_once(database_url: str, stack: Stack) -> None:
    # processes: each replica's /metrics must count only its own rows
    first = await start_ingest(stack, database_url, "ingest-a", process=True)
    second = await start_ingest(stack, database_url, "ingest-b", process=True)  # same durable consumers
    nc = await stack.nats()
    total = 3000
    await publish(nc.jetstream(), [event(data={"i": i}, agent_id="pair") for i in range(total)])
    await wait_count(database_url, _EVENT_ROWS, total, 30)
    assert await fetchval(database_url, "SELECT count(DISTINCT id) FROM events") == total
    assert await fetchval(database_url, "SELECT count(*) FROM schema_migrations") == SCHEMA_VERSION
    written = [
        await metric_value(svc, "loom_ingest_rows_written_total", '{table="events"}')
        for svc in (first, second)
    ]
    assert sum(written) == total, written


async def test_a_ws_ingest_frame_over_the_body_limit_is_refused_and_ingest_stays_up(
    database_url: str, stack: Stack
) -> None:
    ingest = process(await start_ingest(stack, database_url, process=True, LOOM_HTTP_MAX_BODY_BYTES="65536"))
    pid = ingest.proc.pid if ingest.proc else None
    feed = ingest.url.replace("http://", "ws://") + "/ws/ingest"
    async with connect(feed, open_timeout=5, max_size=None) as ws:
        big = event(data={"pad": "x" * 100_000}).model_dump(mode="json", exclude_none=True)
        await ws.send(json.dumps({"type": "event_batch", "events": [big]}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    async with connect(feed, open_timeout=5) as ws:  # the next client is served
        small = event(data={"i": 1}).model_dump(mode="json", exclude_none=True)
        await ws.send(json.dumps({"type": "event_batch", "events": [small]}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["accepted"] == 1
    assert ingest.proc is not None and ingest.proc.pid == pid and ingest.alive
