"""A batch's updates of one task folded into one before they reach the ``tasks`` table.

Under load a task's submission, assignment and final status often arrive in the same batch.
Upserted one by one, each is a new row version of ``tasks`` with an entry in every one of its
indexes (its status and times are indexed, so no update is HOT); folded, the batch writes the
task once. :func:`merge` is the table's ``ON CONFLICT DO UPDATE`` (``store._UPSERT_TASK``)
written in Python, field for field: applying the fold of a batch's rows to the stored row gives
what applying them one after the other gives, because every field's rule is associative (the
first or last non-null value, the earliest time, the longest approvals list, the sticky
``final``, and the status fields of the row that wins by :func:`wins`, a total order with ties
to the later row) -- with two exceptions, handled by not folding that task: the winner's
``attempt`` and ``instance_id`` keep the previous value where the winner has none, so a winner
without them would take them from a batch row the stored row may have beaten; and
``finished_at`` is the time of the last terminal row that won, which a non-terminal winner
(a ``final`` one) does not say. ``test_ingest_db.py`` checks the equivalence against the
database on random sequences.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loom_protocol import is_terminal

from .rows import TASK_COLUMNS, TaskRow

_I = {name: i for i, name in enumerate(TASK_COLUMNS)}
_STATUS, _FINAL, _ATTEMPT, _INSTANCE = _I["status"], _I["final"], _I["attempt"], _I["instance_id"]
_UPDATED, _CREATED, _APPROVALS = _I["updated_at"], _I["created_at"], _I["approvals"]
_METADATA = _I["metadata"]
_FIRST_SEEN = tuple(
    _I[c]
    for c in (
        "target_agent",
        "source_agent",
        "action",
        "parent_task_id",
        "session_id",
        "trace_id",
        "parameters",
        "cancel_requested_at",
    )
)
_WINNER = tuple(_I[c] for c in ("status", "result", "error", "pending_approval", "updated_at"))
_WINNER_OR_KEPT = (_ATTEMPT, _INSTANCE)  # the winner's, else the value before it


def _terminal(status: str | None) -> bool:
    """``loom_is_terminal`` (a null status is not terminal)."""
    return status is not None and is_terminal(status)


def wins(cur: TaskRow, new: TaskRow) -> bool:
    """``loom_task_wins``: does ``new``'s status replace ``cur``'s."""
    if new[_STATUS] is None:
        return False
    if cur[_STATUS] is None:
        return True
    if new[_FINAL] and not cur[_FINAL]:
        return True
    if cur[_FINAL] and not new[_FINAL]:
        return False
    if _terminal(cur[_STATUS]) and not _terminal(new[_STATUS]):
        return False
    if _terminal(new[_STATUS]) and not _terminal(cur[_STATUS]):
        return True
    return bool(new[_UPDATED] >= cur[_UPDATED])


def _longer_approvals(cur: str | None, new: str | None) -> str | None:
    if cur is None:
        return new
    if new is None or new == cur:
        return cur
    return new if len(json.loads(new)) >= len(json.loads(cur)) else cur


def merge(cur: TaskRow, new: TaskRow) -> tuple[TaskRow, bool]:
    """The row ``_UPSERT_TASK`` leaves when ``new`` arrives on ``cur``, and whether ``new`` won."""
    row: list[Any] = list(cur)
    for i in _FIRST_SEEN:
        if row[i] is None:
            row[i] = new[i]
    if new[_METADATA] is not None:
        row[_METADATA] = new[_METADATA]
    if cur[_CREATED] is None or (new[_CREATED] is not None and new[_CREATED] < cur[_CREATED]):
        row[_CREATED] = new[_CREATED]
    won = wins(cur, new)
    row[_FINAL] = bool(cur[_FINAL]) or (won and bool(new[_FINAL]))
    if won:
        for i in _WINNER:
            row[i] = new[i]
        for i in _WINNER_OR_KEPT:
            if new[i] is not None:
                row[i] = new[i]
    row[_APPROVALS] = _longer_approvals(cur[_APPROVALS], new[_APPROVALS])
    return tuple(row), won


def fold(rows: Sequence[TaskRow]) -> list[TaskRow]:
    """The batch's task rows with each task's rows folded into one where that is exact.

    A task keeps its rows as they came where folding would not be exact (see the module's note):
    its winner lacks an ``attempt`` or ``instance_id``, or is not terminal while one of its rows
    is. The order of one task's rows is kept.
    """
    by_task: dict[str, list[TaskRow]] = {}
    for row in rows:
        by_task.setdefault(row[0], []).append(row)
    out: list[TaskRow] = []
    for same in by_task.values():
        if len(same) == 1:
            out.append(same[0])
            continue
        acc, winner = same[0], same[0]
        for row in same[1:]:
            acc, won = merge(acc, row)
            if won:
                winner = row
        if (
            winner[_ATTEMPT] is None
            or winner[_INSTANCE] is None
            or (not _terminal(winner[_STATUS]) and any(_terminal(r[_STATUS]) for r in same))
        ):
            out.extend(same)
        else:
            out.append(acc)
    return out
