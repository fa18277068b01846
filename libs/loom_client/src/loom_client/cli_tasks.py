"""``loom submit``, ``get``, ``cancel``, ``approve``, ``reject``, ``tasks`` and ``session``."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from . import cli_batch
from .cli_common import (
    JsonOpt,
    QueryUrlOpt,
    UrlOpt,
    client,
    err,
    out,
    parse_json_object,
    parse_params,
    print_json,
    read_source,
    reporting_errors,
    task_exit_code,
)
from .cli_render import session_view, task_view, tasks_table
from .client import LoomClient
from .errors import Timeout
from .models import StreamEnd, TaskPage

__all__ = ["register"]


class Via(StrEnum):
    """How ``loom submit`` sends the task."""

    rest = "rest"
    nats = "nats"


ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A parameter; repeatable. VALUE is JSON when it parses (5, true, [1,2], '\"5\"'), else text.",
    ),
]
WaitOpt = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0,
        metavar="SECONDS",
        help="Wait this long for the task to end; exit 0 only if it completed (1 otherwise).",
    ),
]


def _show(task_json: bool, loom_task: Any) -> None:
    if task_json:
        print_json(loom_task)
    else:
        out.print(task_view(loom_task))


def submit(
    agent: Annotated[
        str | None,
        typer.Argument(help="The agent to run the task (with --batch: the default for lines without one)."),
    ] = None,
    param: ParamOpt = None,
    json_params: Annotated[
        str | None,
        typer.Option(
            "--json-params", metavar="FILE|-", help="Parameters as a JSON object, from a file or stdin."
        ),
    ] = None,
    session: Annotated[str | None, typer.Option("--session", help="The session the task belongs to.")] = None,
    wait: WaitOpt = None,
    task_id: Annotated[str | None, typer.Option("--task-id", help="The task id (idempotency key).")] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", "-m", metavar="KEY=VALUE", help="Task metadata; repeatable, like --param."
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Submit with action 'stream' and print the answer as it comes.")
    ] = False,
    wait_for_agent: Annotated[
        bool, typer.Option("--wait-for-agent", help="Accept it for an agent no instance has named yet.")
    ] = False,
    via: Annotated[Via, typer.Option("--via", help="Submit over the REST API or NATS JetStream.")] = Via.rest,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            metavar="FILE.jsonl",
            help="Submit one task per line (a JSON object: targetAgent, parameters, ...; '-': stdin), "
            "with a progress bar and a summary by status.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=1000, help="With --batch: submissions in flight.")
    ] = 16,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Submit a task to an agent.

    Examples: loom submit calculator --param prompt="what is 6*7?" --wait 10;
    loom submit --batch tasks.jsonl --wait 60.
    """
    params = (
        parse_json_object(read_source(json_params, "--json-params"), "--json-params") if json_params else {}
    )
    params.update(parse_params(param))
    meta = parse_params(metadata) if metadata else None
    if batch is not None:
        cli_batch.run(
            batch,
            agent=agent,
            parameters=params,
            session=session,
            metadata=meta,
            wait=wait,
            concurrency=concurrency,
            as_json=as_json,
            url=url,
        )
        return
    if agent is None:
        raise typer.BadParameter("give the AGENT to run the task (or --batch FILE)", param_hint="AGENT")
    with reporting_errors(), client(url) as loom:
        task = loom.submit(
            agent,
            params,
            action="stream" if stream else None,
            task_id=task_id,
            session_id=session,
            metadata=meta,
            wait=None if stream else wait,
            wait_for_agent=wait_for_agent,
            via=via.value,
        )
        if stream:
            task = _follow_stream(loom, task.task_id, wait, quiet=as_json)
    _show(as_json, task)
    if wait is not None or stream:
        raise typer.Exit(task_exit_code(task))


def _follow_stream(loom: LoomClient, task_id: str, wait: float | None, *, quiet: bool) -> Any:
    """Print the task's answer as it is streamed (not with ``quiet``); returns the task at its end."""
    try:
        for item in loom.stream(task_id, timeout=wait if wait is not None else 60.0):
            if isinstance(item, StreamEnd):
                break
            if quiet:
                continue
            if item.discard:
                err.print("\n(the text above was not the answer)", style="dim")
            elif item.delta:
                sys.stdout.write(item.delta)
                sys.stdout.flush()
        if not quiet:
            sys.stdout.write("\n")
    except Timeout as exc:
        err.print(f"{exc}", style="yellow", markup=False)
    return loom.get(task_id)


def get(
    task_id: Annotated[str, typer.Argument(help="The task.")],
    wait: WaitOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Show a task as the dispatcher has it (with --wait: once it has ended)."""
    with reporting_errors(), client(url) as loom:
        if wait is None:
            _show(as_json, loom.get(task_id))
            return
        try:
            task = loom.wait(task_id, timeout=wait)
        except Timeout as exc:
            if exc.task is None:
                raise
            task = exc.task
            err.print(f"not ended after {wait:g} s", style="yellow")
    _show(as_json, task)
    raise typer.Exit(task_exit_code(task))


def cancel(
    task_id: Annotated[str, typer.Argument(help="The task.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Cancel a task and its unfinished children (exit 1 if it had already ended)."""
    with reporting_errors(), client(url) as loom:
        _show(as_json, loom.cancel(task_id))


def approve(
    task_id: Annotated[str, typer.Argument(help="A task waiting for approval (status input_required).")],
    arguments: Annotated[
        str | None,
        typer.Option(
            "--arguments", metavar="JSON", help="Run the call with these arguments instead (an object)."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who decides.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Approve the tool call a task waits on; it resumes and runs the call."""
    args = parse_json_object(arguments, "--arguments") if arguments is not None else None
    with reporting_errors(), client(url) as loom:
        _show(as_json, loom.approve(task_id, arguments=args, by=by, reason=reason))


def reject(
    task_id: Annotated[str, typer.Argument(help="A task waiting for approval (status input_required).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (the agent is told).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who decides.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Reject the tool call a task waits on; it resumes without running it."""
    with reporting_errors(), client(url) as loom:
        _show(as_json, loom.reject(task_id, by=by, reason=reason))


def tasks(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help="Only these statuses (repeatable, or a comma list)."),
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only tasks for this agent.")] = None,
    session: Annotated[str | None, typer.Option("--session", help="Only tasks of this session.")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Only children of this task.")] = None,
    text: Annotated[
        str | None, typer.Option("--text", "-q", help="Free text in parameters, result or error (3+ chars).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=10_000, help="Show at most N tasks.")
    ] = 20,
    as_json: JsonOpt = False,
    query_url: QueryUrlOpt = None,
) -> None:
    """List stored tasks, newest first (from the query service)."""
    filters: dict[str, Any] = {
        "status": status,
        "agent": agent,
        "session": session,
        "parent": parent,
        "text": text,
    }
    with reporting_errors(), client(query_url=query_url) as loom:
        first = loom.tasks(limit=min(limit, 200), **filters)
        found = list(first.tasks[:limit])
        cursor = first.next_cursor
        while cursor is not None and len(found) < limit:
            page = loom.tasks(limit=min(limit - len(found), 200), cursor=cursor, **filters)
            found.extend(page.tasks)
            cursor = page.next_cursor if page.tasks else None
    shown = TaskPage(tasks=found, next_cursor=cursor, counts=first.counts, total=first.total)
    if as_json:
        print_json(shown)
    else:
        out.print(tasks_table(found, shown))


def session(
    session_id: Annotated[str, typer.Argument(help="The session.")],
    as_json: JsonOpt = False,
    query_url: QueryUrlOpt = None,
) -> None:
    """Show a session's tasks with their LLM usage, and its totals."""
    with reporting_errors(), client(query_url=query_url) as loom:
        detail = loom.session(session_id)
    if as_json:
        print_json(detail)
    else:
        out.print(session_view(detail))


def register(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    app.command()(submit)
    app.command()(get)
    app.command()(cancel)
    app.command()(approve)
    app.command()(reject)
    app.command()(tasks)
    app.command()(session)
