"""Accounting: every task the harness tried to submit ends in exactly one bucket.

Buckets: ``completed``, ``failed``, ``dead``, ``cancelled`` (the dispatcher's final word),
``rejected`` (the submission itself failed and no outcome was ever seen) and ``missing``
(accepted, but no final outcome within the grace period). Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("completed", "failed", "dead", "cancelled")
BUCKETS = (*TERMINAL, "rejected", "missing")


@dataclass
class Entry:
    task_id: str
    submit_error: str | None = None
    outcome: str | None = None  # one of TERMINAL once known
    outcome_via: str | None = None  # "nats" (final status message), "rest" (response), "lookup"
    late_status: str | None = None  # non-terminal status found by a lookup after the grace period


@dataclass
class Ledger:
    """What happened to each task of one phase."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def submitted(self, task_id: str) -> None:
        if task_id in self.entries:
            raise ValueError(f"task {task_id!r} submitted twice")
        self.entries[task_id] = Entry(task_id)

    def submit_failed(self, task_id: str, reason: str) -> None:
        self.entries.setdefault(task_id, Entry(task_id)).submit_error = reason

    def finished(self, task_id: str, status: str, via: str) -> bool:
        """Record a terminal outcome; the first one wins. False when not ours or not terminal."""
        entry = self.entries.get(task_id)
        if entry is None or status not in TERMINAL:
            return False
        if entry.outcome is None:
            entry.outcome = status
            entry.outcome_via = via
        return True

    def looked_up(self, task_id: str, status: str | None) -> None:
        """The state a lookup (GET /api/tasks/{id}) found for a task still open after the grace period."""
        entry = self.entries.get(task_id)
        if entry is None or entry.outcome is not None:
            return
        if status in TERMINAL:
            entry.outcome = status
            entry.outcome_via = "lookup"
        else:
            entry.late_status = status or "unknown to the dispatcher"

    def open_ids(self) -> list[str]:
        """Tasks without a terminal outcome (submitted ones and those whose submission failed)."""
        return [e.task_id for e in self.entries.values() if e.outcome is None]

    def pending_ids(self) -> list[str]:
        """Accepted tasks (no submit error) still without an outcome."""
        return [e.task_id for e in self.entries.values() if e.outcome is None and e.submit_error is None]

    def bucket_of(self, entry: Entry) -> str:
        if entry.outcome is not None:
            return entry.outcome
        if entry.submit_error is not None:
            return "rejected"
        return "missing"

    def accounting(self) -> dict[str, Any]:
        """Counts per bucket (every bucket present), their sum, and the detail of the non-completed."""
        counts = Counter(self.bucket_of(e) for e in self.entries.values())
        out: dict[str, Any] = {b: counts.get(b, 0) for b in BUCKETS}
        out["total"] = len(self.entries)
        out["lost"] = out["missing"]
        out["seen_only_by_lookup"] = sum(1 for e in self.entries.values() if e.outcome_via == "lookup")
        errors = Counter(e.submit_error for e in self.entries.values() if e.submit_error)
        if errors:
            out["submit_errors"] = dict(errors.most_common(5))
        late = Counter(e.late_status for e in self.entries.values() if e.outcome is None and e.late_status)
        if late:
            out["missing_by_status"] = dict(late)
        return out

    @property
    def all_accounted(self) -> bool:
        return bool(sum(self.accounting()[b] for b in BUCKETS) == len(self.entries))


def merge_accounting(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The accounting of one phase run by several client processes: counts summed, the detail of
    the non-completed (submit errors, statuses of the missing) merged; as :meth:`Ledger.accounting`."""
    out: dict[str, Any] = {b: 0 for b in BUCKETS}
    out.update(total=0, lost=0, seen_only_by_lookup=0)
    errors: Counter[str] = Counter()
    late: Counter[str] = Counter()
    for part in parts:
        for key in (*BUCKETS, "total", "lost", "seen_only_by_lookup"):
            out[key] += int(part.get(key, 0))
        errors.update(part.get("submit_errors") or {})
        late.update(part.get("missing_by_status") or {})
    if errors:
        out["submit_errors"] = dict(errors.most_common(5))
    if late:
        out["missing_by_status"] = dict(late)
    return out


def unreported(tasks: int, reason: str) -> dict[str, Any]:
    """The accounting of ``tasks`` a client process was given and never reported on: all missing."""
    out: dict[str, Any] = {b: 0 for b in BUCKETS}
    out.update(missing=tasks, total=tasks, lost=tasks, seen_only_by_lookup=0)
    if tasks:
        out["missing_by_status"] = {reason: tasks}
    return out
