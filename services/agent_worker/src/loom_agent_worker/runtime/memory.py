"""Session memory (notes and conversation): messages plus tiered, weighted notes.

A :class:`SessionMemory` holds one session's chat messages and its notes in three tiers:
``session`` (what this session learned), ``working`` (recent observations, compressed to
the last N on consolidation) and ``long_term`` (important notes promoted from the session
tier). Every tier and the message list are bounded. :class:`MemoryStore` keeps the
memories of the most recently used sessions (LRU).

Memory lives in the worker process: tasks of one session that land on different instances
see different memories. The ``memory.add`` / ``memory.consolidate`` events are the durable,
queryable record.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from loom_protocol import MemoryAdded, MemoryConsolidated, MemoryEntry, MemoryTier, Task

from loom_agent_worker.runtime.context import EventSink
from loom_agent_worker.runtime.providers.base import ChatMessage

DEFAULT_MAX_MESSAGES = 500
DEFAULT_MAX_NOTES_PER_TIER = 500
DEFAULT_KEEP_WORKING = 20
DEFAULT_PROMOTION_THRESHOLD = 0.7
DEFAULT_MAX_SESSIONS = 1000


@dataclass(frozen=True)
class ConsolidationReport:
    """What one ``consolidate`` call did (the ids it moved) and the tier sizes after it."""

    promoted_ids: tuple[str, ...]
    dropped_ids: tuple[str, ...]
    session: int
    working: int
    long_term: int

    @property
    def promoted(self) -> int:
        return len(self.promoted_ids)

    @property
    def dropped_working(self) -> int:
        return len(self.dropped_ids)


class SessionMemory:
    """One session's messages and notes. Not thread-safe; used from the event loop."""

    def __init__(
        self,
        session_id: str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_notes_per_tier: int = DEFAULT_MAX_NOTES_PER_TIER,
        keep_working: int = DEFAULT_KEEP_WORKING,
        promotion_threshold: float = DEFAULT_PROMOTION_THRESHOLD,
    ) -> None:
        self.session_id = session_id
        self.keep_working = keep_working
        self.promotion_threshold = promotion_threshold
        self._messages: deque[ChatMessage] = deque(maxlen=max_messages)
        self._notes: dict[MemoryTier, deque[MemoryEntry]] = {
            tier: deque(maxlen=max_notes_per_tier) for tier in MemoryTier
        }

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def add_message(self, message: ChatMessage) -> None:
        self._messages.append(message)

    def notes(self, tier: MemoryTier | None = None) -> list[MemoryEntry]:
        """The notes of one tier (oldest first), or of all tiers."""
        if tier is not None:
            return list(self._notes[tier])
        return [note for notes in self._notes.values() for note in notes]

    def add_note(
        self,
        content: str,
        *,
        node_id: str,
        tier: MemoryTier = MemoryTier.SESSION,
        importance: float = 0.5,
        role: str = "note",
        metadata: dict[str, Any] | None = None,
        events: EventSink | None = None,
    ) -> MemoryEntry:
        """Store a note for ``node_id`` (the agent writing it) and emit ``memory.add``.

        ``role`` says what kind of note it is (``observation``, ``child_result``, ...); it is
        kept in the entry's metadata and at the top of the event data, as Studio's memory
        browser expects.
        """
        entry = MemoryEntry(
            node_id=node_id,
            tier=tier,
            content=content,
            importance=importance,
            metadata={**(metadata or {}), "role": role},
        )
        self._notes[tier].append(entry)
        if events is not None:
            events.emit(MemoryAdded.model_validate({**entry.model_dump(mode="json"), "role": role}))
        return entry

    def consolidate(
        self,
        *,
        events: EventSink | None = None,
        threshold: float | None = None,
        keep_working: int | None = None,
    ) -> ConsolidationReport:
        """Promote session notes with importance >= threshold to long-term memory and keep only
        the last ``keep_working`` working notes; emit ``memory.consolidate`` with the ids moved.

        This is the one consolidation rule: readers of the events apply the ids it emits."""
        threshold = self.promotion_threshold if threshold is None else threshold
        keep = self.keep_working if keep_working is None else keep_working
        session, working, long_term = (self._notes[t] for t in MemoryTier)

        promoted = [note for note in session if note.importance >= threshold]
        if promoted:
            kept = [note for note in session if note.importance < threshold]
            session.clear()
            session.extend(kept)
            long_term.extend(note.model_copy(update={"tier": MemoryTier.LONG_TERM}) for note in promoted)

        dropped = [working.popleft() for _ in range(max(len(working) - keep, 0))]

        report = ConsolidationReport(
            promoted_ids=tuple(note.entry_id for note in promoted),
            dropped_ids=tuple(note.entry_id for note in dropped),
            session=len(session),
            working=len(working),
            long_term=len(long_term),
        )
        if events is not None:
            events.emit(
                MemoryConsolidated(
                    promoted_ids=list(report.promoted_ids),
                    dropped_ids=list(report.dropped_ids),
                    promoted=report.promoted,
                    dropped_working=report.dropped_working,
                    session=report.session,
                    working=report.working,
                    long_term=report.long_term,
                    threshold=threshold,
                    keep_working=keep,
                )
            )
        return report


class MemoryStore:
    """Session memories by session id, keeping the ``max_sessions`` most recently used."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS, **memory_options: Any) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self._memory_options = memory_options
        self._sessions: OrderedDict[str, SessionMemory] = OrderedDict()

    def session(self, session_id: str) -> SessionMemory:
        """The memory of ``session_id``, created on first use; marks it most recently used."""
        memory = self._sessions.get(session_id)
        if memory is None:
            memory = SessionMemory(session_id, **self._memory_options)
            self._sessions[session_id] = memory
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_id)
        return memory

    def for_task(self, task: Task) -> SessionMemory:
        """The memory of the task's session; a task without a session gets its own."""
        return self.session(task.session_id or task.task_id)

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)
