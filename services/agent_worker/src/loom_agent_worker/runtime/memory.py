"""Session memory (notes and conversation): messages plus tiered, weighted notes.

A :class:`SessionMemory` holds one session's chat messages and its notes in three tiers:
``session`` (what this session learned), ``working`` (recent observations, compressed to
the last N on consolidation) and ``long_term`` (important notes promoted from the session
tier). Every tier and the message list are bounded.

Where a session's memory lives is a :class:`SessionStore`'s business: the executor loads the
memory at task start (``load``), saves it at task end (``save``) and lets go (``release``).
:class:`MemoryStore` keeps memories in this process (LRU; for the runtime's tests and a single
worker); the worker app uses the JetStream key-value store of ``loom_agent_worker.sessions``,
shared by every instance. For the shared store a memory keeps a journal of what the running
tasks changed since it was loaded (messages and notes added, consolidations by ids):
:meth:`SessionMemory.rebase` re-applies it on a newer stored state after a write conflict.
The ``memory.add`` / ``memory.consolidate`` events are the durable, queryable record.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from loom_protocol import MemoryAdded, MemoryConsolidated, MemoryEntry, MemoryTier, Task
from pydantic import BaseModel, ConfigDict, Field

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


@dataclass(frozen=True)
class _MessageAdded:
    message: ChatMessage


@dataclass(frozen=True)
class _NoteAdded:
    entry: MemoryEntry


@dataclass(frozen=True)
class _Consolidated:
    promoted_ids: tuple[str, ...]
    dropped_ids: tuple[str, ...]


_Change = _MessageAdded | _NoteAdded | _Consolidated


class SessionSnapshot(BaseModel):
    """A session memory as stored (JSON): its messages and its notes by tier, oldest first."""

    model_config = ConfigDict(extra="ignore")

    version: int = 1
    session_id: str
    messages: list[ChatMessage] = Field(default_factory=list)
    notes: dict[MemoryTier, list[MemoryEntry]] = Field(default_factory=dict)


class SessionMemory:
    """One session's messages and notes. Not thread-safe; used from the event loop.

    ``revision`` is the stored version this memory was loaded from (None: not stored yet);
    the changes made since are journaled until a store commits them (:meth:`commit`).
    """

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
        self.revision: int | None = None
        self._journal: list[_Change] = []

    @property
    def pending_changes(self) -> int:
        """How many changes were made since the stored version (``revision``)."""
        return len(self._journal)

    def snapshot(self) -> SessionSnapshot:
        """The memory as it is now, to be stored."""
        return SessionSnapshot(
            session_id=self.session_id,
            messages=list(self._messages),
            notes={tier: list(notes) for tier, notes in self._notes.items()},
        )

    def rebase(self, stored: SessionSnapshot | None, revision: int | None) -> None:
        """Take ``stored`` (None: nothing stored) as the base at ``revision`` and re-apply the
        journaled changes on top of it: notes and messages added by this memory's tasks are added
        again, a consolidation moves the notes it named (ids unknown to ``stored`` are skipped).
        The journal is kept until :meth:`commit`."""
        self._messages.clear()
        for notes in self._notes.values():
            notes.clear()
        if stored is not None:
            self._messages.extend(stored.messages)
            for tier, entries in stored.notes.items():
                self._notes[tier].extend(entries)
        self.revision = revision
        for change in self._journal:
            self._apply(change)

    def commit(self, changes: int, revision: int) -> None:
        """The first ``changes`` journaled changes are stored as ``revision``: forget them."""
        del self._journal[:changes]
        self.revision = revision

    def _record(self, change: _Change) -> None:
        self._apply(change)
        self._journal.append(change)

    def _apply(self, change: _Change) -> None:
        if isinstance(change, _MessageAdded):
            self._messages.append(change.message)
        elif isinstance(change, _NoteAdded):
            self._notes[change.entry.tier].append(change.entry)
        else:
            session, working, long_term = (self._notes[t] for t in MemoryTier)
            promoted = set(change.promoted_ids)
            dropped = set(change.dropped_ids)
            moved = [note for note in session if note.entry_id in promoted]
            if moved:
                kept = [note for note in session if note.entry_id not in promoted]
                session.clear()
                session.extend(kept)
                long_term.extend(note.model_copy(update={"tier": MemoryTier.LONG_TERM}) for note in moved)
            if dropped:
                left = [note for note in working if note.entry_id not in dropped]
                working.clear()
                working.extend(left)

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def add_message(self, message: ChatMessage) -> None:
        self._record(_MessageAdded(message))

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
        self._record(_NoteAdded(entry))
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
        dropped = list(working)[: max(len(working) - keep, 0)]
        if promoted or dropped:
            self._record(
                _Consolidated(
                    tuple(note.entry_id for note in promoted), tuple(note.entry_id for note in dropped)
                )
            )

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


class SessionStore(Protocol):
    """Where session memories live between tasks (see the module docstring)."""

    async def load(self, session_id: str) -> SessionMemory:
        """The memory of ``session_id`` for a task about to run (created when there is none)."""
        ...

    async def save(self, memory: SessionMemory) -> None:
        """Store what the memory's tasks changed; raises when it cannot."""
        ...

    def release(self, memory: SessionMemory) -> None:
        """A task that loaded ``memory`` is done with it."""
        ...


class MemoryStore:
    """Session memories by session id in this process, keeping the ``max_sessions`` most
    recently used (a :class:`SessionStore` whose saves only clear the journal)."""

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

    async def load(self, session_id: str) -> SessionMemory:
        return self.session(session_id)

    async def save(self, memory: SessionMemory) -> None:
        memory.commit(memory.pending_changes, (memory.revision or 0) + 1)

    def release(self, memory: SessionMemory) -> None:
        return None

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)
