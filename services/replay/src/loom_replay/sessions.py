"""Replay sessions in Redis, so that any replica serves any session.

Per session ``<prefix>:replay:<id>``:

- the hash itself: the selection, the event count, the checkpoint spacing and the cursor;
- ``:anchors``: the keys of events 0, every, 2*every, ... (where a page read starts);
- ``:ckpt``: checkpoints of the fold, field ``a`` = the state before event ``a*every``
  (zlib-compressed JSON; derived from events, an optimisation for deep jumps). They are
  spaced by at least ``every`` events and further apart as the state grows (see engine.py);
- ``:ckptsize``: the size of each checkpoint's JSON;
- ``:lock``: serialises moves of one session across replicas.

Every key expires after ``ttl_s`` without use.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from .errors import SessionNotFound
from .store import Key, Selection, key_from_json, key_to_json


@dataclass
class Session:
    session_id: str
    selection: Selection
    total: int
    every: int
    cursor: int  # index of the current event; -1 before the first
    created_at: float

    def describe(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "total": self.total,
            "index": self.cursor,
            "checkpointEvery": self.every,
            "selection": {k: v for k, v in self.selection.to_json().items() if v is not None},
            "createdAt": self.created_at,
        }


def pack_sized(value: Any) -> tuple[bytes, int]:
    """zlib-compressed JSON, and the size of the JSON."""
    raw = orjson.dumps(value, default=str)
    return zlib.compress(raw, 1), len(raw)


def _text(value: bytes | str) -> str:
    # the client returns bytes unless it was created with decode_responses
    return value.decode() if isinstance(value, bytes) else value


def unpack(raw: bytes) -> Any:
    return orjson.loads(zlib.decompress(raw))


_SESSION_ID = re.compile(r"[0-9a-f]{32}")
"""What a session id is (a uuid4 in hex, engine.py): anything else names no session."""


class SessionStore:
    def __init__(self, redis: Redis, prefix: str, ttl_s: float) -> None:
        self.redis = redis
        self._prefix = f"{prefix}:replay"
        self._ttl = max(int(ttl_s), 1)

    def key(self, session_id: str, part: str = "") -> str:
        return f"{self._prefix}:{session_id}{':' + part if part else ''}"

    def _keys(self, session_id: str) -> list[str]:
        return [self.key(session_id, part) for part in ("", "anchors", "ckpt", "ckptsize")]

    async def create(self, session: Session, anchors: list[Key]) -> None:
        sid = session.session_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.key(sid),
                mapping={
                    "selection": json.dumps(session.selection.to_json()),
                    "total": session.total,
                    "every": session.every,
                    "cursor": session.cursor,
                    "created_at": session.created_at,
                },
            )
            if anchors:
                pipe.rpush(self.key(sid, "anchors"), *(json.dumps(key_to_json(k)) for k in anchors))
            for key in self._keys(sid):
                pipe.expire(key, self._ttl)
            await pipe.execute()

    async def get(self, session_id: str) -> Session:
        """The session (its keys' expiry renewed), or SessionNotFound."""
        if _SESSION_ID.fullmatch(session_id) is None:  # e.g. "<id>:anchors" is another key's name
            raise SessionNotFound(session_id)
        raw = await self.redis.hgetall(self.key(session_id))
        if not raw:
            raise SessionNotFound(session_id)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        await self.touch(session_id)
        return Session(
            session_id=session_id,
            selection=Selection.from_json(json.loads(fields["selection"])),
            total=int(fields["total"]),
            every=int(fields["every"]),
            cursor=int(fields["cursor"]),
            created_at=float(fields["created_at"]),
        )

    async def touch(self, session_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(session_id):
                pipe.expire(key, self._ttl)
            await pipe.execute()

    async def delete(self, session_id: str) -> bool:
        if _SESSION_ID.fullmatch(session_id) is None:
            return False
        removed = await self.redis.delete(*self._keys(session_id))
        return bool(removed)

    async def anchors(self, session_id: str) -> list[Key]:
        return [
            key_from_json(json.loads(raw))
            for raw in await self.redis.lrange(self.key(session_id, "anchors"), 0, -1)
        ]

    async def checkpoints(self, session_id: str) -> dict[int, int]:
        """The checkpoints there are: anchor number -> size of the state's JSON."""
        sizes = await self.redis.hgetall(self.key(session_id, "ckptsize"))
        return {int(k): int(v) for k, v in sizes.items()}

    async def load_checkpoint(self, session_id: str, a: int) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.key(session_id, "ckpt"), str(a))
        return None if raw is None else unpack(raw if isinstance(raw, bytes) else raw.encode())

    async def save_checkpoint(self, session_id: str, a: int, packed: bytes, size: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(session_id, "ckpt"), str(a), packed)
            pipe.hset(self.key(session_id, "ckptsize"), str(a), size)
            pipe.expire(self.key(session_id, "ckpt"), self._ttl)
            pipe.expire(self.key(session_id, "ckptsize"), self._ttl)
            await pipe.execute()

    async def save_position(self, session_id: str, index: int) -> None:
        """Move the session's cursor."""
        await self.redis.hset(self.key(session_id), "cursor", index)

    def lock(self, session_id: str, timeout_s: float, wait_s: float) -> Any:
        return self.redis.lock(self.key(session_id, "lock"), timeout=timeout_s, blocking_timeout=wait_s)


def now() -> float:
    return time.time()
