"""What a chaos case checks, read from the broker and the database only (never from the
dispatcher's own bookkeeping): tasks terminal (ingest's ``tasks`` table), executions to
completion (``agent.answer`` rows per task), and every message the broker accepted on
``LOOM_EVENTS`` and ``LOOM_TASKS`` stored exactly once (stream messages vs rows by id)."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import MSG_ID_HEADER
from nats.js.api import DeliverPolicy

from tests.integration.events_support import fetch

AUDITED_STREAMS = {"LOOM_EVENTS": "loom.event.>", "LOOM_TASKS": "loom.task.>"}
TERMINAL = ("completed", "failed", "cancelled", "dead")


async def stream_message_count(js: Any) -> int:
    total = 0
    for name in AUDITED_STREAMS:
        total += int((await js.stream_info(name)).state.messages)
    return total


async def stream_ids(js: Any) -> list[str]:
    """The id of every message the audited streams hold (``Nats-Msg-Id``, else the CloudEvent id)."""
    ids: list[str] = []
    for name, subject in AUDITED_STREAMS.items():
        expected = int((await js.stream_info(name)).state.messages)
        sub = await js.subscribe(
            subject, stream=name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            for _ in range(expected):
                msg = await sub.next_msg(timeout=10)
                ids.append(_stored_id(name, msg))
        finally:
            await sub.unsubscribe()
    return ids


def _stored_id(stream: str, msg: Any) -> str:
    """The id ingest stores a message under: an event's CloudEvent id; a task message's
    ``Nats-Msg-Id``, or ``<stream>:<sequence>`` for one published without (a core NATS notice)."""
    if stream == "LOOM_EVENTS":
        return str(json.loads(msg.data)["id"])
    return (msg.headers or {}).get(MSG_ID_HEADER) or f"{stream}:{msg.metadata.sequence.stream}"


async def row_count(database_url: str) -> int:
    rows = await fetch(database_url, "SELECT count(*) AS n FROM events WHERE kind IN ('event', 'task')")
    return int(rows[0]["n"])


@dataclass
class CaseFigures:
    """One fault's row of the table."""

    fault: str
    tasks: int = 0
    terminal: int = 0
    completed: int = 0
    reattempted: int = 0
    executed_twice: int = 0
    events_missing: int = 0
    events_duplicated: int = 0
    executions_without_events: int = 0
    stream_messages: int = 0
    not_terminal: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    without_events: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.terminal == self.tasks
            and not self.executed_twice
            and not self.events_missing
            and not self.events_duplicated
            and not self.executions_without_events
        )


async def terminal_count(database_url: str, task_ids: list[str]) -> int:
    rows = await fetch(
        database_url,
        "SELECT count(*) AS n FROM tasks WHERE task_id = ANY($1) AND final AND status = ANY($2)",
        task_ids,
        list(TERMINAL),
    )
    return int(rows[0]["n"])


async def audit(fault: str, js: Any, database_url: str, task_ids: list[str]) -> CaseFigures:
    figures = CaseFigures(fault, tasks=len(task_ids))
    tasks = await fetch(
        database_url,
        "SELECT task_id, status, final, instance_id, attempt FROM tasks WHERE task_id = ANY($1)",
        task_ids,
    )
    by_task = {r["task_id"]: r for r in tasks}
    ended = {t for t, r in by_task.items() if r["final"] and r["status"] in TERMINAL}
    figures.terminal = len(ended)
    figures.not_terminal = sorted(set(task_ids) - ended)
    completed = {t: r["instance_id"] for t, r in by_task.items() if r["final"] and r["status"] == "completed"}
    figures.completed = len(completed)
    figures.reattempted = sum(1 for r in by_task.values() if (r["attempt"] or 0) > 1)

    answers = await fetch(
        database_url,
        "SELECT task_id, instance_id FROM events WHERE kind = 'event' AND type = 'agent.answer' "
        "AND task_id = ANY($1)",
        task_ids,
    )
    per_task = collections.Counter(r["task_id"] for r in answers)
    figures.twice = sorted(t for t, n in per_task.items() if n > 1)
    figures.executed_twice = len(figures.twice)
    # the answer of a task's one execution, from whichever attempt ran its last step: an attempt
    # that resumed from the journal after an earlier one answered restores that step and does
    # not emit its answer again, so the task's final instance need not be the one that answered
    figures.without_events = sorted(t for t in completed if t not in per_task)
    figures.executions_without_events = len(figures.without_events)

    in_stream = await stream_ids(js)
    figures.stream_messages = len(in_stream)
    rows = await fetch(
        database_url, "SELECT id, count(*) AS n FROM events WHERE kind IN ('event', 'task') GROUP BY id"
    )
    stored = {r["id"]: int(r["n"]) for r in rows}
    figures.missing_ids = sorted(set(in_stream) - set(stored))
    figures.events_missing = len(figures.missing_ids)
    figures.events_duplicated = sum(n - 1 for n in stored.values() if n > 1)
    return figures


def table(rows: list[CaseFigures]) -> str:
    head = (
        f"{'fault':<12} {'tasks':>5} {'terminal':>8} {'completed':>9} {'attempt>1':>9} {'exec twice':>10} "
        f"{'ev missing':>10} {'ev dup':>6} {'exec w/o ev':>11} {'stream msgs':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.fault:<12} {r.tasks:>5} {r.terminal:>8} {r.completed:>9} {r.reattempted:>9} "
            f"{r.executed_twice:>10} "
            f"{r.events_missing:>10} {r.events_duplicated:>6} {r.executions_without_events:>11} "
            f"{r.stream_messages:>11}"
        )
    return "\n".join(lines)
