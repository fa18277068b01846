"""REST API (paths and query parameters as the Studio design has them): events, topology, memory,
metrics, tasks and traces. Bodies are camelCase JSON with ISO 8601 UTC times; bad parameters
answer 422 with the reason, unknown ids 404 (errors.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from loom_protocol import LoomModel, TaskStatus
from loom_protocol.http import ErrorBody
from loom_protocol.limits import bad_text
from pydantic import AfterValidator, Field
from starlette.requests import HTTPConnection

from . import store, task_search
from .cursor import CursorError, Order, decode_cursor, encode_cursor
from .memory import MemoryEvent, node_memory, replay
from .state import StateDep
from .task_models import CostFigures, SessionDetail, SessionTask, SessionTotals, TaskPage, TaskSummary


async def _storable_request(request: HTTPConnection) -> None:
    """Refuse (422) a path or query value PostgreSQL cannot hold: a NUL or a lone surrogate."""
    places = [("path", k, v) for k, v in request.path_params.items() if isinstance(v, str)]
    places += [("query", k, v) for k, v in request.query_params.multi_items()]
    for where, name, value in places:
        if (what := bad_text(value)) is not None or (what := bad_text(name)) is not None:
            raise RequestValidationError(
                [{"loc": (where, name if bad_text(name) is None else "?"), "msg": f"contains {what}"}]
            )


router = APIRouter(
    tags=["studio"],
    responses={code: {"model": ErrorBody} for code in (404, 422, 500, 503)},
    dependencies=[Depends(_storable_request)],
)

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_MAX_BUCKET_S = 366 * 86_400


def _utc(value: datetime | None) -> datetime | None:
    """Query times: RFC 3339 or Unix seconds; a time without a zone is taken as UTC; 1970 to 9000."""
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value is not None and not _EARLIEST <= value <= _LATEST:
        raise ValueError(f"times must be from {_EARLIEST.isoformat()} to {_LATEST.isoformat()}")
    return value


Time = Annotated[datetime | None, AfterValidator(_utc)]
_TIME_DOC = "RFC 3339 time or Unix seconds (inclusive)"
Kind = Literal["event", "task", "member", "all"]
_KIND_DOC = (
    "event: CloudEvents from loom.event.>; task / member: task and membership messages ingest "
    "converted to CloudEvent form (types loom.task.*, loom.registry.member.*); all: every row"
)


def _kinds(kind: Kind) -> tuple[str, ...]:
    return store.KINDS if kind == "all" else (kind,)


def _unprocessable(reason: str, field: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", field), "msg": reason, "type": "value_error"}])


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start > end:
        raise _unprocessable("start_time is after end_time", "start_time")


def _page_body(
    rows: list[store.EventRowOut], next_cursor: str | None, extra: dict[str, Any] | None = None
) -> str:
    head = "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in (extra or {}).items())
    events = ",".join(r.json for r in rows)
    return f'{{{head}"events":[{events}],"nextCursor":{json.dumps(next_cursor)},"count":{len(rows)}}}'


class EventsPage(LoomModel):
    """A page of events (CloudEvents 1.0 JSON), newest or oldest first."""

    events: list[dict[str, Any]]
    next_cursor: str | None = Field(description="pass back as `cursor` for the next page; null on the last")
    count: int


class TaskRecord(LoomModel):
    """A task as ingest stored it (the ``tasks`` table)."""

    task_id: str
    target_agent: str | None = None
    source_agent: str | None = None
    action: str | None = None
    status: str | None = None
    final: bool | None = None
    attempt: int | None = None
    instance_id: str | None = None
    parent_task_id: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    parameters: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    duration_s: float | None = None
    pending_approval: dict[str, Any] | None = Field(
        default=None, description="the tool call an input_required task waits on"
    )
    approvals: list[dict[str, Any]] | None = Field(
        default=None, description="the decisions taken on its tool calls, oldest first"
    )


class TracePage(EventsPage):
    """A trace's events, oldest first; its tasks on the first page."""

    trace_id: str
    tasks: list[TaskRecord] | None = Field(default=None, description="only on the first page")


class TaskDetail(LoomModel):
    """A task, its events in causal order and its child tasks."""

    task_id: str
    task: TaskRecord | None
    children: list[TaskRecord]
    truncated: bool
    events: list[dict[str, Any]]
    count: int


class TopologyNode(LoomModel):
    id: str = Field(description="agent:<id>, tool:<name>, llm:<provider/model>, or a service's source")
    type: str
    name: str
    node_id: str | None = Field(description="the agent id, for agents")
    events: int
    calls_in: int
    calls_out: int


class TopologyEdge(LoomModel):
    model_config = {"populate_by_name": True, "alias_generator": None}

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    count: int


class Topology(LoomModel):
    nodes: list[TopologyNode]
    edges: list[TopologyEdge]
    trace_id: str | None
    start_time: datetime | None
    end_time: datetime | None


class CostRow(CostFigures):
    """The figures of one agent, model, session or task (``key``; null: events without one)."""

    key: str | None


class CostBreakdown(LoomModel):
    """Cost over the range, in total and per agent, model, session and task (highest first)."""

    total: CostFigures
    by_agent: list[CostRow]
    by_model: list[CostRow]
    by_session: list[CostRow]
    by_task: list[CostRow]


class Metrics(LoomModel):
    """Series per bucket (and group), totals per group over the whole range, and the LLM cost
    per agent, model, session and task."""

    bucket_seconds: int
    start_time: datetime
    end_time: datetime
    group_by: list[str]
    series: list[dict[str, Any]] = Field(
        description="bucket, agent, action, events, llmCalls, inputTokens, outputTokens, totalTokens, "
        "costUsd, tasks {completed, failed, cancelled, dead}, latencyS {llm, tool, task: p50/p95/p99}"
    )
    totals: list[dict[str, Any]]
    cost: CostBreakdown


@router.get("/api/events", response_model=EventsPage, summary="Query stored events")
async def get_events(
    state: StateDep,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    node_id: Annotated[
        str | None, Query(max_length=1024, description="the emitting node (agentid, else source)")
    ] = None,
    event_type: Annotated[
        str | None, Query(max_length=1024, description="exact type, or a prefix ending in '.*' (task.*)")
    ] = None,
    task_id: Annotated[str | None, Query(max_length=128)] = None,
    session_id: Annotated[str | None, Query(max_length=1024)] = None,
    subject: Annotated[str | None, Query(max_length=1024, description="e.g. tool:calculator")] = None,
    start_time: Annotated[Time, Query(description=_TIME_DOC)] = None,
    end_time: Annotated[Time, Query(description=_TIME_DOC)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[
        int, Query(ge=0, le=100_000, description="rows to skip; prefer cursor for deep pages")
    ] = 0,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="next_cursor of the previous page")
    ] = None,
    order: Annotated[Order, Query(description="desc: newest first; asc: oldest first")] = "desc",
    kind: Annotated[Kind, Query(description=_KIND_DOC)] = "event",
) -> Response:
    _check_range(start_time, end_time)
    after = None
    if cursor is not None:
        if offset:
            raise _unprocessable("use either offset or cursor, not both", "offset")
        try:
            after = decode_cursor(cursor, order)
        except CursorError as exc:
            raise _unprocessable(str(exc), "cursor") from None
    f = store.EventFilter(
        trace_id=trace_id,
        node_id=node_id,
        event_type=event_type,
        task_id=task_id,
        session_id=session_id,
        subject=subject,
        start_time=start_time,
        end_time=end_time,
        kinds=_kinds(kind),
    )
    async with state.connection() as conn:
        rows, more = await store.events_page(conn, f, limit=limit, offset=offset, order=order, after=after)
    next_cursor = encode_cursor(rows[-1].time, rows[-1].id, order) if more and rows else None
    return Response(_page_body(rows, next_cursor), media_type="application/json")


@router.get("/api/topology", summary="Nodes and edges inferred from events", response_model=Topology)
async def get_topology(
    state: StateDep,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    start_time: Annotated[
        Time, Query(description=_TIME_DOC + "; default: the last LOOM_TOPOLOGY_WINDOW_S")
    ] = None,
    end_time: Annotated[Time, Query(description=_TIME_DOC)] = None,
) -> dict[str, Any]:
    """Nodes are agents (``agent:<id>``), what they address (``tool:<name>``, ``llm:<provider/model>``,
    ``agent:<id>`` for delegation) and services that emit without an agent id; an edge counts the
    events a node emitted with another node as their ``subject``. An agent id that never ran on an
    instance (a task for an agent the registry never saw) is no node and no edge."""
    _check_range(start_time, end_time)
    if trace_id is None and start_time is None:
        start_time = datetime.now(UTC) - timedelta(seconds=state.settings.topology_window_s)
    w = store.event_where(store.EventFilter(trace_id=trace_id, start_time=start_time, end_time=end_time))
    async with state.connection() as conn:
        graph = await store.topology(conn, w)
    return {**graph, "traceId": trace_id, "startTime": start_time, "endTime": end_time}


@router.get("/api/memory/{node_id}", summary="A node's memory, rebuilt from memory events")
async def get_memory(
    state: StateDep,
    node_id: Annotated[str, Path(min_length=1, max_length=1024, description="agent id (or agent:<id>)")],
    start_time: Annotated[Time, Query(description=_TIME_DOC)] = None,
    end_time: Annotated[Time, Query(description=_TIME_DOC)] = None,
) -> dict[str, Any]:
    _check_range(start_time, end_time)
    node = store.node_id_of(node_id)
    async with state.connection() as conn:
        rows = await store.memory_events(conn, node, start_time, end_time, state.settings.memory_events_limit)
    events = []
    for r in rows:
        data = json.loads(r["data"]) if r["data"] is not None else {}
        events.append(
            MemoryEvent(
                event_id=r["id"],
                type=r["type"],
                time=r["time"].isoformat(),
                node_id=r["node_id"],
                instance_id=r["instance_id"],
                session_id=r["session_id"],
                task_id=r["task_id"],
                data=data if isinstance(data, dict) else {},
            )
        )
    body = node_memory(node, replay(events))
    body["events_replayed"] = len(events)
    body["truncated"] = len(events) >= state.settings.memory_events_limit
    return body


_BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21_600, "1d": 86_400}
GroupBy = Literal["agent", "action", "agent,action", "none"]


@router.get(
    "/api/metrics",
    summary="Tokens, cost, task counts and latency percentiles over time",
    response_model=Metrics,
)
async def get_metrics(
    state: StateDep,
    start_time: Annotated[Time, Query(description=_TIME_DOC + "; default: an hour before end_time")] = None,
    end_time: Annotated[Time, Query(description=_TIME_DOC + "; default: now")] = None,
    bucket: Annotated[
        str,
        Query(
            max_length=16,
            description="bucket width: 1m, 5m, 15m, 1h, 6h, 1d, or seconds (a multiple of 60)",
        ),
    ] = "1m",
    group_by: Annotated[
        GroupBy, Query(description="action = the events' subject (llm:<model>, tool:<name>)")
    ] = ("agent"),
    agent: Annotated[str | None, Query(max_length=1024)] = None,
    action: Annotated[str | None, Query(max_length=1024)] = None,
    session_id: Annotated[str | None, Query(max_length=1024, description="cost of this session only")] = None,
    task_id: Annotated[str | None, Query(max_length=128, description="cost of this task only")] = None,
    cost_limit: Annotated[
        int, Query(ge=1, le=1000, description="rows per cost grouping (highest cost first)")
    ] = 50,
) -> dict[str, Any]:
    """From the per-minute rollup ingest maintains. Latency percentiles (seconds) come from
    log-scale histograms: exact to within about 6 %. Task latency is submission to terminal
    event; llm from ``llm.usage``; tool from ``tool.result``. ``cost`` sums the ``llm.usage``
    events' cost (the worker's price table) per agent, model, session and task, filtered by
    ``agent``, ``session_id`` and ``task_id``."""
    bucket_s = _BUCKETS.get(bucket)
    if bucket_s is None:
        if not bucket.isdigit() or int(bucket) < 60 or int(bucket) % 60 or int(bucket) > _MAX_BUCKET_S:
            raise _unprocessable(
                f"bucket must be 1m, 5m, 15m, 1h, 6h, 1d or a multiple of 60 seconds up to {_MAX_BUCKET_S}",
                "bucket",
            )
        bucket_s = int(bucket)
    end = end_time or datetime.now(UTC)
    start = start_time or max(end - timedelta(hours=1), _EARLIEST)
    _check_range(start, end)
    if (end - start).total_seconds() / bucket_s > 10_000:
        raise _unprocessable("more than 10000 buckets: use a wider bucket or a shorter range", "bucket")
    groups = () if group_by == "none" else tuple(group_by.split(","))
    async with state.connection() as conn:
        body = await store.metrics(
            conn, bucket_s=bucket_s, start=start, end=end, group_by=groups, agent=agent, action=action
        )
        cost = await store.cost_breakdown(
            conn, start=start, end=end, agent=agent, session_id=session_id, task_id=task_id, limit=cost_limit
        )
    return {
        "bucketSeconds": bucket_s,
        "startTime": start,
        "endTime": end,
        "groupBy": list(groups),
        **body,
        "cost": cost,
    }


_STATUSES = tuple(s.value for s in TaskStatus)


def _statuses(values: list[str] | None) -> tuple[str, ...]:
    """The statuses asked for: repeated ``status`` parameters and comma lists, each known."""
    chosen: list[str] = []
    for value in values or ():
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if part not in _STATUSES:
                raise _unprocessable(f"unknown status {part[:64]!r}; known: {', '.join(_STATUSES)}", "status")
            if part not in chosen:
                chosen.append(part)
    return tuple(chosen)


def _no_nul(**values: str | None) -> None:
    """PostgreSQL text holds no NUL character: such a value can match nothing, so it is refused."""
    for name, value in values.items():
        if value is not None and "\x00" in value:
            raise _unprocessable("must not contain a NUL character", name)


@router.get("/api/tasks", response_model=TaskPage, summary="List and search tasks, newest first")
async def list_tasks(
    state: StateDep,
    status: Annotated[
        list[str] | None,
        Query(description=f"repeatable, or a comma list: {', '.join(_STATUSES)}"),
    ] = None,
    agent: Annotated[str | None, Query(max_length=1024, description="target agent (or agent:<id>)")] = None,
    session: Annotated[str | None, Query(max_length=1024, description="session id")] = None,
    parent: Annotated[str | None, Query(max_length=128, description="parent task id")] = None,
    since: Annotated[Time, Query(description="created at or after: " + _TIME_DOC)] = None,
    until: Annotated[Time, Query(description="created at or before: " + _TIME_DOC)] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=256,
            description="free text, case-insensitive, anywhere in the parameters or result (their "
            "JSON text) or the error; at least 3 characters (the trigram index's unit)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="nextCursor of the previous page")
    ] = None,
) -> Response:
    """Tasks newest first (createdAt, then taskId, descending), as summaries: errors, parameters
    and results are previews (their first LOOM_TASK_PREVIEW_CHARS characters, "…" when cut),
    the full values are in ``GET /api/tasks/{taskId}``. ``counts`` are per status under every
    filter but ``status`` (tabs), ``total`` the tasks under every filter."""
    _no_nul(agent=agent, session=session, parent=parent, q=q)
    if since is not None and until is not None and since > until:
        raise _unprocessable("since is after until", "since")
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor, "desc")
        except CursorError as exc:
            raise _unprocessable(str(exc), "cursor") from None
    statuses = _statuses(status)
    f = task_search.TaskQuery(
        statuses=statuses,
        agent=agent,
        session_id=session,
        parent_task_id=parent,
        since=since,
        until=until,
        text=q,
    )
    preview = state.settings.task_preview_chars
    # one snapshot for the page and its counts, so that they agree
    async with state.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await task_search.plan_per_request(conn)
        found = await task_search.search_tasks(conn, f, limit=limit, after=after, preview=preview)
    tasks = [TaskSummary.model_validate(r) for r in found.tasks]
    page = TaskPage(
        tasks=tasks,
        next_cursor=encode_cursor(tasks[-1].created_at, tasks[-1].task_id, "desc") if found.more else None,
        counts=found.counts,
        total=task_search.total_of(found.counts, statuses),
    )
    return Response(page.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/api/sessions/{session_id}",
    response_model=SessionDetail,
    summary="A session's tasks, oldest first, with their LLM usage and the session's totals",
)
async def get_session(
    state: StateDep, session_id: Annotated[str, Path(min_length=1, max_length=1024)]
) -> Response:
    """Tasks in creation order (at most LOOM_SESSION_TASKS_LIMIT; ``truncated`` says there are
    more), each with the calls, tokens and cost of its ``llm.usage`` events (as /api/metrics
    counts them) and its duration (finishedAt - createdAt). Totals: tasks per status, usage over
    every ``llm.usage`` event of the session, and its span (first createdAt to last
    finishedAt, once every task has finished). 404 when no task has this session id."""
    _no_nul(session_id=session_id)
    settings = state.settings
    async with state.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        span = await task_search.session_span(conn, session_id)
        if span is None:
            raise HTTPException(404, f"no session {session_id!r}: no task has this session id")
        rows, truncated = await task_search.session_tasks(
            conn, session_id, limit=settings.session_tasks_limit, preview=settings.task_preview_chars
        )
        cost = await store.cost_breakdown(conn, start=None, end=None, session_id=session_id, limit=None)
    by_task = {row["key"]: row for row in cost["byTask"]}
    zero = CostFigures(llm_calls=0, input_tokens=0, output_tokens=0, cost_usd=0.0, unpriced_calls=0)
    tasks = [SessionTask.model_validate({**r, "usage": by_task.get(r["task_id"]) or zero}) for r in rows]
    totals = SessionTotals.model_validate(
        {
            **cost["total"],
            "tasks": span.tasks,
            "counts": span.counts,
            "started_at": span.started_at,
            "ended_at": span.ended_at,
            "duration_s": span.duration_s,
        }
    )
    body = SessionDetail(session_id=session_id, tasks=tasks, truncated=truncated, totals=totals)
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/api/tasks/{task_id}",
    summary="A task, its events in causal order and its child tasks",
    response_model=TaskDetail,
)
async def get_task(
    state: StateDep,
    task_id: Annotated[str, Path(min_length=1, max_length=128)],
    kind: Annotated[Kind, Query(description=_KIND_DOC)] = "event",
) -> Response:
    limit = state.settings.task_events_limit
    w = store.event_where(store.EventFilter(task_id=task_id, kinds=_kinds(kind)))
    async with state.connection() as conn:
        task = await store.task_by_id(conn, task_id)
        events = await store.ordered_events(conn, w.sql(), w.args, limit + 1)
        children = await store.tasks_where(conn, "parent_task_id", task_id)
    if task is None and not events:
        raise HTTPException(404, f"no task {task_id!r}: no task record and no events with this task id")
    truncated = len(events) > limit
    events = events[:limit]
    head = json.dumps({"taskId": task_id, "task": task, "children": children, "truncated": truncated})
    body = head[:-1] + f',"events":[{",".join(events)}],"count":{len(events)}}}'
    return Response(body, media_type="application/json")


@router.get("/api/traces/{trace_id}", response_model=TracePage, summary="A trace's events, oldest first")
async def get_trace(
    state: StateDep,
    trace_id: Annotated[str, Path(min_length=1, max_length=64)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    kind: Annotated[Kind, Query(description=_KIND_DOC)] = "event",
) -> Response:
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor, "asc")
        except CursorError as exc:
            raise _unprocessable(str(exc), "cursor") from None
    f = store.EventFilter(trace_id=trace_id, kinds=_kinds(kind))
    async with state.connection() as conn:
        rows, more = await store.events_page(conn, f, limit=limit, order="asc", after=after)
        tasks = await store.tasks_where(conn, "trace_id", trace_id) if after is None else None
    if after is None and not rows and not tasks:
        raise HTTPException(404, f"no trace {trace_id!r}: no events and no tasks carry this trace id")
    next_cursor = encode_cursor(rows[-1].time, rows[-1].id, "asc") if more and rows else None
    extra: dict[str, Any] = {"traceId": trace_id}
    if tasks is not None:
        extra["tasks"] = tasks
    return Response(_page_body(rows, next_cursor, extra), media_type="application/json")


@router.websocket("/ws/events")
async def events_socket(websocket: WebSocket, state: StateDep) -> None:
    await state.live.serve(websocket, state.broker.connection)
