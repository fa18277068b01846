from __future__ import annotations

import random

from loom_agent_worker.runtime import ChatMessage, MemoryStore, SessionMemory
from loom_agent_worker.runtime.memory import SessionSnapshot
from loom_protocol import EventPayload, MemoryAdded, MemoryConsolidated, MemoryTier


class ListSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit(self, payload: EventPayload, *, subject=None) -> None:
        self.events.append((payload.TYPE, payload.to_data()))


def test_add_note_stores_the_entry_and_emits_memory_add() -> None:
    sink = ListSink()
    memory = SessionMemory("s-1")
    entry = memory.add_note(
        "likes tea", node_id="concierge", tier=MemoryTier.WORKING, importance=0.4, events=sink
    )
    assert memory.notes(MemoryTier.WORKING) == [entry]
    assert memory.notes(MemoryTier.SESSION) == []
    ((event_type, data),) = sink.events
    assert event_type == "memory.add"
    assert data["entry_id"] == entry.entry_id
    assert (data["node_id"], data["tier"], data["content"], data["importance"]) == (
        "concierge",
        "working",
        "likes tea",
        0.4,
    )
    assert data["role"] == "note"
    assert data["metadata"] == {"role": "note"}


def test_consolidate_promotes_important_session_notes_and_compresses_working_memory() -> None:
    sink = ListSink()
    memory = SessionMemory("s-1", keep_working=2, promotion_threshold=0.7)
    for content, importance in [("minor", 0.2), ("key fact", 0.9), ("borderline", 0.7)]:
        memory.add_note(content, node_id="a", importance=importance)
    for index in range(5):
        memory.add_note(f"observation {index}", node_id="a", tier=MemoryTier.WORKING)

    report = memory.consolidate(events=sink)

    assert [n.content for n in memory.notes(MemoryTier.SESSION)] == ["minor"]
    long_term = memory.notes(MemoryTier.LONG_TERM)
    assert [n.content for n in long_term] == ["key fact", "borderline"]
    assert all(n.tier is MemoryTier.LONG_TERM for n in long_term)
    assert [n.content for n in memory.notes(MemoryTier.WORKING)] == ["observation 3", "observation 4"]
    assert (report.promoted, report.dropped_working) == (2, 3)
    assert (report.session, report.working, report.long_term) == (1, 2, 2)
    assert list(report.promoted_ids) == [n.entry_id for n in long_term]
    ((event_type, data),) = sink.events
    assert event_type == "memory.consolidate"
    assert data == {
        "promoted_ids": list(report.promoted_ids),
        "dropped_ids": list(report.dropped_ids),
        "promoted": 2,
        "dropped_working": 3,
        "session": 1,
        "working": 2,
        "long_term": 2,
        "threshold": 0.7,
        "keep_working": 2,
    }
    # Nothing left to do the second time.
    again = memory.consolidate()
    assert (again.promoted_ids, again.dropped_ids, again.long_term) == ((), (), 2)


def test_messages_and_notes_are_bounded() -> None:
    memory = SessionMemory("s-1", max_messages=3, max_notes_per_tier=2)
    for index in range(5):
        memory.add_message(ChatMessage(role="user", content=str(index)))
        memory.add_note(str(index), node_id="a")
    assert [m.content for m in memory.messages] == ["2", "3", "4"]
    assert [n.content for n in memory.notes()] == ["3", "4"]


def test_store_keeps_the_most_recently_used_sessions(new_task) -> None:
    store = MemoryStore(max_sessions=2, keep_working=7)
    a = store.session("a")
    store.session("b")
    assert store.session("a") is a  # touch a: b is now the least recently used
    store.session("c")
    assert "b" not in store and "a" in store and "c" in store
    assert len(store) == 2
    assert a.keep_working == 7
    task = new_task("echo")
    assert store.for_task(task).session_id == task.task_id
    assert store.for_task(new_task("echo", session_id="c")) is store.session("c")
    store.drop("c")
    assert "c" not in store


def _apply_events(events: list[tuple[str, dict]], missing: set[str] = frozenset()) -> dict[str, list[str]]:
    """What a reader (query's memory view, replay's fold) rebuilds from the events: the
    ``memory.add`` entries, with each ``memory.consolidate`` applied by the protocol."""
    tiers: dict[str, list[dict]] = {tier.value: [] for tier in MemoryTier}
    for event_type, data in events:
        if event_type == MemoryAdded.TYPE:
            added = MemoryAdded.model_validate(data)
            if added.entry_id not in missing:
                tiers[added.tier.value].append({"id": added.entry_id, "importance": added.importance})
        elif event_type == MemoryConsolidated.TYPE:
            tiers = MemoryConsolidated.model_validate(data).apply(
                tiers, lambda note: note["id"], lambda note: note["importance"]
            )
    return {tier: [note["id"] for note in notes] for tier, notes in tiers.items()}


def test_readers_applying_the_events_agree_with_the_worker_even_with_events_missing() -> None:
    rng = random.Random(11)
    sink = ListSink()
    memory = SessionMemory("s-1", keep_working=3, promotion_threshold=0.6)
    for _ in range(200):
        if rng.random() < 0.15:
            memory.consolidate(events=sink, threshold=rng.choice([None, 0.3, 0.9]))
        else:
            tier = rng.choice([MemoryTier.SESSION, MemoryTier.WORKING])
            memory.add_note("n", node_id="a", tier=tier, importance=round(rng.random(), 2), events=sink)
    worker = {tier.value: [note.entry_id for note in memory.notes(tier)] for tier in MemoryTier}
    assert _apply_events(sink.events) == worker

    added = [data["entry_id"] for event_type, data in sink.events if event_type == "memory.add"]
    missing = set(rng.sample(added, 15))
    expected = {tier: [i for i in ids if i not in missing] for tier, ids in worker.items()}
    assert _apply_events(sink.events, missing) == expected


def test_rebase_reapplies_this_memory_s_changes_on_a_newer_stored_state() -> None:
    # two tasks of one session loaded the same stored state; b committed first, a re-applies
    a, b = SessionMemory("s-1", keep_working=1), SessionMemory("s-1")
    b.add_note("b's fact", node_id="b", importance=0.9)
    b.add_message(ChatMessage(role="user", content="from b"))
    stored_by_b = b.snapshot()

    a.add_message(ChatMessage(role="user", content="from a"))
    kept = a.add_note("a's fact", node_id="a", importance=0.9)
    first = a.add_note("a saw 1", node_id="a", tier=MemoryTier.WORKING)
    a.add_note("a saw 2", node_id="a", tier=MemoryTier.WORKING)
    report = a.consolidate()
    assert report.promoted_ids == (kept.entry_id,) and report.dropped_ids == (first.entry_id,)
    assert a.pending_changes == 5

    a.rebase(stored_by_b, revision=7)

    assert a.revision == 7
    assert [m.content for m in a.messages] == ["from b", "from a"]
    # a's consolidation moved what it named and nothing else: b's fact stays in the session tier
    assert [n.content for n in a.notes(MemoryTier.SESSION)] == ["b's fact"]
    assert [n.content for n in a.notes(MemoryTier.LONG_TERM)] == ["a's fact"]
    assert [n.content for n in a.notes(MemoryTier.WORKING)] == ["a saw 2"]
    assert a.pending_changes == 5  # kept until a store commits them
    a.commit(5, revision=8)
    assert (a.pending_changes, a.revision) == (0, 8)


def test_snapshot_round_trips_through_json() -> None:
    memory = SessionMemory("s-1")
    memory.add_message(ChatMessage(role="assistant", content="hi"))
    memory.add_note("fact", node_id="a", tier=MemoryTier.LONG_TERM, importance=0.8, role="observation")
    restored = SessionMemory("s-1")
    restored.rebase(SessionSnapshot.model_validate_json(memory.snapshot().model_dump_json()), revision=1)
    assert restored.messages == memory.messages
    assert restored.notes() == memory.notes()
    assert restored.pending_changes == 0


async def test_memory_store_load_gives_the_same_memory_and_save_commits() -> None:
    store = MemoryStore()
    memory = await store.load("s-1")
    memory.add_note("x", node_id="a")
    await store.save(memory)
    store.release(memory)
    assert memory.pending_changes == 0
    assert await store.load("s-1") is memory
