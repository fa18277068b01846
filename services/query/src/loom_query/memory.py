"""Rebuild a node's memory from ``memory.add`` / ``memory.consolidate`` events (pure, no I/O).

The worker keeps one memory per session (``sessionid``, else the task id) per worker instance,
in three tiers. ``memory.add`` carries the entry; ``memory.consolidate`` carries counts only:
``promoted`` session notes (those with importance >= the promotion threshold) moved to
``long_term``, and the ``dropped_working`` oldest working notes dropped. Replaying that per
(instance, session), in event order, gives the same tiers: the promoted notes are exactly the
``promoted`` most important session notes. The sizes the event reports after the step are
checked against the replay (``consistent``); a mismatch means events are missing (retention,
a full event buffer in the worker) or a worker that consolidates differently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TIERS = ("session", "working", "long_term")


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
    def memory_key(self) -> tuple[str, str]:
        return (self.instance_id or "", self.session_id or self.task_id or "")


@dataclass
class MemoryView:
    instance_id: str
    session_key: str
    tiers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in TIERS})
    consolidations: int = 0
    consistent: bool = True


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def replay(events: Iterable[MemoryEvent]) -> list[MemoryView]:
    """Replay memory events (in order) into one :class:`MemoryView` per (instance, session)."""
    memories: dict[tuple[str, str], MemoryView] = {}
    for event in events:
        key = event.memory_key
        memory = memories.get(key)
        if memory is None:
            memory = memories[key] = MemoryView(instance_id=key[0], session_key=key[1])
        if event.type == "memory.add":
            _add(memory, event)
        elif event.type == "memory.consolidate":
            _consolidate(memory, event.data)
    return list(memories.values())


def _add(memory: MemoryView, event: MemoryEvent) -> None:
    data = event.data
    raw_tier = data.get("tier")
    tier: str = raw_tier if isinstance(raw_tier, str) else "session"
    raw_metadata = data.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    entry = {
        "entry_id": data.get("entry_id") or data.get("entryId") or event.event_id,
        "node_id": data.get("node_id") or data.get("nodeId") or event.node_id,
        "tier": tier,
        "content": data.get("content") if isinstance(data.get("content"), str) else "",
        "importance": _number(data.get("importance"), 0.5),
        "role": data.get("role") or metadata.get("role") or "note",
        "metadata": metadata,
        "created_at": data.get("created_at") or data.get("createdAt") or event.time,
        "session_id": event.session_id,
        "task_id": event.task_id,
        "instance_id": event.instance_id,
        "event_id": event.event_id,
    }
    memory.tiers.setdefault(tier, []).append(entry)


def _consolidate(memory: MemoryView, data: Mapping[str, Any]) -> None:
    memory.consolidations += 1
    session = memory.tiers["session"]
    promoted = min(_count(data.get("promoted")), len(session))
    if promoted:
        ranked = sorted(range(len(session)), key=lambda i: (-session[i]["importance"], i))
        chosen = set(ranked[:promoted])
        moved = [{**session[i], "tier": "long_term"} for i in sorted(chosen)]
        memory.tiers["session"] = [entry for i, entry in enumerate(session) if i not in chosen]
        memory.tiers["long_term"].extend(moved)
    dropped = _count(data.get("dropped_working"))
    if dropped:
        memory.tiers["working"] = memory.tiers["working"][dropped:]
    for tier in TIERS:
        reported = data.get(tier)
        if (
            isinstance(reported, int)
            and not isinstance(reported, bool)
            and reported != len(memory.tiers[tier])
        ):
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
                "instance_id": memory.instance_id or None,
                "session_id": memory.session_key or None,
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
