"""Writing decoded batches to TimescaleDB: one transaction per batch, idempotent.

Events are COPYed into a per-connection temporary staging table, then moved with
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``; the same statement rolls the rows it really
inserted up into ``event_metrics_1m``. Task updates (one upsert per task and batch: a task's
updates in one batch are folded first, :mod:`loom_ingest.task_fold`) and dead letters go in the
same transaction. The caller acks the messages only after :meth:`EventWriter.write` returned.

A batch the database refuses because of its content (a data error: a NUL in a string, an
over-long key...) is split in halves until the offending messages are isolated; those become
dead letters carrying the database's reason, and the rest is written. Any other error
(connection lost, database down) propagates: the caller keeps the batch and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from loom_protocol import TERMINAL_TASK_EVENT_TYPES

from .errors import is_data_error
from .rows import DEAD_LETTER_COLUMNS, EVENT_COLUMNS, TASK_COLUMNS, Decoded, Incoming, TaskRow, dead_letter
from .task_fold import fold

log = logging.getLogger(__name__)

STAGING = "events_staging"
STAGING_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGING} (
    LIKE events INCLUDING DEFAULTS,
    raw jsonb NOT NULL
) ON COMMIT DELETE ROWS;
ALTER TABLE {STAGING} DROP COLUMN IF EXISTS data, DROP COLUMN IF EXISTS attributes;
"""

_TYPED = [c for c in EVENT_COLUMNS if c != "raw"]
_COLS = ", ".join([*_TYPED, "data", "attributes"])
# the stored event = its JSON without data (null attributes dropped, as CloudEvents treats them
# as absent), plus what ingest derived: traceid from traceparent, time from JetStream
_FROM_RAW = """
    nullif(raw -> 'data', 'null'::jsonb),
    jsonb_strip_nulls(raw - 'data')
        || CASE WHEN trace_id IS NULL OR raw ? 'traceid' THEN '{}'::jsonb
                ELSE jsonb_build_object('traceid', trace_id) END
        || CASE WHEN raw ? 'time' AND raw -> 'time' <> 'null'::jsonb THEN '{}'::jsonb
                ELSE jsonb_build_object('time', time) END
"""

# Task latency: a terminal task.* event gets the time since the task's task.submitted event
# (in this batch or already stored), so the rollup can give task latency percentiles.
_TASK_LATENCY = f"""
UPDATE {STAGING} s
SET latency_s = greatest(extract(epoch FROM s.time - sub.submitted), 0)
FROM (
    SELECT task_id, min(time) AS submitted FROM (
        SELECT task_id, time FROM {STAGING}
        WHERE kind = 'event' AND type = 'task.submitted' AND task_id = ANY($1::text[])
        UNION ALL
        SELECT task_id, time FROM events
        WHERE kind = 'event' AND type = 'task.submitted' AND task_id = ANY($1::text[])
    ) AS candidates
    GROUP BY task_id
) AS sub
WHERE s.task_id = sub.task_id AND s.kind = 'event'
  AND s.type IN ('task.completed', 'task.failed', 'task.cancelled', 'task.dead')
"""  # noqa: S608 (built from constants only)

_INSERT_EVENTS = f"""
WITH ins AS (
    INSERT INTO events ({_COLS})
    SELECT {", ".join(_TYPED)}, {_FROM_RAW} FROM {STAGING}
    ON CONFLICT DO NOTHING
    RETURNING time, kind, node_id, type, subject, input_tokens, output_tokens, cost_usd, latency_s
), agg AS (
    SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
           node_id AS agent,
           type,
           coalesce(subject, '') AS action,
           count(*) AS events,
           coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens,
           coalesce(sum(cost_usd), 0) AS cost_usd,
           count(latency_s) AS latency_count,
           coalesce(sum(latency_s), 0) AS latency_sum,
           max(latency_s) AS latency_max,
           histogram(log(greatest(latency_s, 1e-9)), loom_hist_lo(), loom_hist_hi(), loom_hist_buckets())
               FILTER (WHERE latency_s IS NOT NULL) AS latency_hist
    FROM ins
    WHERE kind = 'event'
    GROUP BY 1, 2, 3, 4
), rollup AS (
    INSERT INTO event_metrics_1m AS m
        (bucket, agent, type, action, events, input_tokens, output_tokens, cost_usd,
         latency_count, latency_sum, latency_max, latency_hist)
    SELECT * FROM agg ORDER BY bucket, agent, type, action
    ON CONFLICT (bucket, agent, type, action) DO UPDATE SET
        events = m.events + EXCLUDED.events,
        input_tokens = m.input_tokens + EXCLUDED.input_tokens,
        output_tokens = m.output_tokens + EXCLUDED.output_tokens,
        cost_usd = m.cost_usd + EXCLUDED.cost_usd,
        latency_count = m.latency_count + EXCLUDED.latency_count,
        latency_sum = m.latency_sum + EXCLUDED.latency_sum,
        latency_max = greatest(m.latency_max, EXCLUDED.latency_max),
        latency_hist = loom_hist_add(m.latency_hist, EXCLUDED.latency_hist)
    RETURNING 1
)
SELECT count(*) FROM ins
"""  # noqa: S608 (built from constants only)

_WINS = (
    "loom_task_wins(t.final, t.status, t.updated_at, EXCLUDED.final, EXCLUDED.status, EXCLUDED.updated_at)"
)
_TASK_TYPES = {
    "final": "boolean",
    "attempt": "integer",
    **dict.fromkeys(("parameters", "result", "metadata", "pending_approval", "approvals"), "jsonb"),
    **dict.fromkeys(("created_at", "updated_at", "cancel_requested_at"), "timestamptz"),
}
"""The ``tasks`` columns that are not text (the set-based upsert names each column's type)."""

_TASKS_CONFLICT = f"""
ON CONFLICT (task_id) DO UPDATE SET
    target_agent = coalesce(t.target_agent, EXCLUDED.target_agent),
    source_agent = coalesce(t.source_agent, EXCLUDED.source_agent),
    action = coalesce(t.action, EXCLUDED.action),
    parent_task_id = coalesce(t.parent_task_id, EXCLUDED.parent_task_id),
    session_id = coalesce(t.session_id, EXCLUDED.session_id),
    trace_id = coalesce(t.trace_id, EXCLUDED.trace_id),
    parameters = coalesce(t.parameters, EXCLUDED.parameters),
    metadata = coalesce(EXCLUDED.metadata, t.metadata),
    created_at = least(t.created_at, EXCLUDED.created_at),
    cancel_requested_at = coalesce(t.cancel_requested_at, EXCLUDED.cancel_requested_at),
    status = CASE WHEN {_WINS} THEN EXCLUDED.status ELSE t.status END,
    final = t.final OR ({_WINS} AND EXCLUDED.final),
    attempt = CASE WHEN {_WINS} THEN coalesce(EXCLUDED.attempt, t.attempt) ELSE t.attempt END,
    instance_id = CASE WHEN {_WINS} THEN coalesce(EXCLUDED.instance_id, t.instance_id) ELSE t.instance_id END,
    result = CASE WHEN {_WINS} THEN EXCLUDED.result ELSE t.result END,
    error = CASE WHEN {_WINS} THEN EXCLUDED.error ELSE t.error END,
    pending_approval = CASE WHEN {_WINS} THEN EXCLUDED.pending_approval ELSE t.pending_approval END,
    approvals = CASE WHEN t.approvals IS NULL
                       OR jsonb_array_length(EXCLUDED.approvals) >= jsonb_array_length(t.approvals)
                     THEN coalesce(EXCLUDED.approvals, t.approvals) ELSE t.approvals END,
    finished_at = CASE WHEN {_WINS} AND loom_is_terminal(EXCLUDED.status) THEN EXCLUDED.updated_at
                       ELSE t.finished_at END,
    updated_at = CASE WHEN {_WINS} THEN EXCLUDED.updated_at ELSE t.updated_at END
"""

_UPSERT_TASK = f"""
INSERT INTO tasks AS t ({", ".join(TASK_COLUMNS)}, finished_at)
VALUES ({", ".join(f"${i}" for i in range(1, len(TASK_COLUMNS) + 1))},
        CASE WHEN loom_is_terminal($5::text) THEN $17::timestamptz END)
{_TASKS_CONFLICT}"""  # noqa: S608 (built from constants only)

# The same upsert for many tasks in one statement (one executor start instead of one per row: the
# conflict clause's expressions were most of the database's CPU per task row). One row per task:
# a statement may not update the same row twice. Each column comes as an array of its type.
_UPSERT_TASKS = f"""
INSERT INTO tasks AS t ({", ".join(TASK_COLUMNS)}, finished_at)
SELECT u.*, CASE WHEN loom_is_terminal(u.status) THEN u.updated_at END
FROM unnest({", ".join(f"${i}::{_TASK_TYPES.get(c, 'text')}[]" for i, c in enumerate(TASK_COLUMNS, 1))})
    AS u({", ".join(TASK_COLUMNS)})
{_TASKS_CONFLICT}"""  # noqa: S608 (built from constants only)

# The text task search looks in, rewritten for the tasks whose message carried some (parameters,
# a result, an error) and only when it changed, so that the trigram index is not touched by
# status changes that carry no text.
_UPSERT_TASK_TEXT = """
INSERT INTO task_text AS x (task_id, search_text)
SELECT task_id, loom_task_text(parameters, result, error) FROM tasks WHERE task_id = ANY($1::text[])
ON CONFLICT (task_id) DO UPDATE SET search_text = EXCLUDED.search_text
WHERE x.search_text IS DISTINCT FROM EXCLUDED.search_text
"""
_TEXT_COLUMNS = [TASK_COLUMNS.index(c) for c in ("parameters", "result", "error")]

_INSERT_DEAD = f"""
INSERT INTO dead_letters ({", ".join(DEAD_LETTER_COLUMNS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(DEAD_LETTER_COLUMNS) + 1))})
ON CONFLICT DO NOTHING
"""  # noqa: S608 (built from constants only)

Item = tuple[Incoming, Decoded]


@dataclass
class WriteResult:
    events: int = 0  # rows inserted into events
    duplicates: int = 0  # event rows already there (redeliveries)
    tasks: int = 0  # task updates applied
    dead_letters: list[tuple[str, str]] = field(default_factory=list)  # (rejected_by, reason) of new rows
    split: int = 0  # messages dead-lettered because the database refused them

    def add(self, other: WriteResult) -> None:
        self.events += other.events
        self.duplicates += other.duplicates
        self.tasks += other.tasks
        self.dead_letters.extend(other.dead_letters)
        self.split += other.split


async def upsert_tasks(conn: asyncpg.Connection | PoolConnectionProxy, rows: Sequence[TaskRow]) -> None:
    """Apply task rows in their order: each task's first row in one set-based statement, then
    the rows of tasks that have more than one (a batch whose rows could not be folded), one by
    one. Same result as upserting every row in order: rows of different tasks commute."""
    firsts: list[TaskRow] = []
    later: list[TaskRow] = []
    seen: set[str] = set()
    for row in rows:
        (later if row[0] in seen else firsts).append(row)
        seen.add(row[0])
    if firsts:
        await conn.execute(_UPSERT_TASKS, *(list(column) for column in zip(*firsts, strict=True)))
    if later:
        await conn.executemany(_UPSERT_TASK, later)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init``: every connection gets its staging table."""
    await conn.execute(STAGING_DDL)


class EventWriter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def write(self, items: Sequence[Item]) -> WriteResult:
        """Write a batch durably; raises on transient errors (nothing is then committed)."""
        if not items:
            return WriteResult()
        try:
            return await self._write_once(items)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(items) == 1:
                inc, _ = items[0]
                reason = f"the database refused it: {type(exc).__name__}: {exc}"
                log.warning("dead-lettering a message the database refused", extra={"subject": inc.subject})
                result = await self._write_once([(inc, Decoded(dead=dead_letter(inc, reason)))])
                result.split += 1
                return result
            middle = len(items) // 2
            result = await self.write(items[:middle])
            result.add(await self.write(items[middle:]))
            return result

    async def _write_once(self, items: Sequence[Item]) -> WriteResult:
        events = [d.event for _, d in items if d.event is not None]
        tasks = [d.task for _, d in items if d.task is not None]
        dead = [d.dead for _, d in items if d.dead is not None]
        result = WriteResult()
        async with self._pool.acquire() as conn, conn.transaction():
            if events:
                await conn.copy_records_to_table(STAGING, records=events, columns=EVENT_COLUMNS)
                terminal = [
                    row[7]
                    for row in events
                    if row[2] == "event" and row[3] in TERMINAL_TASK_EVENT_TYPES and row[7]
                ]
                if terminal:
                    await conn.execute(_TASK_LATENCY, terminal)
                inserted = await conn.fetchval(_INSERT_EVENTS)
                result.events = int(inserted)
                result.duplicates = len(events) - result.events
            if tasks:
                await upsert_tasks(conn, fold(tasks))  # a task's rows of the batch as one
                result.tasks = len(tasks)
                with_text = sorted({r[0] for r in tasks if any(r[i] is not None for i in _TEXT_COLUMNS)})
                if with_text:
                    await conn.execute(_UPSERT_TASK_TEXT, with_text)
            for row in dead:
                status = await conn.execute(_INSERT_DEAD, *row)
                if status.endswith(" 1"):
                    result.dead_letters.append((row[7], row[4]))
        return result
