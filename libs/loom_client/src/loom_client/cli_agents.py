"""``loom agents``: the agents the registry knows, with their live instances."""

from __future__ import annotations

import typer

from .cli_common import JsonOpt, RegistryUrlOpt, client, out, print_json, reporting_errors
from .cli_render import agents_table

__all__ = ["register"]


def agents(as_json: JsonOpt = False, registry_url: RegistryUrlOpt = None) -> None:
    """List the agents with a live instance, their instances, load and tools."""
    with reporting_errors(), client(registry_url=registry_url) as loom:
        found = loom.agents()
    if as_json:
        print_json(list(found))
    else:
        out.print(agents_table(found))


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command()(agents)
