"""The ``loom`` command: tasks, agents, the live feed, traces and replays from a terminal.

Each command lives in a ``cli_*`` module; :func:`main` is the console script. Run
``loom --help`` or ``loom COMMAND --help``. Exit codes are those of :mod:`loom_client.cli_common`.
"""

from __future__ import annotations

import typer

from . import cli_agents, cli_keys, cli_replay, cli_tail, cli_tasks, cli_trace

__all__ = ["app", "main"]

app = typer.Typer(
    name="loom",
    help="Loom from the command line: submit and follow tasks, list agents, tail events, trace and replay, "
    "manage API keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
cli_tasks.register(app)
cli_agents.register(app)
cli_tail.register(app)
cli_trace.register(app)
cli_replay.register(app)
cli_keys.register(app)


def main() -> None:
    """The console script ``loom``."""
    app()
