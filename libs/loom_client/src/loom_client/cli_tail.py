"""``loom tail``: the live feed, one coloured line per event, until Ctrl-C, ``--count`` or ``--timeout``."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .cli_common import (
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    QueryUrlOpt,
    client,
    err,
    out,
    print_json,
    reporting_errors,
)
from .cli_render import event_line
from .errors import Timeout, Unavailable
from .models import Dropped, LiveMessage

__all__ = ["register"]


def _print_json(message: LiveMessage) -> None:
    if isinstance(message, Dropped):
        print_json({"dropped": message.count})
    else:
        print_json(message.to_wire())


def tail(
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="Only this task's events (repeatable).")
    ] = None,
    agent: Annotated[
        list[str] | None, typer.Option("--agent", "-a", help="Only events this agent emits (repeatable).")
    ] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", help="Only this type, or a prefix such as 'tool.*' (repeatable); task.stream: chunks."
        ),
    ] = None,
    session: Annotated[str | None, typer.Option("--session", help="Only this session's events.")] = None,
    trace: Annotated[str | None, typer.Option("--trace", help="Only this trace's events.")] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after N events (exit 1 if fewer came).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, metavar="SECONDS", help="Stop after this long.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (the CloudEvent).")
    ] = False,
    query_url: QueryUrlOpt = None,
) -> None:
    """Follow the live feed of events (Ctrl-C stops)."""
    seen = 0
    deadline = time.monotonic() + timeout if timeout is not None else None
    with reporting_errors(), client(query_url=query_url) as loom:
        feed = loom.live(task_id=task, agent=agent, event_type=event_type, session_id=session, trace_id=trace)
        with feed:
            filters = ", ".join(f"{k}={'|'.join(v)}" for k, v in feed.filters.items()) or "every event"
            err.print(f"listening on {feed.url} for {filters} (Ctrl-C to stop)", style="dim", markup=False)
            try:
                while count is None or seen < count:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    try:
                        message = feed.receive(timeout=left)
                    except Timeout:
                        break
                    except Unavailable:
                        err.print("the live feed closed", style="yellow")
                        raise
                    if as_json:
                        _print_json(message)
                    else:
                        out.print(event_line(message), soft_wrap=True)
                    if not isinstance(message, Dropped):
                        seen += 1
            except KeyboardInterrupt:
                pass
    raise typer.Exit(EXIT_NOT_COMPLETED if count is not None and seen < count else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command()(tail)
