"""Migrations, the batch writer and retention against a real TimescaleDB (a fresh database per
test; `make test` starts the TimescaleDB at LOOM_DATABASE_URL's server)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from loom_ingest.errors import MigrationError
from loom_ingest.maintenance import RetentionPolicy, apply_retention
from loom_ingest.migrate import load_migrations, migrate
from loom_ingest.rows import TASK_COLUMNS, Incoming, decode
from loom_ingest.store import _UPSERT_TASK, SESSION_SETTINGS, EventWriter, keep_session, write_rows
from loom_ingest.task_fold import fold
from loom_protocol import (
    ApprovalDecision,
    ApprovalRequest,
    Task,
    TaskStatus,
    TaskStatusChanged,
    new_event,
)

BASE_URL = os.environ.get("LOOM_DATABASE_URL", "postgresql://postgres@127.0.0.1:5433/loom")


def _url(name: str) -> str:
    p = urlsplit(BASE_URL)
    return urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, p.fragment))


@pytest.fixture
async def db() -> AsyncIterator[str]:
    name = f"loomtest_{uuid.uuid4().hex[:12]}"
    # `make test` starts TimescaleDB first: an unreachable database is a failure, not a skip
    admin = await asyncpg.connect(_url("postgres"), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(db)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        db, min_size=1, max_size=2, reset=keep_session, server_settings=SESSION_SETTINGS
    )
    try:
        yield pool
    finally:
        await pool.close()


async def test_migrations_apply_once_even_when_two_replicas_race(db: str) -> None:
    first, second = await asyncpg.connect(db), await asyncpg.connect(db)
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(len(a) for a in applied) == [0, len(load_migrations())]
        assert await migrate(first) == []
        rows = await first.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in load_migrations()]
        assert await first.fetchval("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'")
        changed = [
            dataclasses.replace(m, sql=m.sql + "\n-- edited") if m.version == 2 else m
            for m in load_migrations()
        ]
        with pytest.raises(MigrationError, match="0002_dead_letters.sql was changed"):
            await migrate(first, changed)
    finally:
        await first.close()
        await second.close()


NOW = datetime.now(UTC).replace(microsecond=0)


def item(subject: str, body: bytes, seq: int, stream: str = "LOOM_EVENTS") -> tuple[Incoming, Any]:
    inc = Incoming(stream=stream, subject=subject, data=body, stream_seq=seq, timestamp=NOW)
    return inc, decode(inc, 1 << 20)


def usage(i: int) -> tuple[Incoming, Any]:
    e = new_event(
        "llm.usage",
        "/w",
        agent_id="calc",
        subject="llm:m",
        time=NOW - timedelta(seconds=i),
        data={"input_tokens": 10, "output_tokens": 1, "cost_usd": 0.5, "latency_s": 0.2},
    )
    return item("loom.event.worker.w1.llm.usage", e.to_json(), i)


async def test_a_batch_written_twice_is_stored_and_rolled_up_once(pool: asyncpg.Pool) -> None:
    store = EventWriter(pool)
    batch = [usage(i) for i in range(50)]
    first = await store.write(batch)
    again = await store.write(batch)
    assert (first.events, first.duplicates) == (50, 0)
    assert (again.events, again.duplicates) == (0, 50)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 50
        rollup = await conn.fetchrow(
            "SELECT sum(events) AS n, sum(input_tokens) AS tokens, sum(cost_usd) AS cost, "
            "loom_hist_quantile(loom_hist_sum(latency_hist), 0.5) AS p50 FROM event_metrics_1m"
        )
    assert (rollup["n"], rollup["tokens"], rollup["cost"]) == (50, 500, 25.0)
    assert rollup["p50"] == pytest.approx(0.2, rel=0.12)


async def test_the_stored_event_is_the_published_one_plus_what_ingest_derived(pool: asyncpg.Pool) -> None:
    full = new_event("x", "/w", data={"k": [1, None]}, traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    raw = json.dumps(
        {
            "id": "bare",
            "source": "/w",
            "specversion": "1.0",
            "type": "x",
            "traceparent": full.traceparent,
            "ext": None,
        }
    ).encode()
    await EventWriter(pool).write(
        [item("loom.event.worker.w1.x", full.to_json(), 1), item("loom.event.worker.w1.x", raw, 2)]
    )
    async with pool.acquire() as conn:
        rows = {
            r["id"]: (json.loads(r["attributes"]), r["data"])
            for r in await conn.fetch("SELECT id, attributes::text, data::text FROM events")
        }
    attributes, data = rows[full.id]
    assert {**attributes, "data": json.loads(data)} == full.model_dump(mode="json", exclude_none=True)
    attributes, data = rows["bare"]
    assert data is None
    assert attributes["traceid"] == "ab" * 16  # derived from traceparent, as the model does
    assert "ext" not in attributes  # a null attribute is an absent one
    assert datetime.fromisoformat(attributes["time"]) == NOW  # JetStream's time stands in


async def test_a_poison_row_is_dead_lettered_and_its_batch_mates_are_kept(pool: asyncpg.Pool) -> None:
    poison = new_event("x", "/w", data={"t": "\u0000"})
    batch = (
        [usage(i) for i in range(10)]
        + [item("loom.event.worker.w1.x", poison.to_json(), 99)]
        + [usage(i) for i in range(10, 20)]
    )
    result = await EventWriter(pool).write(batch)
    assert result.events == 20 and result.split == 1
    async with pool.acquire() as conn:
        dead = await conn.fetchrow("SELECT subject, reason, raw, stream_seq FROM dead_letters")
    assert dead["subject"] == "loom.event.worker.w1.x" and dead["stream_seq"] == 99
    assert dead["reason"].startswith("the database refused it")
    assert bytes(dead["raw"]) == poison.to_json()


def _status(task: Task, status: TaskStatus, at: datetime, *, final: bool = False, **kw: Any) -> bytes:
    change = TaskStatusChanged(
        task_id=task.task_id, target_agent=task.target_agent, status=status, at=at, **kw
    )
    return change.model_copy(update={"final": final}).to_json()


async def test_task_state_keeps_the_newest_and_the_final_word(pool: asyncpg.Pool) -> None:
    store = EventWriter(pool)
    task = Task(task_id="tk-1", target_agent="calc", parameters={"a": 1})
    t0 = task.created_at
    await store.write([item("loom.task.cancel.tk-1", b'{"taskId": "tk-1"}', 1, "LOOM_TASKS")])
    await store.write(
        [
            item("loom.task.submitted.calc", task.to_json(), 2, "LOOM_TASKS"),
            item(
                "loom.task.status.tk-1",
                _status(task, TaskStatus.COMPLETED, t0 + timedelta(seconds=3), result=1),
                3,
                "LOOM_TASKS",
            ),
            item(
                "loom.task.status.tk-1",
                _status(task, TaskStatus.RUNNING, t0 + timedelta(seconds=1)),
                4,
                "LOOM_TASKS",
            ),
        ]
    )
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 'tk-1'")
        assert (row["status"], row["final"], row["result"]) == ("completed", False, "1")
        assert row["parameters"] == '{"a": 1}' and row["cancel_requested_at"] is not None
        assert row["finished_at"] == t0 + timedelta(seconds=3)
        # the dispatcher's final word replaces a worker's terminal report, and nothing replaces it
        final = _status(task, TaskStatus.FAILED, t0 + timedelta(seconds=2), final=True, error="timed out")
        later = _status(task, TaskStatus.COMPLETED, t0 + timedelta(seconds=9), result=2)
        await store.write([item("loom.task.status.tk-1", final, 5, "LOOM_TASKS")])
        await store.write([item("loom.task.status.tk-1", later, 6, "LOOM_TASKS")])
        row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 'tk-1'")
        assert (row["status"], row["final"], row["error"], row["result"]) == (
            "failed",
            True,
            "timed out",
            None,
        )
        assert await conn.fetchval("SELECT count(*) FROM events WHERE kind = 'task'") == 6


async def test_the_projection_follows_an_approval_and_dates_every_task(pool: asyncpg.Pool) -> None:
    store = EventWriter(pool)
    created = NOW - timedelta(seconds=10)
    task = Task(task_id="ap-1", target_agent="calc", created_at=created, updated_at=created)
    request = ApprovalRequest(key="1.0", tool="shell", requested_at=NOW)
    waiting = TaskStatusChanged(
        task_id="ap-1",
        target_agent="calc",
        status=TaskStatus.INPUT_REQUIRED,
        at=NOW - timedelta(seconds=5),
        approval=request,
    ).to_json()
    # the status arrives first: the task is dated by it until its submission moves the date back
    await store.write([item("loom.task.status.ap-1", waiting, 1, "LOOM_TASKS")])
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 'ap-1'")
        assert (row["status"], row["created_at"]) == ("input_required", NOW - timedelta(seconds=5))
        assert json.loads(row["pending_approval"])["tool"] == "shell"
        await store.write([item("loom.task.submitted.calc", task.to_json(), 2, "LOOM_TASKS")])
        row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 'ap-1'")
        assert row["status"] == "input_required" and row["created_at"] == NOW - timedelta(seconds=10)
        assert row["pending_approval"] is not None and row["approvals"] == "[]"
        decided = task.model_copy(
            update={
                "approvals": [ApprovalDecision(key="1.0", tool="shell", approved=True)],
                "status": TaskStatus.DISPATCHED,
                "updated_at": NOW - timedelta(seconds=1),
                "attempt": 2,
            }
        )
        pending = TaskStatusChanged(
            task_id="ap-1", target_agent="calc", status=TaskStatus.PENDING, at=NOW - timedelta(seconds=2)
        ).to_json()
        # the newer assignment first, then the older "pending": neither the status nor the decisions go back
        await store.write([item("loom.task.assigned.w-1", decided.to_json(), 3, "LOOM_TASKS")])
        await store.write([item("loom.task.status.ap-1", pending, 4, "LOOM_TASKS")])
        row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 'ap-1'")
        assert (row["status"], row["attempt"], row["pending_approval"]) == ("dispatched", 2, None)
        assert [d["approved"] for d in json.loads(row["approvals"])] == [True]
        stale = task.model_copy(update={"updated_at": NOW - timedelta(seconds=3)})
        await store.write([item("loom.task.assigned.w-1", stale.to_json(), 5, "LOOM_TASKS")])
        assert json.loads(await conn.fetchval("SELECT approvals FROM tasks WHERE task_id = 'ap-1'")) != []
        # a cancel request for a task not seen yet is dated too (created_at is never null)
        await store.write([item("loom.task.cancel.ap-2", b'{"taskId": "ap-2"}', 6, "LOOM_TASKS")])
        assert await conn.fetchval("SELECT created_at IS NOT NULL FROM tasks WHERE task_id = 'ap-2'")


async def test_the_search_text_is_rewritten_only_when_it_changes(pool: asyncpg.Pool) -> None:
    store = EventWriter(pool)
    task = Task(task_id="tx-1", target_agent="calc", parameters={"prompt": "Weather in PARIS"})
    text_sql = "SELECT search_text, xmin::text AS version FROM task_text WHERE task_id = 'tx-1'"

    def status(s: TaskStatus, seconds: int, **kw: Any) -> bytes:
        return TaskStatusChanged(
            task_id="tx-1", target_agent="calc", status=s, at=NOW + timedelta(seconds=seconds), **kw
        ).to_json()

    await store.write([item("loom.task.submitted.calc", task.to_json(), 1, "LOOM_TASKS")])
    async with pool.acquire() as conn:
        first = await conn.fetchrow(text_sql)
        assert first["search_text"] == '{"prompt": "weather in paris"}  '
        await store.write([item("loom.task.status.tx-1", status(TaskStatus.RUNNING, 1), 2, "LOOM_TASKS")])
        assert await conn.fetchrow(text_sql) == first  # no text in the message: the row is not touched
        done = status(TaskStatus.COMPLETED, 2, result={"answer": "Sunny"}, final=True)
        await store.write([item("loom.task.status.tx-1", done, 3, "LOOM_TASKS")])
        after = await conn.fetchrow(text_sql)
        assert after["search_text"] == '{"prompt": "weather in paris"} {"answer": "sunny"} '
        assert after["version"] != first["version"]
        await conn.execute("DELETE FROM tasks WHERE task_id = 'tx-1'")  # as retention does
        assert await conn.fetchval("SELECT count(*) FROM task_text") == 0


async def test_terminal_task_events_get_their_latency_across_batches(pool: asyncpg.Pool) -> None:
    store = EventWriter(pool)
    submitted = new_event(
        "task.submitted", "/d", task_id="lat-1", agent_id="calc", time=NOW - timedelta(seconds=40)
    )
    completed = new_event(
        "task.completed", "/d", task_id="lat-1", agent_id="calc", time=NOW - timedelta(seconds=10)
    )
    same_batch = [
        new_event("task.submitted", "/d", task_id="lat-2", agent_id="calc", time=NOW - timedelta(seconds=5)),
        new_event("task.failed", "/d", task_id="lat-2", agent_id="calc", time=NOW - timedelta(seconds=3)),
    ]
    await store.write([item("loom.event.dispatcher.task.submitted", submitted.to_json(), 1)])
    await store.write([item("loom.event.dispatcher.task.completed", completed.to_json(), 2)])
    await store.write(
        [item(f"loom.event.dispatcher.{e.type}", e.to_json(), 3 + i) for i, e in enumerate(same_batch)]
    )
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT task_id, type, latency_s FROM events ORDER BY task_id, time")
        hist = await conn.fetchval(
            "SELECT loom_hist_quantile(loom_hist_sum(latency_hist), 1.0) FROM event_metrics_1m "
            "WHERE type = 'task.completed'"
        )
    assert [(r["task_id"], r["type"], r["latency_s"]) for r in rows] == [
        ("lat-1", "task.submitted", None),
        ("lat-1", "task.completed", 30.0),
        ("lat-2", "task.submitted", None),
        ("lat-2", "task.failed", 2.0),
    ]
    assert hist == pytest.approx(30.0, rel=0.12)


@pytest.mark.usefixtures("pool")  # the schema
async def test_a_submission_in_a_chunk_created_after_the_plan_is_found(db: str) -> None:
    """The batch statement's plan is kept per connection (a generic plan): a chunk the
    hypertable gains after it was planned is still searched for a terminal event's submission."""
    one = await asyncpg.create_pool(
        db, min_size=1, max_size=1, reset=keep_session, server_settings=SESSION_SETTINGS
    )
    try:
        store = EventWriter(one)
        await store.write([usage(1)])  # planned now
        async with one.acquire() as conn:
            planned_with = await conn.fetchval("SELECT count(*) FROM show_chunks('events')")
        later = NOW + timedelta(days=3)
        submitted = new_event("task.submitted", "/d", task_id="chunk-1", agent_id="calc", time=later)
        completed = new_event(
            "task.completed", "/d", task_id="chunk-1", agent_id="calc", time=later + timedelta(seconds=5)
        )
        await store.write([item("loom.event.dispatcher.task.submitted", submitted.to_json(), 2)])
        await store.write([item("loom.event.dispatcher.task.completed", completed.to_json(), 3)])
        async with one.acquire() as conn:
            chunks = await conn.fetchval("SELECT count(*) FROM show_chunks('events')")
            latency = await conn.fetchval("SELECT latency_s FROM events WHERE type = 'task.completed'")
    finally:
        await one.close()
    assert chunks == planned_with + 1  # the submission went into a chunk of its own
    assert latency == 5.0


async def test_retention_drops_what_is_older_than_the_policy(pool: asyncpg.Pool) -> None:
    store = EventWriter(pool)
    old = new_event("x", "/w", time=NOW - timedelta(days=10))
    new = new_event("x", "/w", time=NOW - timedelta(days=1))
    await store.write([item("loom.event.worker.w1.x", e.to_json(), i) for i, e in enumerate((old, new))])
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tasks (task_id, status, updated_at) VALUES "
            "('old', 'completed', now() - interval '9 days'), ('new', 'completed', now())"
        )
        policy = RetentionPolicy(retention_days=7, metrics_retention_days=30, compress_after_hours=24)
        async with pool.acquire() as other:
            await other.execute(
                "SELECT pg_advisory_lock($1)", int.from_bytes(b"loommain", "big") & (2**63 - 1)
            )
            assert await apply_retention(conn, policy) == {}  # another replica is at it
            await other.execute("SELECT pg_advisory_unlock_all()")
        dropped = await apply_retention(conn, policy)
        assert dropped["events"] >= 1 and dropped["tasks"] == 1
        assert [r["id"] for r in await conn.fetch("SELECT id FROM events")] == [new.id]
        assert [r["task_id"] for r in await conn.fetch("SELECT task_id FROM tasks")] == ["new"]


def _random_task_row(rng: random.Random, task_id: str, t0: datetime) -> tuple[Any, ...]:
    """A ``tasks`` row as ingest builds them, its fields drawn so that ties and gaps are common."""
    at = [t0 + timedelta(seconds=s) for s in range(4)]
    statuses = [None, "pending", "dispatched", "running", "input_required", "completed", "failed", "dead"]
    status = rng.choice(statuses)
    values = {
        "task_id": task_id,
        "target_agent": rng.choice([None, "calc", "echo"]),
        "source_agent": rng.choice([None, "user"]),
        "action": rng.choice([None, "execute"]),
        "status": status,
        "final": status is not None and rng.random() < 0.3,
        "attempt": rng.choice([None, 0, 1, 2]),
        "instance_id": rng.choice([None, "w-1", "w-2"]),
        "parent_task_id": rng.choice([None, "p-1"]),
        "session_id": rng.choice([None, "s-1", "s-2"]),
        "trace_id": rng.choice([None, "a" * 32]),
        "parameters": rng.choice([None, '{"x": 1}', '{"x": 2}']),
        "result": rng.choice([None, "1", '"two"']),
        "error": rng.choice([None, "boom"]),
        "metadata": rng.choice([None, "{}", '{"m": 1}']),
        "created_at": rng.choice(at),
        "updated_at": rng.choice(at),
        "cancel_requested_at": rng.choice([None, None, at[1]]),
        "pending_approval": rng.choice([None, '{"callId": "c-1"}']),
        "approvals": rng.choice([None, "[]", '[{"d": 1}]', '[{"d": 1}, {"d": 2}]', '[{"d": 3}]']),
    }
    return tuple(values[c] for c in TASK_COLUMNS)


async def test_a_batch_folded_per_task_leaves_the_rows_one_by_one_upserts_leave(pool: asyncpg.Pool) -> None:
    rng = random.Random(20261130)  # fixed: the same 400 cases every run
    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    folded_some = 0
    async with pool.acquire() as conn:
        for case in range(400):
            stored = [_random_task_row(rng, "", t0) for _ in range(rng.randrange(0, 3))]
            batch = [_random_task_row(rng, "", t0) for _ in range(rng.randrange(1, 6))]
            one_by_one, together = f"seq-{case}", f"fold-{case}"
            for task_id, rows in ((one_by_one, batch), (together, fold([(together, *r[1:]) for r in batch]))):
                for written in ([(task_id, *r[1:]) for r in stored], [(task_id, *r[1:]) for r in rows]):
                    if written:
                        await conn.executemany(_UPSERT_TASK, written)
            folded_some += len(fold(batch)) < len(batch)
            read = "SELECT to_jsonb(t) - 'task_id' FROM tasks t WHERE task_id = $1"
            want, got = await conn.fetchval(read, one_by_one), await conn.fetchval(read, together)
            assert got == want, f"case {case}: stored {stored}, batch {batch}"
    assert folded_some > 100  # the cases exercise the fold, not only its fallback


async def test_many_tasks_upserted_in_one_statement_leave_what_one_by_one_upserts_leave(
    pool: asyncpg.Pool,
) -> None:
    rng = random.Random(20261201)  # fixed: the same 300 cases every run
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    together: list[tuple[Any, ...]] = []  # every case's folded batch, written in one call
    async with pool.acquire() as conn:
        for case in range(300):
            stored = [_random_task_row(rng, "", t0) for _ in range(rng.randrange(0, 3))]
            batch = [_random_task_row(rng, "", t0) for _ in range(rng.randrange(1, 6))]
            for task_id in (f"one-{case}", f"set-{case}"):
                if stored:
                    await conn.executemany(_UPSERT_TASK, [(task_id, *r[1:]) for r in stored])
            await conn.executemany(_UPSERT_TASK, [(f"one-{case}", *r[1:]) for r in batch])
            together.extend(fold([(f"set-{case}", *r[1:]) for r in batch]))
        await write_rows(conn, [], together, [])
        read = "SELECT task_id, to_jsonb(t) - 'task_id' AS row FROM tasks t WHERE task_id LIKE $1"
        one = {r["task_id"][4:]: r["row"] for r in await conn.fetch(read, "one-%")}
        got = {r["task_id"][4:]: r["row"] for r in await conn.fetch(read, "set-%")}
    assert got == one
    # the cases exercise both halves: most tasks in the one statement, some with rows after it
    assert len({row[0] for row in together}) == 300 and len(together) > 310
