"""Rebuild a node's memory from ``memory.add`` / ``memory.consolidate`` events (pure, no I/O).

The workers keep one memory per session (``sessionid``, else the task id), in three tiers,
shared by every instance (a JetStream key-value bucket): tasks of one session on different
instances read and extend the same memory. ``memory.add`` carries the entry
(:class:`loom_protocol.MemoryAdded`); ``memory.consolidate``
(:class:`loom_protocol.MemoryConsolidated`) carries the ids the worker promoted to ``long_term``
and dropped from ``working``, and the tier sizes after the step.
Replaying them per session, in event order, applies exactly what the workers did;
the consolidation rule itself lives in the worker alone. ``consistent`` says whether the replay
had every event it needed: each note a consolidation names must have been added before (a
missing ``memory.add`` means events were lost: retention, a full event buffer in the worker).
The tier sizes a consolidation reports are the consolidating task's own view; tasks of one
session that run at the same time merge their writes afterwards, so the sizes are compared only
for consolidations stored without ids (which are replayed by their counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import MemoryAdded, MemoryConsolidated, MemoryTier
from pydantic import ValidationError

TIERS = tuple(tier.value for tier in MemoryTier)


@dataclass(frozen=True)
class MemoryEvent:
    event_id: str
    type: str  # memory.add | memory.consolidate
    time: str
    node_id: str
    instance_id: str | None
    session_id: str | None
    task_id: str | None
    data: Mapping[str, Any]

    @property
    def memory_key(self) -> str:
        return self.session_id or self.task_id or ""


@dataclass
class MemoryView:
    session_key: str
    instances: list[str] = field(default_factory=list)  # the instances that wrote to it
    tiers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in TIERS})
    consolidations: int = 0
    consistent: bool = True
    known: set[str] = field(default_factory=set)  # every entry id added so far


def replay(events: Iterable[MemoryEvent]) -> list[MemoryView]:
    """Replay memory events (in order) into one :class:`MemoryView` per session."""
    memories: dict[str, MemoryView] = {}
    for event in events:
        key = event.memory_key
        memory = memories.get(key)
        if memory is None:
            memory = memories[key] = MemoryView(session_key=key)
        if event.instance_id and event.instance_id not in memory.instances:
            memory.instances.append(event.instance_id)
        try:
            if event.type == MemoryAdded.TYPE:
                _add(memory, event, MemoryAdded.model_validate(event.data))
            elif event.type == MemoryConsolidated.TYPE:
                _consolidate(memory, MemoryConsolidated.model_validate(event.data))
        except ValidationError:
            memory.consistent = False  # an event this reader cannot apply
    return list(memories.values())


def _add(memory: MemoryView, event: MemoryEvent, data: MemoryAdded) -> None:
    tier = data.tier.value
    entry = {
        "entry_id": data.entry_id or event.event_id,
        "node_id": data.node_id or event.node_id,
        "tier": tier,
        "content": data.content,
        "importance": data.importance,
        "role": data.role or data.metadata.get("role") or "note",
        "metadata": data.metadata,
        "created_at": data.created_at or event.time,
        "session_id": event.session_id,
        "task_id": event.task_id,
        "instance_id": event.instance_id,
        "event_id": event.event_id,
    }
    memory.tiers.setdefault(tier, []).append(entry)
    memory.known.add(str(entry["entry_id"]))


def _consolidate(memory: MemoryView, data: MemoryConsolidated) -> None:
    memory.consolidations += 1
    named = [*(data.promoted_ids or ()), *(data.dropped_ids or ())]
    if any(entry_id not in memory.known for entry_id in named):
        memory.consistent = False  # a note it moved was never added here: events are missing
    tiers = data.apply(
        memory.tiers, lambda entry: entry["entry_id"], lambda entry: float(entry["importance"])
    )
    long_term = MemoryTier.LONG_TERM.value
    tiers[long_term] = [{**entry, "tier": long_term} for entry in tiers[long_term]]
    memory.tiers = tiers
    if not data.has_ids and not data.sizes_match(tiers):
        memory.consistent = False


def node_memory(node_id: str, memories: list[MemoryView]) -> dict[str, Any]:
    """The response of ``GET /api/memory/{node_id}``: the node's entries grouped by tier."""
    tiers: dict[str, list[dict[str, Any]]] = {tier: [] for tier in TIERS}
    sessions = []
    for memory in memories:
        mine = 0
        for tier, entries in memory.tiers.items():
            for entry in entries:
                if entry["node_id"] == node_id:
                    tiers.setdefault(tier, []).append(entry)
                    mine += 1
        sessions.append(
            {
                "session_id": memory.session_key or None,
                "instances": memory.instances,
                "entries": mine,
                "consolidations": memory.consolidations,
                "consistent": memory.consistent,
            }
        )
    for entries in tiers.values():
        entries.sort(key=lambda e: (str(e["created_at"]), e["event_id"]))
    return {
        "node_id": node_id,
        "tiers": tiers,
        "counts": {tier: len(entries) for tier, entries in tiers.items()},
        "memory": [entry for tier in tiers for entry in tiers[tier]],
        "sessions": sessions,
    }
