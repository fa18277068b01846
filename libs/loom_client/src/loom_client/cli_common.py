"""What every ``loom`` command shares: its options, the client it builds, the consoles it prints
on, how input is parsed, and how an error becomes an exit code.

Exit codes: 0 success (a task command: the task completed), 1 the task failed, is dead, was
cancelled or did not complete within ``--wait`` (also a conflict, and an API key refused: 401
without a valid ``LOOM_API_KEY``, 403 for a key without the scope), 2 usage error (also a
request the service refused as invalid), 3 not found, 4 a service unavailable.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from loom_protocol import LoomModel, Task, TaskStatus
from rich.console import Console

from .client import LoomClient
from .errors import Conflict, Forbidden, InvalidRequest, LoomError, NotFound, Unauthorized, Unavailable

__all__ = [
    "EXIT_NOT_COMPLETED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "JsonOpt",
    "QueryUrlOpt",
    "RegistryUrlOpt",
    "ReplayUrlOpt",
    "UrlOpt",
    "client",
    "err",
    "exit_for",
    "fail",
    "out",
    "parse_json_object",
    "parse_params",
    "print_json",
    "reporting_errors",
    "task_exit_code",
]

EXIT_OK = 0
EXIT_NOT_COMPLETED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4

out = Console(highlight=False)
"""Standard output (rich: colour on a terminal, plain text otherwise)."""

err = Console(stderr=True, highlight=False)
"""Standard error: errors and progress notes."""

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="The dispatcher's URL (env LOOM_DISPATCHER_URL, default http://127.0.0.1:8001)"
    ),
]
QueryUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--query-url", help="The query service's URL (env LOOM_QUERY_URL, default http://127.0.0.1:8004)"
    ),
]
RegistryUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--registry-url", help="The registry's URL (env LOOM_REGISTRY_URL, default http://127.0.0.1:8002)"
    ),
]
ReplayUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--replay-url", help="The replay service's URL (env LOOM_REPLAY_URL, default http://127.0.0.1:8005)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the JSON (camelCase wire form).")]


def client(
    url: str | None = None,
    *,
    query_url: str | None = None,
    registry_url: str | None = None,
    replay_url: str | None = None,
) -> LoomClient:
    """A client on the settings (``LOOM_*``, ``.env``) with the command's URL flags applied."""
    return LoomClient(url, query_url=query_url, registry_url=registry_url, replay_url=replay_url)


def exit_for(exc: LoomError) -> int:
    """The exit code of a failed call."""
    if isinstance(exc, Unauthorized | Forbidden):  # the message says which key to set
        return EXIT_NOT_COMPLETED
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, InvalidRequest):
        return EXIT_USAGE
    return EXIT_NOT_COMPLETED


def _describe(exc: LoomError) -> str:
    text = f"error: {exc}"
    if isinstance(exc, NotFound) and exc.suggestions and not any(n in exc.message for n in exc.suggestions):
        text += f" (did you mean: {', '.join(exc.suggestions)}?)"
    if isinstance(exc, InvalidRequest) and exc.fields:
        text += "".join(f"\n  {f.field}: {f.reason}" for f in exc.fields)
    if isinstance(exc, Conflict) and exc.details.get("differingFields"):
        text += f" (differing: {', '.join(map(str, exc.details['differingFields']))})"
    return text


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a :class:`LoomError` raised in the block into a message on stderr and its exit code."""
    try:
        yield
    except LoomError as exc:
        err.print(_describe(exc), style="red", markup=False)
        raise typer.Exit(exit_for(exc)) from None


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(message, style="red", markup=False)
    raise typer.Exit(code)


def task_exit_code(task: Task) -> int:
    """0 for a completed task, 1 for anything else (failed, dead, cancelled, not ended)."""
    return EXIT_OK if task.status == TaskStatus.COMPLETED else EXIT_NOT_COMPLETED


def print_json(value: LoomModel | list[Any] | dict[str, Any]) -> None:
    """Print ``value`` as JSON on stdout, nothing else (models in their camelCase wire form)."""
    if isinstance(value, LoomModel):
        data: Any = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    elif isinstance(value, list):
        data = [
            v.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(v, LoomModel) else v
            for v in value
        ]
    else:
        data = value
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def parse_value(text: str) -> Any:
    """A ``--param`` value: JSON when it parses (``5``, ``true``, ``[1,2]``, ``"5"``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict (values through :func:`parse_value`).

    Raises:
        typer.BadParameter: An item without ``=`` or with an empty key.
    """
    params: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        params[key.strip()] = parse_value(value)
    return params


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object given on the command line (or read from a file).

    Raises:
        typer.BadParameter: Not JSON, or not an object.
    """
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object", param_hint=what)
    return value


def read_source(source: str, what: str) -> str:
    """The text of a file, or of standard input for ``-``.

    Raises:
        typer.BadParameter: The file cannot be read.
    """
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {source}: {exc.strerror or exc}", param_hint=what) from None
