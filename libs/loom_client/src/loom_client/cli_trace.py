"""``loom trace TASK_ID``: the task and its child tasks as a tree of steps, with tokens, cost and
durations, from the events the query service stored."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from loom_protocol import TERMINAL_TASK_EVENT_TYPES

from .cli_common import JsonOpt, QueryUrlOpt, client, err, out, print_json, reporting_errors
from .cli_render import trace_tree
from .client import LoomClient
from .errors import NotFound

__all__ = ["register", "wait_stored"]

POLL_S = 0.2


def wait_stored(loom: LoomClient, task_id: str, timeout: float) -> bool:
    """Wait until the query service has stored the task's end (its terminal ``task.*`` event).

    Returns:
        True once stored; False when ``timeout`` ran out first.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            detail = loom.task_detail(task_id)
            if any(event.type in TERMINAL_TASK_EVENT_TYPES for event in detail.events):
                return True
        except NotFound:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_S, left))


def trace(
    task_id: Annotated[str, typer.Argument(help="The root task.")],
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait", min=0, metavar="SECONDS", help="First wait this long for the task's end to be stored."
        ),
    ] = None,
    as_json: JsonOpt = False,
    query_url: QueryUrlOpt = None,
) -> None:
    """Show a task, its steps and its child tasks as a tree (tokens, cost, durations)."""
    with reporting_errors(), client(query_url=query_url) as loom:
        if wait is not None and not wait_stored(loom, task_id, wait):
            err.print(f"the end of {task_id} is not stored after {wait:g} s; showing what is", style="yellow")
        node = loom.trace(task_id)
    if as_json:
        print_json(node)
    else:
        out.print(trace_tree(node))


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command()(trace)
