"""Raw ceilings of the machine, measured in the same run: what Loom could at most reach.

* JetStream ``publish_async`` throughput and pull ``fetch`` + ``ack`` throughput, on a
  temporary file-backed stream (its own subjects, deleted in ``finally``);
* TimescaleDB ``COPY`` rows/s (``asyncpg.copy_records_to_table``) into a temporary table
  shaped like the ``events`` table's main columns (dropped with the session): the database's
  speed with nothing in the way (no write-ahead log, one index);
* the same ``COPY`` into a table made like ``events`` itself (``LIKE events INCLUDING ALL``: its
  columns, defaults and indexes; logged; a hypertable of day chunks without TimescaleDB's own
  time index when ``events`` is one, as ingest's migration makes it), dropped in ``finally``:
  the database's speed for the rows ingest writes, where they go.
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


async def _copy_for(conn: asyncpg.Connection, table: str, seconds: float, batch: int) -> dict[str, Any]:
    rows = copy_records(batch)
    total = 0
    start = time.perf_counter()
    stop = start + seconds
    round_no = 0
    while time.perf_counter() < stop:
        # fresh ids each round so that the primary key holds (cheap: a prefix per round)
        tag = f"r{round_no}-"
        fresh = [(r[0], tag + r[1], *r[2:]) for r in rows]
        await conn.copy_records_to_table(table, records=fresh, columns=_COPY_COLUMNS)
        total += len(fresh)
        round_no += 1
    elapsed = time.perf_counter() - start
    return {"rows": total, "seconds": round(elapsed, 3), "rate": round(total / elapsed, 1), "batch": batch}


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
        out = await _copy_for(conn, "loomload_copy", seconds, batch)
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        server = await conn.fetchval("SHOW server_version")
        await conn.execute("DROP TABLE loomload_copy")
    finally:
        await conn.close()
    return {**out, "postgres": server, "timescaledb": version}


async def copy_events_ceiling(database_url: str, seconds: float, batch: int = 5000) -> dict[str, Any]:
    """COPY batches of ``batch`` rows for ``seconds`` into a new table made like ``events`` (a
    hypertable when ``events`` is one), named for this run and dropped in ``finally``."""
    conn = await asyncpg.connect(database_url, timeout=10)
    table = f"loomload_events_{uuid.uuid4().hex[:12]}"
    try:
        if await conn.fetchval("SELECT to_regclass('events')") is None:
            return {"na": "table events does not exist (ingest not deployed yet?)"}
        hyper = await conn.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ) and await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'events'"
        )
        await conn.execute(f"CREATE TABLE {table} (LIKE events INCLUDING ALL)")
        if hyper:  # as ingest's migration makes events: day chunks, no index of TimescaleDB's own
            await conn.execute(
                "SELECT create_hypertable($1::regclass, by_range('time', INTERVAL '1 day'), "
                "create_default_indexes => false)",
                table,
            )
        indexes = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = $1", table)
        out = await _copy_for(conn, table, seconds, batch)
    finally:
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await conn.close()
    return {**out, "hypertable": bool(hyper), "indexes": indexes}
