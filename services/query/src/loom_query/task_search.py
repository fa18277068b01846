"""The SQL behind task search (``GET /api/tasks``) and the session view (``GET /api/sessions/{id}``),
over the ``tasks`` projection ingest maintains.

A page is a keyset scan in ``(created_at DESC, task_id DESC)`` order, the order of the
``tasks_*_created_idx`` indexes (migration 0005); the counts by status are one ``GROUP BY`` over
the same filters without the status filter. Free text is ``LIKE lower('%q%')`` on
``task_text.search_text``, the lower-cased text of the task's parameters, result and error that
ingest keeps, which a trigram index serves where pg_trgm is installed. Only tasks with
a status are listed: a row ingest made from a cancel request alone (no submission or status
seen) is not a task yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from loom_protocol import TaskStatus

from .store import Connection, Where, node_id_of

ELLIPSIS = "…"


@dataclass(frozen=True)
class TaskQuery:
    """The filters of a task search (every one optional; all of them must match)."""

    statuses: tuple[str, ...] = ()
    agent: str | None = None
    session_id: str | None = None
    parent_task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None


def like_contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def task_where(q: TaskQuery, *, by_status: bool = True) -> Where:
    """The WHERE of a search; ``by_status=False`` leaves the status filter out (the counts)."""
    w = Where()
    w.add("status IS NOT NULL")
    if by_status and q.statuses:
        w.add(f"status = ANY({w.arg(list(q.statuses))}::text[])")
    if q.agent is not None:
        w.add(f"target_agent = {w.arg(node_id_of(q.agent))}")
    if q.session_id is not None:
        w.add(f"session_id = {w.arg(q.session_id)}")
    if q.parent_task_id is not None:
        w.add(f"parent_task_id = {w.arg(q.parent_task_id)}")
    if q.since is not None:
        w.add(f"created_at >= {w.arg(q.since)}")
    if q.until is not None:
        w.add(f"created_at <= {w.arg(q.until)}")
    if q.text is not None:
        pattern = w.arg(like_contains(q.text))
        w.add(f"task_id IN (SELECT task_id FROM task_text WHERE search_text LIKE lower({pattern}))")  # noqa: S608
    return w


async def plan_per_request(conn: Connection) -> None:
    """Plan this transaction's statements for their actual parameters: a generic plan (what a
    prepared statement gets after five runs) cannot tell a rare status or agent from a common
    one, nor a ``q`` whose trigrams are selective from one that most tasks contain (measured: a
    generic plan made some searches 3 to 5 times slower)."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


def _summary_columns(preview: int) -> str:
    """The columns of a summary; the long values cut in SQL to one character past the preview
    (so that a cut one can be told from one of exactly that length)."""
    n = int(preview) + 1
    return (
        "task_id, target_agent, source_agent, action, status, final, attempt, instance_id, "
        "parent_task_id, session_id, trace_id, created_at, updated_at, finished_at, cancel_requested_at, "
        f"left(error, {n}) AS error, left(parameters::text, {n}) AS parameters_preview, "
        f"left(result::text, {n}) AS result_preview, pending_approval::text AS pending_approval"
    )


def _cut(value: str | None, preview: int) -> str | None:
    if value is None or len(value) <= preview:
        return value
    return value[:preview] + ELLIPSIS


def summary(row: asyncpg.Record, preview: int) -> dict[str, Any]:
    """A summary row as :class:`~loom_query.task_models.TaskSummary` fields (snake_case)."""
    out = dict(row.items())
    for key in ("error", "parameters_preview", "result_preview"):
        out[key] = _cut(out[key], preview)
    pending = out["pending_approval"]
    out["pending_approval"] = None if pending is None else json.loads(pending)
    created, finished = row["created_at"], row["finished_at"]
    out["duration_s"] = (finished - created).total_seconds() if finished is not None else None
    return out


@dataclass(frozen=True)
class SearchResult:
    """A page of summaries (newest first), whether more follow, and the counts by status."""

    tasks: list[dict[str, Any]]
    more: bool
    counts: dict[str, int]


async def search_tasks(
    conn: Connection,
    q: TaskQuery,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    preview: int,
) -> SearchResult:
    """The page after the keyset ``after`` and the counts by status of a search.

    Without free text, two index-driven statements: the page (a keyset scan of an index in
    page order, stopped after ``limit + 1`` rows) and the counts (an index-only ``GROUP BY``).
    With free text, most of the cost is finding and rechecking the matching rows, so they are
    found once, by one statement that counts them and pages them.
    """
    if q.text is not None:
        return await _search_matching_once(conn, q, limit=limit, after=after, preview=preview)
    w = task_where(q)
    _keyset(w, after)
    sql = (
        f"SELECT {_summary_columns(preview)} FROM tasks WHERE {w.sql()} "  # noqa: S608 (parameters only)
        f"ORDER BY created_at DESC, task_id DESC LIMIT {w.arg(limit + 1)}"
    )
    rows = await conn.fetch(sql, *w.args)
    wc = task_where(q, by_status=False)
    counted = await conn.fetch(
        f"SELECT status, count(*) AS n FROM tasks WHERE {wc.sql()} GROUP BY status",  # noqa: S608
        *wc.args,
    )
    return SearchResult(
        tasks=[summary(r, preview) for r in rows[:limit]],
        more=len(rows) > limit,
        counts=_counts({r["status"]: r["n"] for r in counted}),
    )


def _keyset(w: Where, after: tuple[datetime, str] | None) -> None:
    if after is not None:
        w.add(f"(created_at, task_id) < ({w.arg(after[0])}::timestamptz, {w.arg(after[1])}::text)")


def _counts(found: dict[str, int]) -> dict[str, int]:
    """Every known status (0 when none), then any status this code does not know, as found."""
    counts = dict.fromkeys((s.value for s in TaskStatus), 0)
    counts.update(found)
    return counts


_MATCHING_ONCE = """
WITH m AS MATERIALIZED (
    SELECT task_id, status, created_at FROM tasks WHERE {matching}
), counts AS (
    SELECT coalesce(jsonb_object_agg(status, n), '{{}}'::jsonb)::text AS counts
    FROM (SELECT status, count(*) AS n FROM m GROUP BY status) AS by_status
), page AS (
    SELECT task_id FROM m WHERE {paged} ORDER BY created_at DESC, task_id DESC LIMIT {limit}
)
SELECT counts.counts, {columns}
FROM counts LEFT JOIN (page JOIN tasks USING (task_id)) ON true
ORDER BY created_at DESC, task_id DESC
"""


async def _search_matching_once(
    conn: Connection,
    q: TaskQuery,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    preview: int,
) -> SearchResult:
    w = task_where(q, by_status=False)
    matching = w.sql()
    w.clauses = []  # the page's own conditions, numbered after the matching ones
    if q.statuses:
        w.add(f"status = ANY({w.arg(list(q.statuses))}::text[])")
    _keyset(w, after)
    sql = _MATCHING_ONCE.format(
        matching=matching, paged=w.sql(), limit=w.arg(limit + 1), columns=_summary_columns(preview)
    )
    rows = await conn.fetch(sql, *w.args)
    counts = _counts(json.loads(rows[0]["counts"])) if rows else _counts({})
    found = [r for r in rows if r["task_id"] is not None]
    return SearchResult(
        tasks=[summary(r, preview) for r in found[:limit]], more=len(found) > limit, counts=counts
    )


def total_of(counts: dict[str, int], statuses: tuple[str, ...]) -> int:
    """How many tasks match every filter, the status filter included."""
    return sum(n for status, n in counts.items() if not statuses or status in statuses)


# -- sessions -----------------------------------------------------------------------------------


async def session_tasks(
    conn: Connection, session_id: str, *, limit: int, preview: int
) -> tuple[list[dict[str, Any]], bool]:
    """The session's first ``limit`` tasks, oldest first, and whether it has more."""
    rows = await conn.fetch(
        f"SELECT {_summary_columns(preview)} FROM tasks "  # noqa: S608 (parameters only)
        "WHERE session_id = $1 AND status IS NOT NULL "
        "ORDER BY created_at, task_id LIMIT $2",
        session_id,
        limit + 1,
    )
    return [summary(r, preview) for r in rows[:limit]], len(rows) > limit


_SESSION_SPAN = """
SELECT status, count(*) AS n, min(created_at) AS started, max(finished_at) AS ended,
       count(*) FILTER (WHERE finished_at IS NULL) AS open
FROM tasks WHERE session_id = $1 AND status IS NOT NULL
GROUP BY status
"""


@dataclass(frozen=True)
class SessionSpan:
    """A session's tasks by status and its time span, over all its tasks."""

    counts: dict[str, int]
    started_at: datetime
    ended_at: datetime | None

    @property
    def tasks(self) -> int:
        return sum(self.counts.values())

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()


async def session_span(conn: Connection, session_id: str) -> SessionSpan | None:
    """The session's counts and span; None when it has no task."""
    rows = await conn.fetch(_SESSION_SPAN, session_id)
    if not rows:
        return None
    open_tasks = sum(r["open"] for r in rows)
    ended = [r["ended"] for r in rows if r["ended"] is not None]
    return SessionSpan(
        counts={r["status"]: r["n"] for r in sorted(rows, key=lambda r: str(r["status"]))},
        started_at=min(r["started"] for r in rows),
        ended_at=max(ended) if ended and not open_tasks else None,
    )
