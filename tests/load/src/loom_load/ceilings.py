"""Raw ceilings of the machine, measured in the same run: what Loom could at most reach.

* JetStream ``publish_async`` throughput and pull ``fetch`` + ``ack`` throughput, on a
  temporary file-backed stream (its own subjects, deleted in ``finally``);
* TimescaleDB ``COPY`` rows/s (``asyncpg.copy_records_to_table``) into a temporary table
  shaped like the ``events`` table's main columns (dropped with the session).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

PAYLOAD_BYTES = 300  # about the size of a Loom task CloudEvent


def _payload(size: int = PAYLOAD_BYTES) -> bytes:
    body = {"specversion": "1.0", "type": "bench.raw", "source": "/tests/load", "data": ""}
    pad = max(0, size - len(json.dumps(body)))
    body["data"] = "x" * pad
    return json.dumps(body).encode()


async def nats_ceilings(js: Any, seconds: float) -> dict[str, Any]:
    """Publish with ``publish_async`` for ``seconds``, then fetch+ack for at most ``seconds``."""
    token = uuid.uuid4().hex[:12]
    stream = f"LOOMLOAD_{token}"
    subject = f"loomload.{token}.raw"
    await js.add_stream(
        StreamConfig(name=stream, subjects=[f"loomload.{token}.>"], storage=StorageType.FILE, max_age=600)
    )
    out: dict[str, Any] = {"stream": stream, "payload_bytes": PAYLOAD_BYTES}
    try:
        payload = _payload()
        sent = 0
        start = time.perf_counter()
        stop = start + seconds
        while time.perf_counter() < stop:
            for _ in range(256):
                await js.publish_async(subject, payload)
            sent += 256
        await asyncio.wait_for(js.publish_async_completed(), timeout=30)
        elapsed = time.perf_counter() - start
        out["publish_async"] = {
            "messages": sent,
            "seconds": round(elapsed, 3),
            "rate": round(sent / elapsed, 1),
        }

        sub = await js.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1)
        )
        got = 0
        start = time.perf_counter()
        stop = start + seconds
        while got < sent and time.perf_counter() < stop:
            try:
                msgs = await sub.fetch(batch=512, timeout=1.0)
            except TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        elapsed = time.perf_counter() - start
        out["fetch_ack"] = {"messages": got, "seconds": round(elapsed, 3), "rate": round(got / elapsed, 1)}
        await sub.unsubscribe()
    finally:
        await js.delete_stream(stream)
    return out


_COPY_COLUMNS = (
    "time",
    "id",
    "kind",
    "type",
    "source",
    "subject",
    "task_id",
    "node_id",
    "seq",
    "data",
    "attributes",
)


def copy_records(n: int) -> list[tuple[Any, ...]]:
    """``n`` rows shaped like event rows (jsonb columns as JSON text)."""
    now = datetime.now(UTC)
    attributes = json.dumps({"specversion": "1.0", "type": "agent.thought", "source": "/tests/load"})
    rows = []
    for i in range(n):
        event_id = uuid.uuid4().hex
        data = json.dumps({"step": i % 10, "content": "thinking about the next step " * 2})
        rows.append(
            (
                now,
                event_id,
                "event",
                "agent.thought",
                "/tests/load",
                "bench",
                f"task-{i // 8}",
                "bench",
                i,
                data,
                attributes,
            )
        )
    return rows


async def copy_ceiling(database_url: str, seconds: float, batch: int = 5000) -> dict[str, Any]:
    """COPY batches of ``batch`` rows into a temporary table for ``seconds``."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute(
            """CREATE TEMP TABLE loomload_copy (
                   time timestamptz NOT NULL, id text NOT NULL, kind text NOT NULL, type text NOT NULL,
                   source text NOT NULL, subject text, task_id text, node_id text NOT NULL, seq bigint,
                   data jsonb, attributes jsonb NOT NULL, PRIMARY KEY (time, id)
               ) ON COMMIT PRESERVE ROWS"""
        )
        rows = copy_records(batch)
        total = 0
        start = time.perf_counter()
        stop = start + seconds
        round_no = 0
        while time.perf_counter() < stop:
            # fresh ids each round so that the primary key holds (cheap: a prefix per round)
            tag = f"r{round_no}-"
            fresh = [(r[0], tag + r[1], *r[2:]) for r in rows]
            await conn.copy_records_to_table("loomload_copy", records=fresh, columns=_COPY_COLUMNS)
            total += len(fresh)
            round_no += 1
        elapsed = time.perf_counter() - start
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        server = await conn.fetchval("SHOW server_version")
        await conn.execute("DROP TABLE loomload_copy")
    finally:
        await conn.close()
    return {
        "rows": total,
        "seconds": round(elapsed, 3),
        "rate": round(total / elapsed, 1),
        "batch": batch,
        "postgres": server,
        "timescaledb": version,
    }
