"""The engine's paging, checkpoints and cursor over in-memory stand-ins for TimescaleDB and Redis:
whatever the path (pages, checkpoints, the cached cursor), the state at an index is the fold of
events 0..index."""

from __future__ import annotations

import copy
import json
import random
import zlib
from datetime import datetime
from typing import Any

import pytest
from loom_replay import fold
from loom_replay.config import Settings
from loom_replay.engine import ReplayEngine
from loom_replay.errors import Conflict, Invalid, NotFound, SessionNotFound
from loom_replay.sessions import Session
from loom_replay.store import Key, Selection
from replay_events import Trace


class FakeStore:
    """The events table: rows ordered by (time, coalesce(seq, -1), id)."""

    def __init__(self, events: list[dict[str, Any]], tick_ms: int = 1) -> None:
        # tick_ms > 1 rounds times down, so that many events share one (as on a coarse clock)
        def when(event: dict[str, Any]) -> datetime:
            time = datetime.fromisoformat(event["time"])
            return time.replace(microsecond=time.microsecond // (1000 * tick_ms) * 1000 * tick_ms)

        self.rows = sorted(
            (
                {
                    "time": when(e),
                    "s": e.get("seq", -1),
                    "id": e["id"],
                    "type": e["type"],
                    "taskid": e.get("taskid"),
                    "sessionid": e.get("sessionid"),
                    "agentid": e.get("agentid"),
                    "parenttaskid": e.get("parenttaskid"),
                    "data": copy.deepcopy(e.get("data")),
                    "attributes": {k: v for k, v in e.items() if k != "data"},
                }
                for e in events
            ),
            key=self.key,
        )
        self.pages = 0

    @staticmethod
    def key(row: dict[str, Any]) -> Key:
        return (row["time"], row["s"], row["id"])

    async def now(self) -> datetime:
        return datetime.now().astimezone()

    async def count(self, selection: Selection) -> int:
        return len(self.rows)

    async def anchors(self, selection: Selection, every: int) -> tuple[int, list[Key]]:
        return len(self.rows), [self.key(r) for r in self.rows[::every]]

    async def page(
        self,
        selection: Selection,
        start: Key | None,
        *,
        inclusive: bool,
        limit: int,
        full: bool = False,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        self.pages += 1
        chosen = [
            r
            for r in self.rows
            if (start is None or (self.key(r) >= start if inclusive else self.key(r) > start))
            and (until is None or r["time"] <= until)
        ]
        out = []
        for row in chosen[:limit]:
            row = copy.deepcopy(row)  # the database hands out fresh objects
            if not full:
                del row["attributes"]
            out.append(row)
        return out


class FakeSessions:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.anchor_keys: dict[str, list[Key]] = {}
        self.ckpt: dict[str, dict[int, bytes]] = {}
        self.sizes: dict[str, dict[int, int]] = {}

    async def create(self, session: Session, anchors: list[Key]) -> None:
        self.sessions[session.session_id] = copy.deepcopy(session)
        self.anchor_keys[session.session_id] = anchors
        self.ckpt[session.session_id], self.sizes[session.session_id] = {}, {}

    async def get(self, session_id: str) -> Session:
        if session_id not in self.sessions:
            raise SessionNotFound(session_id)
        return copy.deepcopy(self.sessions[session_id])

    async def delete(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None

    async def anchors(self, session_id: str) -> list[Key]:
        return list(self.anchor_keys[session_id])

    async def checkpoints(self, session_id: str) -> dict[int, int]:
        return dict(self.sizes[session_id])

    async def load_checkpoint(self, session_id: str, a: int) -> dict[str, Any] | None:
        raw = self.ckpt[session_id].get(a)
        return None if raw is None else json.loads(zlib.decompress(raw))

    async def save_checkpoint(self, session_id: str, a: int, packed: bytes, size: int) -> None:
        self.ckpt[session_id][a], self.sizes[session_id][a] = packed, size

    async def save_position(self, session_id: str, index: int) -> None:
        self.sessions[session_id].cursor = index

    def lock(self, session_id: str, timeout_s: float, wait_s: float) -> Any:
        class Lock:
            async def acquire(self) -> bool:
                return True

            async def release(self) -> None:
                return None

        return Lock()


def big_trace(tasks: int = 12) -> list[dict[str, Any]]:
    trace = Trace()
    for index in range(tasks):
        trace.calculator_run(f"t{index:02d}", session="s1" if index % 2 else None, tool_content=str(index))
    return trace.events


def fold_upto(events: list[dict[str, Any]], index: int, tick_ms: int = 1) -> dict[str, Any]:
    state = fold.new_state()
    ordered = FakeStore(events, tick_ms).rows  # the engine's order
    for row in ordered[: index + 1]:
        fold.apply(state, {**row["attributes"], "data": copy.deepcopy(row["data"])})
    return state


def make_engine(
    events: list[dict[str, Any]], tick_ms: int = 1, **settings: Any
) -> tuple[ReplayEngine, FakeStore, FakeSessions]:
    store, sessions = FakeStore(events, tick_ms), FakeSessions()
    options = {"page_size": 7, "checkpoint_every": 10, "checkpoint_bytes_per_event": 10_000, **settings}
    return ReplayEngine(store, sessions, Settings(**options)), store, sessions  # type: ignore[arg-type]


@pytest.mark.parametrize("tick_ms", [1, 7])
async def test_every_path_to_an_index_gives_the_fold_up_to_it(tick_ms: int) -> None:
    events = big_trace()
    engine, store, sessions = make_engine(events, tick_ms)
    session = await engine.create(trace_id="ab" * 16)
    total = session.total
    assert total == len(events)
    expected = {k: fold_upto(events, k, tick_ms) for k in range(total)}

    sid = session.session_id
    for k in range(total):  # forward
        body = await engine.step(sid, "forward")
        assert body["index"] == k and body["state"] == expected[k], k
    pages_forward = store.pages
    rng = random.Random(7)
    for k in rng.sample(range(total), 40) + [total - 1, 0, total // 2]:  # jumps
        body = await engine.jump(sid, k)
        assert body["state"] == expected[k], k
        assert body["event"]["id"] == store.rows[k]["id"]
    for k in range(total // 2 - 1, total // 2 - 15, -1):  # backward
        body = await engine.step(sid, "backward")
        assert body["index"] == k and body["state"] == expected[k], k
    # the checkpoints are the fold too, at their anchors
    for a, packed in sessions.ckpt[sid].items():
        assert json.loads(zlib.decompress(packed)) == fold_upto(events, a * session.every - 1, tick_ms), a
    # stepping forward folded one event per step: about one page read per step, not a refold
    assert pages_forward <= 2 * total + 5


async def test_checkpoints_thin_out_as_the_state_grows() -> None:
    events = big_trace(30)
    dense, _, dense_sessions = make_engine(events, checkpoint_bytes_per_event=10**9)
    sparse, _, sparse_sessions = make_engine(events, checkpoint_bytes_per_event=50)
    for engine in (dense, sparse):
        session = await engine.create(trace_id="ab" * 16)
        await engine.jump(session.session_id, session.total - 1)
    every_anchor = len(dense_sessions.sizes[next(iter(dense_sessions.sizes))])
    thinned = sorted(sparse_sessions.sizes[next(iter(sparse_sessions.sizes))])
    assert every_anchor == (len(events) - 1) // 10  # one at each anchor passed
    assert 2 <= len(thinned) < every_anchor / 2
    gaps = [b - a for a, b in zip(thinned, thinned[1:], strict=False)]
    assert gaps == sorted(gaps)  # further apart as the state grows


async def test_boundaries_and_bad_indexes_are_refused_with_a_reason() -> None:
    engine, _, _ = make_engine(big_trace(1))
    session = await engine.create(trace_id="ab" * 16)
    sid = session.session_id
    with pytest.raises(Conflict, match="before the first event"):
        await engine.step(sid, "backward")
    first = await engine.step(sid, "forward")
    assert first["index"] == 0 and first["hasPrevious"] is False
    with pytest.raises(Conflict, match="at the first event"):
        await engine.step(sid, "backward")
    last = await engine.jump(sid, session.total - 1)
    assert last["hasNext"] is False
    with pytest.raises(Conflict, match="at the last event"):
        await engine.step(sid, "forward")
    for index in (-1, session.total):
        with pytest.raises(Invalid, match=f"index {index} is out of range"):
            await engine.jump(sid, index)
    with pytest.raises(NotFound, match="no replay session 'nope'"):
        await engine.jump("nope", 0)
    with pytest.raises(Invalid, match="give a trace_id"):
        await engine.create()
    late, early = (
        datetime.fromisoformat("2030-01-01T00:00:00+00:00"),
        datetime.fromisoformat("2029-01-01T00:00:00"),
    )
    with pytest.raises(Invalid, match="is after end_time"):
        await engine.create(trace_id="x", start=late, end=early)
    assert (await engine.jump(sid, 3, scope="none")).get("state") is None
    scoped = (await engine.jump(sid, 3, scope="task"))["state"]
    assert list(scoped["tasks"]) == ["t00"] and list(scoped["memory"]) in ([], ["t00"])


async def test_an_empty_selection_is_not_found() -> None:
    engine, _, _ = make_engine([])
    with pytest.raises(NotFound, match="no events for trace_id='feed'"):
        await engine.create(trace_id="feed")
