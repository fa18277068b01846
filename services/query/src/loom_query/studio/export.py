"""``GET /api/tasks/{task_id}/events.jsonl``: every stored event of a task, oldest first, as JSON
lines (one CloudEvent per line), streamed page by page so that a task of any size exports in
bounded memory. The Studio's trace view offers it as its "Export JSONL" download."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from loom_protocol.http import ErrorBody

from .. import store
from ..state import State, StateDep

router = APIRouter(tags=["studio"])


async def task_event_lines(state: State, task_id: str, kinds: tuple[str, ...]) -> AsyncIterator[bytes]:
    """The task's events as JSON lines, read a page (LOOM_EXPORT_PAGE_SIZE) at a time by keyset."""
    f = store.EventFilter(task_id=task_id, kinds=kinds)
    after = None
    while True:
        async with state.connection() as conn:
            rows, more = await store.events_page(
                conn, f, limit=state.settings.export_page_size, order="asc", after=after
            )
        if rows:
            yield "".join(r.json + "\n" for r in rows).encode()
        if not more or not rows:
            return
        after = (rows[-1].time, rows[-1].id)


@router.get(
    "/api/tasks/{task_id}/events.jsonl",
    summary="Export a task's events as JSON lines, oldest first",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "one CloudEvent per line"},
        **{code: {"model": ErrorBody} for code in (422, 503)},
    },
)
async def export_task_events(
    state: StateDep,
    task_id: Annotated[str, Path(min_length=1, max_length=128)],
    kind: Annotated[
        str, Query(pattern="^(event|all)$", description="event: the task's CloudEvents; all: with task rows")
    ] = "event",
) -> StreamingResponse:
    """An unknown task exports an empty file (no event carries its id). The first page is read
    before the answer starts, so a database that is not available is a 503, not a 200 with an
    empty file; a failure after that cuts the stream short (no final chunk)."""
    kinds = store.KINDS if kind == "all" else ("event",)
    filename = "".join(c if c.isalnum() or c in "-_" else "_" for c in task_id)
    lines = task_event_lines(state, task_id, kinds)
    first = await anext(lines, b"")

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in lines:
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="task-{filename}.jsonl"'},
    )
