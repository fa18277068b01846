"""The SQL behind the query API (read-only; ingest owns the schema and its migrations).

Events are returned as the stored CloudEvent JSON text (``attributes`` plus ``data``), spliced
into the response without decoding, so a page of 1000 events costs one query and no
per-event Python work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from loom_protocol import BUS_TASK_ASSIGNED, TERMINAL_TASK_EVENT_TYPES
from pydantic.alias_generators import to_camel

from .cursor import Order

REQUIRED_SCHEMA_VERSION = 5
"""The ingest migration this code reads (0005_task_search.sql)."""

EVENT_JSON = "CASE WHEN data IS NULL THEN attributes ELSE attributes || jsonb_build_object('data', data) END"
KINDS = ("event", "task", "member")


# a connection of its own or one lent by the pool: the queries take either
Connection = asyncpg.Connection | PoolConnectionProxy


def node_id_of(node: str) -> str:
    """Topology ids name agents ``agent:<id>``; events store the bare agent id."""
    return node[len("agent:") :] if node.startswith("agent:") else node


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True)
class EventFilter:
    trace_id: str | None = None
    node_id: str | None = None
    event_type: str | None = None
    task_id: str | None = None
    session_id: str | None = None
    subject: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    kinds: tuple[str, ...] = ("event",)


class Where:
    """WHERE clauses with numbered parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"


def event_where(f: EventFilter) -> Where:
    w = Where()
    if set(f.kinds) != set(KINDS):
        w.add(f"kind = ANY({w.arg(list(f.kinds))}::text[])")
    node_id = node_id_of(f.node_id) if f.node_id is not None else None
    equal = {
        "trace_id": f.trace_id,
        "task_id": f.task_id,
        "session_id": f.session_id,
        "node_id": node_id,
        "subject": f.subject,
    }
    for column, value in equal.items():
        if value is not None:
            w.add(f"{column} = {w.arg(value)}")
    if f.event_type is not None:
        if f.event_type.endswith(".*"):
            w.add(f"type LIKE {w.arg(_like_prefix(f.event_type[:-1]))}")
        else:
            w.add(f"type = {w.arg(f.event_type)}")
    if f.start_time is not None:
        w.add(f"time >= {w.arg(f.start_time)}")
    if f.end_time is not None:
        w.add(f"time <= {w.arg(f.end_time)}")
    return w


@dataclass(frozen=True)
class EventRowOut:
    time: datetime
    id: str
    json: str


async def events_page(
    conn: Connection,
    f: EventFilter,
    *,
    limit: int,
    offset: int = 0,
    order: Order = "desc",
    after: tuple[datetime, str] | None = None,
    tie_break_seq: bool = False,
) -> tuple[list[EventRowOut], bool]:
    """One page of events and whether more follow (one extra row is read to know)."""
    w = event_where(f)
    cmp = "<" if order == "desc" else ">"
    if after is not None:
        w.add(f"(time, id) {cmp} ({w.arg(after[0])}::timestamptz, {w.arg(after[1])}::text)")
    direction = "DESC" if order == "desc" else "ASC"
    order_by = f"time {direction}, id {direction}"
    sql = (
        f"SELECT time, id, ({EVENT_JSON})::text AS event FROM events WHERE {w.sql()} "  # noqa: S608 (parameters only)
        f"ORDER BY {order_by} LIMIT {w.arg(limit + 1)} OFFSET {w.arg(offset)}"
    )
    rows = await conn.fetch(sql, *w.args)
    more = len(rows) > limit
    return [EventRowOut(r["time"], r["id"], r["event"]) for r in rows[:limit]], more


async def ordered_events(conn: Connection, where_sql: str, args: list[Any], limit: int) -> list[str]:
    """Events in causal order: time, then the producer's seq, then id."""
    rows = await conn.fetch(
        f"SELECT ({EVENT_JSON})::text AS event FROM events WHERE {where_sql} "  # noqa: S608 (parameters only)
        f"ORDER BY time, seq NULLS FIRST, id LIMIT {int(limit)}",
        *args,
    )
    return [r["event"] for r in rows]


# -- tasks --------------------------------------------------------------------------------------

_TASK_COLUMNS = (
    "task_id, target_agent, source_agent, action, status, final, attempt, instance_id, parent_task_id, "
    "session_id, trace_id, parameters::text, result::text, error, metadata::text, created_at, updated_at, "
    "finished_at, cancel_requested_at, pending_approval::text, approvals::text"
)
_JSON_COLUMNS = ("parameters", "result", "metadata", "pending_approval", "approvals")


def task_json(row: asyncpg.Record) -> dict[str, Any]:
    """A ``tasks`` row as camelCase JSON (``durationS`` added)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in _JSON_COLUMNS:
            value = None if value is None else json.loads(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[to_camel(key)] = value
    created, finished = row["created_at"], row["finished_at"]
    out["durationS"] = (finished - created).total_seconds() if created and finished else None
    return out


async def task_by_id(conn: Connection, task_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = $1", task_id)  # noqa: S608
    return None if row is None else task_json(row)


async def tasks_where(conn: Connection, column: str, value: str, limit: int = 1000) -> list[dict[str, Any]]:
    assert column in ("parent_task_id", "trace_id")
    rows = await conn.fetch(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {column} = $1 "  # noqa: S608 (column from a fixed set)
        f"ORDER BY created_at NULLS LAST, task_id LIMIT {int(limit)}",
        value,
    )
    return [task_json(r) for r in rows]


# -- topology -----------------------------------------------------------------------------------

_TOPOLOGY = """
WITH src AS (
    SELECT CASE WHEN agent_id IS NOT NULL THEN 'agent:' || agent_id ELSE node_id END AS node,
           CASE WHEN agent_id IS NOT NULL THEN 'agent' ELSE 'service' END AS node_type,
           subject
    FROM events WHERE {where}
)
SELECT node, node_type,
       CASE WHEN subject ~ '^[A-Za-z0-9_.-]+:.+' AND subject <> node THEN subject END AS target,
       count(*) AS n
FROM src
GROUP BY 1, 2, 3
"""

_RAN = f"""
SELECT name FROM unnest($1::text[]) AS name
WHERE EXISTS (
    SELECT 1 FROM events e
    WHERE e.node_id = name AND e.agent_id = name
      AND ((e.kind = 'event' AND e.instance_id IS NOT NULL)
           OR (e.kind = 'task' AND e.type = '{BUS_TASK_ASSIGNED}'))
)
"""  # noqa: S608 (built from a constant only)
"""Which of the names ran somewhere (in the retained history, not only the asked window): an
instance emitted an event as that agent, or the dispatcher assigned one of its tasks to an
instance (an agent that emits no events of its own, like echo, is still assigned)."""


def _agent_name(node_id: str) -> str | None:
    return node_id[len("agent:") :] if node_id.startswith("agent:") else None


async def topology(conn: Connection, w: Where) -> dict[str, Any]:
    """Nodes and edges of the events matching ``w``.

    An agent is a node only if it ran: a name that never ran anywhere (a task for an agent the
    registry never saw, refused or left waiting; an orchestrator step naming a typo) makes no
    node and no edge, so a typo cannot mint topology nodes. The rows attributed to such a name
    (the dispatcher's events of its tasks) are left out; an edge to it is left out while the
    event still counts for its emitter.
    """
    rows = await conn.fetch(_TOPOLOGY.format(where=w.sql()), *w.args)
    names = {
        name
        for r in rows
        for node_id in (r["node"], r["target"])
        if node_id is not None and (name := _agent_name(node_id)) is not None
    }
    ran = {r["name"] for r in await conn.fetch(_RAN, sorted(names))} if names else set()

    def real(node_id: str) -> bool:
        name = _agent_name(node_id)
        return name is None or name in ran

    nodes: dict[str, dict[str, Any]] = {}

    def node(node_id: str, node_type: str) -> dict[str, Any]:
        entry = nodes.get(node_id)
        if entry is None:
            name = node_id.split(":", 1)[1] if node_type != "service" and ":" in node_id else node_id
            entry = nodes[node_id] = {
                "id": node_id,
                "type": node_type,
                "name": name,
                "nodeId": node_id_of(node_id) if node_type == "agent" else None,
                "events": 0,
                "callsIn": 0,
                "callsOut": 0,
            }
        return entry

    edges = []
    for r in rows:
        if not real(r["node"]):
            continue
        source = node(r["node"], r["node_type"])
        source["events"] += r["n"]
        target_id = r["target"]
        if target_id is None or not real(target_id):
            continue
        target = node(target_id, target_id.split(":", 1)[0])
        source["callsOut"] += r["n"]
        target["callsIn"] += r["n"]
        edges.append({"from": r["node"], "to": target_id, "count": r["n"]})
    edges.sort(key=lambda e: (-e["count"], e["from"], e["to"]))
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges}


# -- metrics ------------------------------------------------------------------------------------

_METRICS = """
WITH rolled AS (
    SELECT time_bucket($1::interval, bucket) AS b, {agent} AS agent, {action} AS action,
           sum(events)::bigint AS events,
           coalesce(sum(events) FILTER (WHERE type = 'llm.usage'), 0)::bigint AS llm_calls,
           sum(input_tokens)::bigint AS input_tokens,
           sum(output_tokens)::bigint AS output_tokens,
           sum(cost_usd) AS cost_usd,
           coalesce(sum(events) FILTER (WHERE type = 'task.completed'), 0)::bigint AS completed,
           coalesce(sum(events) FILTER (WHERE type = 'task.failed'), 0)::bigint AS failed,
           coalesce(sum(events) FILTER (WHERE type = 'task.cancelled'), 0)::bigint AS cancelled,
           coalesce(sum(events) FILTER (WHERE type = 'task.dead'), 0)::bigint AS dead,
           loom_hist_sum(latency_hist) FILTER (WHERE type = 'llm.usage') AS llm_hist,
           loom_hist_sum(latency_hist) FILTER (WHERE type = 'tool.result') AS tool_hist,
           loom_hist_sum(latency_hist) FILTER (WHERE type = ANY($4::text[])) AS task_hist,
           coalesce(sum(latency_sum) FILTER (WHERE type = ANY($4::text[])), 0) AS task_latency_sum,
           coalesce(sum(latency_count) FILTER (WHERE type = ANY($4::text[])), 0)::bigint AS task_latency_count
    FROM event_metrics_1m
    WHERE {where}
    GROUP BY GROUPING SETS ((1, 2, 3), (2, 3))
)
SELECT b, agent, action, events, llm_calls, input_tokens, output_tokens, cost_usd,
       completed, failed, cancelled, dead, task_latency_sum, task_latency_count,
       loom_hist_quantile(llm_hist, 0.5) AS llm_p50, loom_hist_quantile(llm_hist, 0.95) AS llm_p95,
       loom_hist_quantile(llm_hist, 0.99) AS llm_p99,
       loom_hist_quantile(tool_hist, 0.5) AS tool_p50, loom_hist_quantile(tool_hist, 0.95) AS tool_p95,
       loom_hist_quantile(tool_hist, 0.99) AS tool_p99,
       loom_hist_quantile(task_hist, 0.5) AS task_p50, loom_hist_quantile(task_hist, 0.95) AS task_p95,
       loom_hist_quantile(task_hist, 0.99) AS task_p99
FROM rolled
ORDER BY b NULLS LAST, agent, action
"""


def _series_row(r: asyncpg.Record) -> dict[str, Any]:
    def pct(prefix: str) -> dict[str, float | None]:
        return {q: r[f"{prefix}_{q}"] for q in ("p50", "p95", "p99")}

    count = r["task_latency_count"]
    return {
        "bucket": r["b"].isoformat() if r["b"] is not None else None,
        "agent": r["agent"],
        "action": r["action"],
        "events": r["events"],
        "llmCalls": r["llm_calls"],
        "inputTokens": r["input_tokens"],
        "outputTokens": r["output_tokens"],
        "totalTokens": r["input_tokens"] + r["output_tokens"],
        "costUsd": r["cost_usd"],
        "tasks": {
            "completed": r["completed"],
            "failed": r["failed"],
            "cancelled": r["cancelled"],
            "dead": r["dead"],
        },
        "latencyS": {
            "llm": pct("llm"),
            "tool": pct("tool"),
            "task": {**pct("task"), "mean": (r["task_latency_sum"] / count) if count else None},
        },
    }


async def metrics(
    conn: Connection,
    *,
    bucket_s: int,
    start: datetime,
    end: datetime,
    group_by: tuple[str, ...],
    agent: str | None,
    action: str | None,
) -> dict[str, Any]:
    w = Where()
    w.arg(timedelta(seconds=bucket_s))  # $1
    w.add(f"bucket >= {w.arg(start)}")  # $2
    w.add(f"bucket <= {w.arg(end)}")  # $3
    w.arg(sorted(TERMINAL_TASK_EVENT_TYPES))  # $4
    if agent is not None:
        w.add(f"agent = {w.arg(node_id_of(agent))}")
    if action is not None:
        w.add(f"action = {w.arg(action)}")
    sql = _METRICS.format(
        agent="agent" if "agent" in group_by else "NULL::text",
        action="action" if "action" in group_by else "NULL::text",
        where=w.sql(),
    )
    rows = await conn.fetch(sql, *w.args)
    series = [_series_row(r) for r in rows if r["b"] is not None]
    totals = [_series_row(r) for r in rows if r["b"] is None]
    for t in totals:
        del t["bucket"]
    return {"series": series, "totals": totals}


_COST = """
SELECT GROUPING(node_id) AS g_agent, GROUPING(data->>'model') AS g_model,
       GROUPING(session_id) AS g_session, GROUPING(task_id) AS g_task,
       node_id AS agent, data->>'model' AS model, session_id, task_id,
       count(*)::bigint AS llm_calls,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(cost_usd), 0)::double precision AS cost_usd,
       count(*) FILTER (WHERE cost_usd IS NULL)::bigint AS unpriced_calls
FROM events
WHERE {where}
GROUP BY GROUPING SETS ((node_id), (data->>'model'), (session_id), (task_id), ())
"""

COST_GROUPS = ("agent", "model", "session", "task")


async def cost_breakdown(
    conn: Connection,
    *,
    start: datetime | None,
    end: datetime | None,
    agent: str | None = None,
    session_id: str | None = None,
    task_id: str | None = None,
    limit: int | None,
) -> dict[str, Any]:
    """LLM calls, tokens and cost of the ``llm.usage`` events in [start, end] (None: unbounded),
    in total and per agent, model, session and task (each list by cost, highest first, at most
    ``limit`` rows; None: all)."""
    w = Where()
    w.add("kind = 'event'")
    w.add("type = 'llm.usage'")
    if start is not None:
        w.add(f"time >= {w.arg(start)}")
    if end is not None:
        w.add(f"time <= {w.arg(end)}")
    if agent is not None:
        w.add(f"node_id = {w.arg(node_id_of(agent))}")
    if session_id is not None:
        w.add(f"session_id = {w.arg(session_id)}")
    if task_id is not None:
        w.add(f"task_id = {w.arg(task_id)}")
    rows = await conn.fetch(_COST.format(where=w.sql()), *w.args)
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in COST_GROUPS}
    total: dict[str, Any] = {
        "llmCalls": 0,
        "inputTokens": 0,
        "outputTokens": 0,
        "costUsd": 0.0,
        "unpricedCalls": 0,
    }
    for r in rows:
        figures = {
            "llmCalls": r["llm_calls"],
            "inputTokens": r["input_tokens"],
            "outputTokens": r["output_tokens"],
            "costUsd": r["cost_usd"],
            "unpricedCalls": r["unpriced_calls"],
        }
        flags = (r["g_agent"], r["g_model"], r["g_session"], r["g_task"])
        if all(flags):
            total = figures
            continue
        name = COST_GROUPS[flags.index(0)]
        key = {"agent": r["agent"], "model": r["model"], "session": r["session_id"], "task": r["task_id"]}[
            name
        ]
        groups[name].append({"key": key, **figures})
    for name, entries in groups.items():
        entries.sort(key=lambda e: (-e["costUsd"], -e["llmCalls"], e["key"] or ""))
        groups[name] = entries[:limit]
    return {"total": total, **{f"by{name.capitalize()}": groups[name] for name in COST_GROUPS}}


# -- memory -------------------------------------------------------------------------------------

_MEMORY_TYPES = ["memory.add", "memory.consolidate"]


async def memory_events(
    conn: Connection, node_id: str, start: datetime | None, end: datetime | None, limit: int
) -> list[asyncpg.Record]:
    """The memory events of every (instance, session) in which ``node_id`` wrote memory."""
    w = Where()
    w.add("kind = 'event'")
    w.add(f"type = ANY({w.arg(_MEMORY_TYPES)}::text[])")
    if start is not None:
        w.add(f"time >= {w.arg(start)}")
    if end is not None:
        w.add(f"time <= {w.arg(end)}")
    base, base_args = w.sql(), list(w.args)
    w.add(f"node_id = {w.arg(node_id)}")
    keys = await conn.fetch(
        f"SELECT DISTINCT session_id, task_id FROM events WHERE {w.sql()}",  # noqa: S608 (parameters only)
        *w.args,
    )
    sessions = sorted({k["session_id"] for k in keys if k["session_id"] is not None})
    tasks = sorted({k["task_id"] for k in keys if k["session_id"] is None and k["task_id"] is not None})
    if not sessions and not tasks:
        return []
    w2 = Where()
    w2.clauses, w2.args = [base], base_args
    s, t = w2.arg(sessions), w2.arg(tasks)
    w2.add(f"(session_id = ANY({s}::text[]) OR (session_id IS NULL AND task_id = ANY({t}::text[])))")
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, type, time, node_id, instance_id, session_id, task_id, data::text AS data "  # noqa: S608
        f"FROM events WHERE {w2.sql()} ORDER BY time, seq NULLS FIRST, id LIMIT {int(limit)}",
        *w2.args,
    )
    return rows
