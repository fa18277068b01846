"""Writing decoded batches to TimescaleDB: one statement (one transaction) per batch, idempotent.

A batch is one statement, :data:`_WRITE_BATCH`, its rows sent as one array per column: the
events go in with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, and the rows really inserted
are rolled up into ``event_metrics_1m``; the task updates (one upsert per task and batch: a
task's updates in one batch are folded first, :mod:`loom_ingest.task_fold`) and their search
text go in the same statement. A batch with dead letters, or with updates of one task that could
not be folded, is that statement and the rest in one transaction. The caller acks the messages
only after :meth:`EventWriter.write` returned.

A batch the database refuses because of its content (a data error: a NUL in a string, an
over-long key...) is split in halves until the offending messages are isolated; those become
dead letters carrying the database's reason, and the rest is written. Any other error
(connection lost, database down) propagates: the caller keeps the batch and retries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from loom_protocol import TERMINAL_TASK_EVENT_TYPES, EventType

from .errors import is_data_error
from .rows import (
    DEAD_LETTER_COLUMNS,
    EVENT_COLUMNS,
    TASK_COLUMNS,
    Decoded,
    EventRow,
    Incoming,
    TaskRow,
    dead_letter,
)
from .task_fold import fold

log = logging.getLogger(__name__)

_EVENT_TYPES = {
    "time": "timestamptz",
    **dict.fromkeys(("seq", "input_tokens", "output_tokens", "stream_seq"), "bigint"),
    **dict.fromkeys(("cost_usd", "latency_s"), "double precision"),
    "raw": "jsonb",
}
"""The event columns that are not text (a batch sends each column as an array of its type)."""

_TYPED = [c for c in EVENT_COLUMNS if c != "raw"]
_COLS = ", ".join([*_TYPED, "data", "attributes"])
_TERMINAL = ", ".join(f"'{t}'" for t in sorted(TERMINAL_TASK_EVENT_TYPES))
# the stored event = its JSON without data (null attributes dropped, as CloudEvents treats them
# as absent), plus what ingest derived: traceid from traceparent, time from JetStream
_FROM_RAW = """
    nullif(b.raw -> 'data', 'null'::jsonb),
    jsonb_strip_nulls(b.raw - 'data')
        || CASE WHEN b.trace_id IS NULL OR b.raw ? 'traceid' THEN '{}'::jsonb
                ELSE jsonb_build_object('traceid', b.trace_id) END
        || CASE WHEN b.raw ? 'time' AND b.raw -> 'time' <> 'null'::jsonb THEN '{}'::jsonb
                ELSE jsonb_build_object('time', b.time) END
"""
# Task latency: a terminal task.* event gets the time since the task's task.submitted event
# (in this batch or already stored), so the rollup can give task latency percentiles.
_LATENCY = f"""
    CASE WHEN s.submitted IS NOT NULL AND b.kind = 'event' AND b.type IN ({_TERMINAL})
         THEN greatest(extract(epoch FROM b.time - s.submitted), 0)
         ELSE b.latency_s END
"""


def _unnest(columns: Sequence[str], types: dict[str, str], first: int) -> str:
    """``unnest`` of one array parameter per column (``$first`` on), as rows named ``u``."""
    arrays = ", ".join(f"${i}::{types.get(c, 'text')}[]" for i, c in enumerate(columns, first))
    return f"unnest({arrays}) AS u({', '.join(columns)})"


_N_EVENT = len(EVENT_COLUMNS)
_EVENTS_CTE = f"""
batch AS (
    SELECT * FROM {_unnest(EVENT_COLUMNS, _EVENT_TYPES, 1)}
), submitted AS (
    SELECT task_id, min(time) AS submitted FROM (
        SELECT * FROM unnest(${_N_EVENT + 2}::text[], ${_N_EVENT + 3}::timestamptz[]) AS s(task_id, time)
        UNION ALL
        SELECT task_id, time FROM events
        WHERE kind = 'event' AND type = 'task.submitted' AND task_id = ANY(${_N_EVENT + 1}::text[])
    ) AS candidates
    GROUP BY task_id
), ins AS (
    INSERT INTO events ({_COLS})
    SELECT {", ".join(f"b.{c}" if c != "latency_s" else _LATENCY for c in _TYPED)}, {_FROM_RAW}
    FROM batch b LEFT JOIN submitted s ON s.task_id = b.task_id
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
)"""  # noqa: S608 (built from constants only)

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

# The tasks of a batch, one row per task (a statement may not update the same row twice), then the
# text task search looks in, rewritten for the tasks whose message carried some (parameters, a
# result, an error) and only when it changed, so that the trigram index is not touched by status
# changes that carry no text.
_TASKS_FROM = _N_EVENT + 4
_TEXT_IDS = _TASKS_FROM + len(TASK_COLUMNS)
_TASKS_CTE = f"""
up AS (
    INSERT INTO tasks AS t ({", ".join(TASK_COLUMNS)}, finished_at)
    SELECT u.*, CASE WHEN loom_is_terminal(u.status) THEN u.updated_at END
    FROM {_unnest(TASK_COLUMNS, _TASK_TYPES, _TASKS_FROM)}
    {_TASKS_CONFLICT}
    RETURNING t.task_id, t.parameters, t.result, t.error
), text AS (
    INSERT INTO task_text AS x (task_id, search_text)
    SELECT task_id, loom_task_text(parameters, result, error) FROM up
    WHERE task_id = ANY(${_TEXT_IDS}::text[])
    ON CONFLICT (task_id) DO UPDATE SET search_text = EXCLUDED.search_text
    WHERE x.search_text IS DISTINCT FROM EXCLUDED.search_text
    RETURNING 1
)"""  # noqa: S608 (built from constants only)

# A whole batch in one statement, so in one round trip and its own transaction (parameters:
# :func:`_batch_args`).
# Every round trip costs a wake-up of ingest and of PostgreSQL: on a busy machine, eight of them
# (begin, copy, latency, insert, tasks, text, commit, the pool's reset) took ~60 ms per batch
# where the database worked ~19 ms.
_WRITE_BATCH = f"""
WITH {_EVENTS_CTE}, {_TASKS_CTE}
SELECT (SELECT count(*) FROM ins) AS events
"""  # noqa: S608 (built from constants only)

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


def split_repeats(rows: Sequence[TaskRow]) -> tuple[list[TaskRow], list[TaskRow]]:
    """(each task's first row, the rows of tasks seen before), in their order."""
    firsts: list[TaskRow] = []
    later: list[TaskRow] = []
    seen: set[str] = set()
    for row in rows:
        (later if row[0] in seen else firsts).append(row)
        seen.add(row[0])
    return firsts, later


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _batch_args(events: Sequence[EventRow], firsts: Sequence[TaskRow], with_text: list[str]) -> list[Any]:
    """The parameters of :data:`_WRITE_BATCH`: the events, the tasks whose terminal event is among
    them and those tasks' submissions among them (looked up here rather than in the statement,
    which then reads the events' arrays once), the task rows, the tasks whose text to rewrite."""
    terminal = {
        row[7] for row in events if row[2] == "event" and row[3] in TERMINAL_TASK_EVENT_TYPES and row[7]
    }
    submitted = [
        (row[7], row[0])
        for row in events
        if row[2] == "event" and row[3] == EventType.TASK_SUBMITTED and row[7] in terminal
    ]
    return [
        *_columns(events, _N_EVENT),
        sorted(terminal),
        *_columns(submitted, 2),
        *_columns(firsts, len(TASK_COLUMNS)),
        with_text,
    ]


async def write_rows(
    conn: asyncpg.Connection | PoolConnectionProxy,
    events: Sequence[EventRow],
    tasks: Sequence[TaskRow],
    with_text: list[str],
) -> int:
    """Write event rows and task rows (in their order) and rewrite the search text of the tasks
    ``with_text``; returns how many event rows were new. The events and each task's first row go
    in :data:`_WRITE_BATCH`; the rows of tasks that have more than one (a batch whose rows could
    not be folded) follow one by one, then the text. Same result as upserting every task row in
    order: rows of different tasks commute. With rows of that kind, run it in a transaction."""
    firsts, later = split_repeats(tasks)
    inserted = 0
    if events or firsts:
        inserted = await conn.fetchval(_WRITE_BATCH, *_batch_args(events, firsts, [] if later else with_text))
    if later:
        await conn.executemany(_UPSERT_TASK, later)
        if with_text:
            await conn.execute(_UPSERT_TASK_TEXT, with_text)
    return int(inserted)


SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
"""The pool's connections' settings. A generic plan for every prepared statement: with array
parameters PostgreSQL otherwise plans :data:`_WRITE_BATCH` anew for each batch (a custom plan
per execution, every one of them cheaper than the generic plan by its estimate), which cost
about 4 ms of the database's CPU per batch of the task stream. The generic plan is the same
(the lookup of submissions through the task index, the inserts over ``unnest``)."""


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset``: nothing beyond what asyncpg always does on release (roll back an open
    transaction). The pool's connections hold no session state (no SET, LISTEN, cursor or
    advisory lock: retention uses a connection of its own), and the default reset query was one
    more round trip per batch."""
    return None


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
        rows = fold(tasks)  # a task's rows of the batch as one
        with_text = sorted({r[0] for r in tasks if any(r[i] is not None for i in _TEXT_COLUMNS)})
        result = WriteResult(tasks=len(tasks))
        # the usual batch is one statement; with dead letters, or rows of one task that could not
        # be folded, one transaction
        in_transaction = bool(dead) or len({r[0] for r in rows}) < len(rows)
        async with self._pool.acquire() as conn:
            async with conn.transaction() if in_transaction else contextlib.nullcontext():
                result.events = await write_rows(conn, events, rows, with_text)
                for row in dead:
                    status = await conn.execute(_INSERT_DEAD, *row)
                    if status.endswith(" 1"):
                        result.dead_letters.append((row[7], row[4]))
        result.duplicates = len(events) - result.events
        return result
