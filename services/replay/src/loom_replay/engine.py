"""The replay engine: sessions over a selection of events, step / jump with the
state reconstructed at the cursor, and ordered event streams for play.

The state at index ``i`` is always the fold of events ``0..i`` (fold.py). To answer a deep
jump without folding from the start every time, the fold is checkpointed (in Redis, with the
session) the first time it passes an anchor (every ``every`` events), unless the last
checkpoint is too close for its size: a state that grows with the trace would otherwise cost
more to checkpoint than to fold. The state at the cursor is kept in the process too, so a step forward
folds one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from prometheus_client import Counter
from redis.exceptions import LockError

from . import fold
from .config import Settings
from .errors import Conflict, Gone, Invalid, NotFound
from .sessions import Session, SessionStore, now, pack_sized
from .store import EventReader, Key, Selection, event_of, key_of

FOLDED = Counter("loom_replay_events_folded_total", "Events folded to reconstruct replay state")
CHECKPOINTS = Counter("loom_replay_checkpoints_total", "Fold checkpoints written")
SESSIONS = Counter("loom_replay_sessions_created_total", "Replay sessions created")
MOVES = Counter("loom_replay_moves_total", "Replay cursor moves", ["op"])


@dataclass
class Cursor:
    """The state at a session's cursor, kept in this process (a step forward folds one event).
    Another replica serving the session recomputes it from the checkpoints."""

    index: int
    key: Key
    state: dict[str, Any]


class ReplayEngine:
    def __init__(self, store: EventReader, sessions: SessionStore, settings: Settings) -> None:
        self.store = store
        self.sessions = sessions
        self.settings = settings
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()

    # -- sessions --------------------------------------------------------------------------------

    async def create(
        self,
        *,
        trace_id: str | None = None,
        task_id: str | None = None,
        session_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Session:
        if not (trace_id or task_id or session_id):
            raise Invalid("give a trace_id, a task_id or a session_id to replay")
        start, end = _aware(start), _aware(end)
        if start is not None and end is not None and start > end:
            raise Invalid(f"start_time {start.isoformat()} is after end_time {end.isoformat()}")
        selection = Selection(
            trace_id=trace_id,
            task_id=task_id,
            session_id=session_id,
            start=start,
            end=end,
            as_of=await self.store.now(),
        )
        total = await self.store.count(selection)
        if total == 0:
            what = ", ".join(f"{k}={v!r}" for k, v in selection.to_json().items() if v and k != "as_of")
            raise NotFound(f"no events for {what}")
        every = max(self.settings.checkpoint_every, math.ceil(total / self.settings.max_checkpoints))
        total, anchors = await self.store.anchors(selection, every)
        session = Session(
            session_id=uuid.uuid4().hex,
            selection=selection,
            total=total,
            every=every,
            cursor=-1,
            created_at=now(),
        )
        await self.sessions.create(session, anchors)
        SESSIONS.inc()
        return session

    async def get(self, session_id: str) -> Session:
        return await self.sessions.get(session_id)

    async def delete(self, session_id: str) -> None:
        if not await self.sessions.delete(session_id):
            raise NotFound(f"no replay session {session_id!r}: it expired or never existed")

    # -- moves -----------------------------------------------------------------------------------

    async def step(self, session_id: str, direction: str, *, scope: str = "full") -> dict[str, Any]:
        async with self._locked(session_id):
            session = await self.sessions.get(session_id)
            if direction == "forward":
                if session.cursor + 1 >= session.total:
                    raise Conflict(
                        f"at the last event (index {session.total - 1} of {session.total}): "
                        "nothing to step forward to"
                    )
                target = session.cursor + 1
            else:
                if session.cursor <= 0:
                    where = "before the first event" if session.cursor < 0 else "at the first event (index 0)"
                    raise Conflict(f"{where}: nothing to step backward to")
                target = session.cursor - 1
            MOVES.labels(f"step_{direction}").inc()
            return await self._move(session, target, scope)

    async def jump(self, session_id: str, index: int, *, scope: str = "full") -> dict[str, Any]:
        async with self._locked(session_id):
            session = await self.sessions.get(session_id)
            if not 0 <= index < session.total:
                raise Invalid(
                    f"index {index} is out of range: the session has {session.total} events "
                    f"(indexes 0..{session.total - 1})"
                )
            MOVES.labels("jump").inc()
            return await self._move(session, index, scope)

    async def _move(self, session: Session, index: int, scope: str) -> dict[str, Any]:
        state, event, key = await self.state_at(session, index)
        await self.sessions.save_position(session.session_id, index)
        self._remember(session.session_id, Cursor(index, key, state))
        return self.answer(session, index, event, scoped(state, event, scope))

    def _remember(self, session_id: str, cursor: Cursor) -> None:
        self._cursors[session_id] = cursor
        self._cursors.move_to_end(session_id)
        while len(self._cursors) > self.settings.cursor_cache_sessions:
            self._cursors.popitem(last=False)

    @staticmethod
    def answer(
        session: Session, index: int, event: dict[str, Any], state: dict[str, Any] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sessionId": session.session_id,
            "event": event,
            "index": index,
            "total": session.total,
            "hasPrevious": index > 0,
            "hasNext": index < session.total - 1,
        }
        if state is not None:
            body["state"] = state
        return body

    def _locked(self, session_id: str) -> Any:
        engine = self

        class _Guard:
            async def __aenter__(self) -> None:
                self.lock = engine.sessions.lock(
                    session_id, engine.settings.lock_timeout_s, engine.settings.lock_wait_s
                )
                if not await self.lock.acquire():
                    raise Conflict(f"replay session {session_id!r} is busy with another move; try again")

            async def __aexit__(self, *exc: object) -> None:
                try:
                    await self.lock.release()
                except LockError:
                    pass  # expired while we worked: nothing to release

        return _Guard()

    # -- the fold --------------------------------------------------------------------------------

    async def state_at(self, session: Session, index: int) -> tuple[dict[str, Any], dict[str, Any], Key]:
        """The state after events 0..index, the event at ``index`` and its key."""
        sid, every = session.session_id, session.every
        anchors = await self.sessions.anchors(sid)
        have = await self.sessions.checkpoints(sid)
        base = max((a for a in have if a <= index // every), default=0)
        state: dict[str, Any] | None = None
        cached = self._cursors.get(sid)
        if cached is not None and base * every <= cached.index <= index:
            del self._cursors[sid]  # folded forward below, it is no longer the state at cached.index
            state, position, start, inclusive = cached.state, cached.index + 1, cached.key, False
            if position > index:
                return state, await self._event(session, start), start
        else:
            if base:
                state = await self.sessions.load_checkpoint(sid, base)
            if state is None:
                base = 0
            position = base * every  # the index of the next event to fold
            if base >= len(anchors):
                raise Gone(f"replay session {sid!r} has no anchor {base}; create the session again")
            start, inclusive = anchors[base], True
        if state is None:
            state = fold.new_state()
        last_checkpoint = base * every
        last_size = have.get(base, 0)  # the size of the last checkpoint passed spaces the next one

        last: Key | None = None
        pages = self._pages(session, anchors, start, inclusive, position, index)
        try:
            async for rows in pages:
                for row in rows:
                    if position and position % every == 0:
                        since = position - last_checkpoint
                        if position // every in have:
                            last_checkpoint, last_size = position, have[position // every]
                        elif since >= every and since * self.settings.checkpoint_bytes_per_event >= last_size:
                            packed, last_size = pack_sized(state)
                            await self.sessions.save_checkpoint(sid, position // every, packed, last_size)
                            have[position // every] = last_size
                            last_checkpoint = position
                            CHECKPOINTS.inc()
                    # a fold row reads like its CloudEvent (store.py); a Record is a read-only mapping
                    fold.apply(state, cast(Mapping[str, Any], row))
                    position += 1
                FOLDED.inc(len(rows))
                last = key_of(rows[-1])
        finally:
            await pages.aclose()
        if last is None or position <= index:
            raise Gone(
                f"event {position} of replay session {sid!r} is no longer in the database "
                "(retention?); create the session again"
            )
        return state, await self._event(session, last), last

    async def _pages(
        self, session: Session, anchors: list[Key], start: Key, inclusive: bool, position: int, last: int
    ) -> AsyncGenerator[list[asyncpg.Record], None]:
        """Events ``position..last`` from ``start`` on, a page at a time; the next page is read
        while the caller folds the current one."""

        def read(start: Key, inclusive: bool, position: int) -> asyncio.Future[list[asyncpg.Record]]:
            limit = min(self.settings.page_size, last - position + 1)
            return asyncio.ensure_future(
                self.store.page(
                    session.selection,
                    start,
                    inclusive=inclusive,
                    limit=limit,
                    until=_bound(anchors, session.every, position + limit - 1),
                )
            )

        pending = read(start, inclusive, position)
        try:
            while True:
                rows = await pending
                if not rows:
                    return
                position += len(rows)
                if position <= last:
                    pending = read(key_of(rows[-1]), False, position)
                yield rows
                if position > last:
                    return
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending

    async def _event(self, session: Session, key: Key) -> dict[str, Any]:
        rows = await self.store.page(session.selection, key, inclusive=True, limit=1, full=True, until=key[0])
        if not rows:
            raise Gone(f"an event of replay session {session.session_id!r} is no longer in the database")
        return event_of(rows[0])

    # -- streams (play) --------------------------------------------------------------------------

    async def events_from(self, session: Session, index: int) -> AsyncIterator[tuple[int, asyncpg.Record]]:
        """The session's events from ``index`` on, with their indexes, a page at a time."""
        anchors = await self.sessions.anchors(session.session_id)
        a = index // session.every
        if a >= len(anchors):
            return
        start, position, inclusive = anchors[a], a * session.every, True
        size = self.settings.page_size
        while position < session.total:
            rows = await self.store.page(
                session.selection,
                start,
                inclusive=inclusive,
                limit=size,
                full=True,
                until=_bound(anchors, session.every, position + size - 1),
            )
            if not rows:
                return
            for row in rows:
                if position >= index:
                    yield position, row
                position += 1
                if position >= session.total:
                    return
            start, inclusive = key_of(rows[-1]), False


def _bound(anchors: list[Key], every: int, index: int) -> datetime | None:
    """A time no event up to ``index`` is later than: the time of the next anchor, if any."""
    following = index // every + 1
    return anchors[following][0] if following < len(anchors) else None


STATE_SCOPES = ("full", "task", "none")


def scoped(state: dict[str, Any], event: dict[str, Any], scope: str) -> dict[str, Any] | None:
    """The state to answer with: all of it, only the event's task and its memory, or none."""
    if scope == "none":
        return None
    if scope == "full":
        return state
    task_id = event.get("taskid")
    memory_key = event.get("sessionid") or task_id
    return {
        "eventsApplied": state["eventsApplied"],
        "tasks": {task_id: state["tasks"][task_id]} if task_id in state["tasks"] else {},
        "memory": {memory_key: state["memory"][memory_key]} if memory_key in state["memory"] else {},
    }


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
