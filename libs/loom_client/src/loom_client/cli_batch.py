"""``loom submit --batch FILE.jsonl``: many tasks at once, with a progress bar and a summary.

Each non-empty line of the file (``#`` lines are comments) is a JSON object in the form of the
dispatcher's submission body (``targetAgent``, ``parameters``, ``sessionId``, ``metadata``,
``taskId``...); the command's AGENT, ``--param``, ``--session`` and ``--metadata`` fill in what
a line leaves out. Every line is checked before anything is sent. The tasks are submitted by
an :class:`~loom_client.AsyncLoomClient`, ``--concurrency`` at a time (each waiting up to
``--wait`` s for its end), then a table counts them by status. A submission refused for its API
key (401, 403) stops the batch: the others would be refused alike.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from loom_protocol import Task, TaskStatus, TaskSubmission
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .aio import AsyncLoomClient
from .cli_common import (
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    err,
    fail,
    out,
    print_json,
    read_source,
    reporting_errors,
)
from .cli_render import STATUS_STYLES
from .errors import Forbidden, LoomError, Unauthorized, Unavailable

__all__ = ["Outcome", "read_batch", "run", "summary_table"]

MAX_REPORTED_LINES = 10

Outcome = Task | LoomError
"""What became of one line: the task, or the error its submission raised."""


def _line_problem(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors())


def read_batch(
    text: str,
    *,
    agent: str | None,
    parameters: Mapping[str, Any],
    session: str | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[list[TaskSubmission], list[str]]:
    """The submissions of a batch file, and what is wrong with its bad lines ("line N: why").

    Args:
        text: The file's text (JSON Lines).
        agent: The agent of lines that name none.
        parameters: Parameters under each line's own.
        session: The session of lines that name none.
        metadata: Metadata under each line's own.
    """
    submissions: list[TaskSubmission] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not valid JSON ({exc})")
            continue
        if not isinstance(raw, dict):
            problems.append(f"line {number}: expected a JSON object")
            continue
        fields: dict[str, Any] = {}
        if agent is not None:
            fields["targetAgent"] = agent
        if session is not None:
            fields["sessionId"] = session
        fields.update(raw)
        own = raw.get("parameters")
        fields["parameters"] = {**parameters, **(own if isinstance(own, dict) else {})}
        if metadata is not None:
            own_meta = raw.get("metadata")
            fields["metadata"] = {**metadata, **(own_meta if isinstance(own_meta, dict) else {})}
        try:
            submissions.append(TaskSubmission.model_validate(fields))
        except ValidationError as exc:
            problems.append(f"line {number}: {_line_problem(exc)}")
    return submissions, problems


def _label(outcome: Outcome) -> str:
    if isinstance(outcome, Task):
        return outcome.status.value
    return f"error: {outcome.code}"


async def _submit_all(
    submissions: list[TaskSubmission],
    *,
    wait: float | None,
    concurrency: int,
    url: str | None,
    progress: Progress | None,
) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(submissions)
    counts: collections.Counter[str] = collections.Counter()
    bar = progress.add_task("submitting", total=len(submissions), counts="") if progress is not None else None
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(submissions)):
        queue.put_nowait(index)

    refused: list[LoomError] = []  # a 401 or 403: every other submission would be refused too

    async with AsyncLoomClient(url, max_connections=concurrency) as loom:

        async def worker() -> None:
            while not queue.empty() and not refused:
                index = queue.get_nowait()
                outcome: Outcome
                try:
                    outcome = await loom.submit(submissions[index], wait=wait)
                except (Unauthorized, Forbidden) as exc:
                    refused.append(exc)
                    return
                except LoomError as exc:
                    outcome = exc
                outcomes[index] = outcome
                counts[_label(outcome)] += 1
                if progress is not None and bar is not None:
                    shown = "  ".join(f"{name} {n}" for name, n in sorted(counts.items()))
                    progress.update(bar, advance=1, counts=shown)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(submissions)))))
    if refused:
        raise refused[0]
    return [o for o in outcomes if o is not None]


def summary_table(outcomes: list[Outcome]) -> Table:
    """The outcomes counted by status (and by error code for submissions that failed)."""
    counts = collections.Counter(_label(o) for o in outcomes)
    table = Table(title=f"batch: {len(outcomes)} tasks", title_justify="left")
    table.add_column("status")
    table.add_column("tasks", justify="right")
    table.add_column("share", justify="right")
    for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        style = STATUS_STYLES.get(name, "red" if name.startswith("error") else "")
        table.add_row(f"[{style}]{name}[/]" if style else name, str(n), f"{100 * n / len(outcomes):.0f}%")
    return table


def _exit_code(outcomes: list[Outcome], waited: bool) -> int:
    errors = [o for o in outcomes if isinstance(o, LoomError)]
    if errors and len(errors) == len(outcomes) and all(isinstance(e, Unavailable) for e in errors):
        return EXIT_UNAVAILABLE
    if errors:
        return EXIT_NOT_COMPLETED
    if waited and any(isinstance(o, Task) and o.status != TaskStatus.COMPLETED for o in outcomes):
        return EXIT_NOT_COMPLETED
    return EXIT_OK


def run(
    path: Path,
    *,
    agent: str | None,
    parameters: Mapping[str, Any],
    session: str | None,
    metadata: Mapping[str, Any] | None,
    wait: float | None,
    concurrency: int,
    as_json: bool,
    url: str | None,
) -> None:
    """Submit the batch in ``path`` ('-': stdin) and exit with its code: 0 when every task was
    accepted (with ``wait``: completed), 1 otherwise (also when the API key was refused), 2 for a bad
    file, 4 when nothing could be sent."""
    text = read_source(str(path), "--batch")
    submissions, problems = read_batch(
        text, agent=agent, parameters=parameters, session=session, metadata=metadata
    )
    if problems:
        more = len(problems) - MAX_REPORTED_LINES
        fail("\n".join(problems[:MAX_REPORTED_LINES]) + (f"\n… and {more} more" if more > 0 else ""))
    if not submissions:
        fail(f"{path}: no task in the file")
    progress = None
    if not as_json:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=err,
            transient=False,
        )
    try:
        with reporting_errors():  # a 401 or 403 stops the batch: one line, exit 1
            if progress is not None:
                with progress:
                    outcomes = asyncio.run(
                        _submit_all(
                            submissions, wait=wait, concurrency=concurrency, url=url, progress=progress
                        )
                    )
            else:
                outcomes = asyncio.run(
                    _submit_all(submissions, wait=wait, concurrency=concurrency, url=url, progress=None)
                )
    except KeyboardInterrupt:
        fail("interrupted", EXIT_NOT_COMPLETED)
    if as_json:
        for outcome in outcomes:
            if isinstance(outcome, Task):
                print_json(outcome)
            else:
                print_json({"error": {"code": outcome.code, "message": outcome.message}})
    else:
        out.print(summary_table(outcomes))
    sys.stdout.flush()
    raise typer.Exit(_exit_code(outcomes, wait is not None))
