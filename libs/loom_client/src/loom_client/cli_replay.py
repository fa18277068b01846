"""``loom replay TASK_ID``: step through a task's recorded events, interactively.

A replay session is created on the replay service; then each command moves its cursor:
``s`` / ``step`` / Enter (one event forward), ``b`` / ``back`` (one backward), ``j N`` /
``jump N`` (to event N, counted from 1 as shown), ``q`` / ``quit`` (or end of input). Each move
prints the event at the cursor (and, with ``--state``, the state rebuilt up to it).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.json import JSON
from rich.text import Text

from .cli_common import ReplayUrlOpt, client, err, out, reporting_errors
from .cli_render import event_line
from .client import LoomClient
from .errors import Conflict, InvalidRequest, LoomError
from .models import ReplayFrame

__all__ = ["register"]

HELP = "commands: [s]tep (or Enter), [b]ack, [j]ump N, [q]uit"


class StateScope(StrEnum):
    """What rebuilt state ``loom replay`` prints with each event."""

    none = "none"
    task = "task"
    full = "full"


def _show(frame: ReplayFrame, scope: StateScope) -> None:
    position = Text(f"[{frame.index + 1}/{frame.total}] ", style="bold")
    event = frame.cloud_event
    if event is None:
        out.print(position + Text(str(frame.event.get("type", "?"))))
    else:
        out.print(position + event_line(event), soft_wrap=True)
    if scope is not StateScope.none and frame.state is not None:
        out.print(JSON.from_data(frame.state, default=str))


def _move(loom: LoomClient, session_id: str, command: str, scope: StateScope) -> ReplayFrame | None:
    """Run one command; None for a command that moves nothing."""
    verb, _, rest = command.strip().partition(" ")
    verb = verb.lower()
    if verb in ("", "s", "step", "n", "next"):
        return loom.replay_step(session_id, "forward", state=scope.value)
    if verb in ("b", "back", "p", "prev"):
        return loom.replay_step(session_id, "backward", state=scope.value)
    if verb in ("j", "jump"):
        try:
            number = int(rest.strip())
        except ValueError:
            err.print("jump takes an event number, e.g. 'j 3'", style="yellow")
            return None
        return loom.replay_jump(session_id, number - 1, state=scope.value)
    err.print(HELP, style="yellow", markup=False)
    return None


def replay(
    task_id: Annotated[str, typer.Argument(help="The task whose recorded events to step through.")],
    state: Annotated[
        StateScope,
        typer.Option("--state", help="Print the rebuilt state with each event: none, task or full."),
    ] = StateScope.none,
    replay_url: ReplayUrlOpt = None,
) -> None:
    """Step through a task's recorded events: step, back, jump N, quit."""
    with reporting_errors(), client(replay_url=replay_url) as loom:
        session = loom.create_replay(task_id=task_id)
        out.print(f"replay of task {task_id}: {session.total} events. {HELP}", markup=False)
        try:
            while True:
                try:
                    command = out.input("replay> ")
                except EOFError:
                    break
                if command.strip().lower() in ("q", "quit", "exit"):
                    break
                try:
                    frame = _move(loom, session.session_id, command, state)
                except (Conflict, InvalidRequest) as exc:
                    err.print(exc.message, style="yellow", markup=False)
                    continue
                if frame is not None:
                    _show(frame, state)
        finally:
            try:
                loom.delete_replay(session.session_id)
            except LoomError:
                pass


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command()(replay)
