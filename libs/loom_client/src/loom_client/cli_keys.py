"""``loom keys create|list|revoke``: the API keys stored by the dispatcher (the caller's own key,
``LOOM_API_KEY``, needs the ``admin`` scope).

``loom keys create NAME --scope read --scope submit`` prints the new key alone on stdout (so
``KEY=$(loom keys create ci --scope read)`` works) and, on stderr, its record and a warning: the
key is shown this once, only its SHA-256 is stored. ``--json`` prints the whole answer instead.
"""

from __future__ import annotations

from typing import Annotated

import typer
from loom_protocol import Scope

from .cli_common import JsonOpt, UrlOpt, client, err, out, print_json, reporting_errors
from .cli_render import keys_table

__all__ = ["register"]

keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (needs an admin key in LOOM_API_KEY).",
    no_args_is_help=True,
)

NOT_SHOWN_AGAIN = "store this key now: it is not shown again (only its SHA-256 is kept)"


@keys_app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(help="What the key is for, e.g. ci (letters, digits and . _ - : @ / + =).")
    ],
    scope: Annotated[
        list[Scope],
        typer.Option(
            "--scope",
            "-s",
            help="What the key may do; repeatable: read, submit, approve, ingest, admin.",
            show_default=False,
        ),
    ],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Create an API key and print it (shown only this once)."""
    with reporting_errors(), client(url) as loom:
        created = loom.create_key(name, scope)
    if as_json:
        print_json(created)
    else:
        record = created.record
        scopes = ", ".join(s.value for s in record.scopes)
        err.print(f"API key {record.id} '{record.name}' ({scopes})", markup=False)
        out.print(created.key, markup=False, soft_wrap=True)
    err.print(f"warning: {NOT_SHOWN_AGAIN}", style="yellow", markup=False)


@keys_app.command("list")
def list_(as_json: JsonOpt = False, url: UrlOpt = None) -> None:
    """List the stored API keys: id, name, scopes, created, hint (never the keys)."""
    with reporting_errors(), client(url) as loom:
        found = loom.list_keys()
    if as_json:
        print_json(list(found))
    else:
        out.print(keys_table(found))


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as 'loom keys list' shows it.")],
    url: UrlOpt = None,
) -> None:
    """Revoke an API key: every service refuses it within a few seconds."""
    with reporting_errors(), client(url) as loom:
        loom.revoke_key(key_id)
    err.print(f"revoked API key {key_id}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``loom keys`` to ``app``."""
    app.add_typer(keys_app)
