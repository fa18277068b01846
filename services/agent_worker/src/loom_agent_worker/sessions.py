"""Session memory shared by every worker instance: a JetStream key-value bucket.

One key per session (the session id, base64url-encoded so any id is a valid key), its value the
session's :class:`~loom_agent_worker.runtime.memory.SessionSnapshot` as JSON, its KV revision the
version. A task loads the memory at start and saves it before its terminal status is reported,
with ``update(key, value, last=revision)``: a write based on an old revision is refused by the
server, and the store then re-loads the newer value, re-applies what this instance's tasks changed
(the memory's journal: messages and notes added, consolidations by the ids they moved) and tries
again, a bounded number of times.

Consistency: sequential tasks of a session read each other's writes on any instance (the save
completes before the task is reported terminal). Concurrent tasks of one session on one instance
share one memory object, as before; concurrent tasks on different instances merge: every note and
message each added is kept, each consolidation moves the notes it named. The bounds of the tiers and
messages still hold, oldest dropped first. Nothing of the memory is last-writer-wins, except that a
task cancelled or handed back saves nothing it added alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from .buckets import MAX_VALUE_BYTES, open_bucket  # a larger value is trimmed (oldest messages)
from .runtime.memory import SessionMemory, SessionSnapshot

log = logging.getLogger(__name__)

CONFLICTS = Counter("loom_worker_memory_conflicts_total", "Session memory saves that met a newer revision")
SAVE_FAILURES = Counter("loom_worker_memory_save_failures_total", "Session memory saves given up")


class SessionStoreError(Exception):
    """The shared session memory could not be read or written (the reason is in the message)."""


def session_key(session_id: str) -> str:
    """The KV key of a session: its id, base64url without padding (valid for any id)."""
    return base64.urlsafe_b64encode(session_id.encode()).decode().rstrip("=") or "_"


@dataclass
class _Live:
    memory: SessionMemory
    users: int = 0
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KvSessionStore:
    """A :class:`~loom_agent_worker.runtime.memory.SessionStore` on a JetStream KV bucket."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        max_retries: int = 5,
        timeout_s: float = 5.0,
        max_value_bytes: int = MAX_VALUE_BYTES,
        **memory_options: Any,
    ) -> None:
        self.kv = kv
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.max_value_bytes = max_value_bytes
        self._memory_options = memory_options
        self._live: dict[str, _Live] = {}

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        bucket: str,
        *,
        ttl_s: float,
        timeout_s: float = 5.0,
        replicas: int = 1,
        **options: Any,
    ) -> KvSessionStore:
        """Create the bucket where missing (history 1, file storage, keys expire ``ttl_s`` after
        their last write; 0 keeps them; ``replicas`` copies on a cluster), or bind to one that
        exists with another configuration."""
        kv = await open_bucket(
            js,
            bucket,
            description="Loom session memory, one key per session",
            ttl_s=ttl_s,
            timeout_s=timeout_s,
            replicas=replicas,
        )
        return cls(kv, timeout_s=timeout_s, **options)

    async def load(self, session_id: str) -> SessionMemory:
        live = self._live.get(session_id)
        if live is None:
            live = self._live[session_id] = _Live(SessionMemory(session_id, **self._memory_options))
        live.users += 1
        try:
            async with live.lock:
                if not live.loaded:
                    stored, revision = await self._get(session_id)
                    live.memory.rebase(stored, revision)
                    live.loaded = True
        except BaseException:
            self.release(live.memory)
            raise
        return live.memory

    def release(self, memory: SessionMemory) -> None:
        live = self._live.get(memory.session_id)
        if live is None or live.memory is not memory:
            return
        live.users -= 1
        if live.users <= 0:  # the next task re-reads the bucket: it sees other instances' writes
            del self._live[memory.session_id]

    async def save(self, memory: SessionMemory) -> None:
        live = self._live.get(memory.session_id)
        async with live.lock if live is not None and live.memory is memory else contextlib.nullcontext():
            await self._save(memory)

    async def _save(self, memory: SessionMemory) -> None:
        key = session_key(memory.session_id)
        for _ in range(self.max_retries + 1):
            changes = memory.pending_changes
            if changes == 0:
                return
            value = self._encode(memory)
            try:
                async with asyncio.timeout(self.timeout_s):  # not wait_for: no task per call (3.11)
                    if memory.revision is None:
                        revision = await self.kv.create(key, value)
                    else:
                        revision = await self.kv.update(key, value, last=memory.revision)
            except KeyWrongLastSequenceError:
                CONFLICTS.inc()
                stored, stored_revision = await self._get(memory.session_id)
                memory.rebase(stored, stored_revision)
                continue
            except Exception as exc:
                SAVE_FAILURES.inc()
                raise SessionStoreError(f"session {memory.session_id!r}: save failed: {exc!r}") from exc
            memory.commit(changes, revision)
            return
        SAVE_FAILURES.inc()
        raise SessionStoreError(
            f"session {memory.session_id!r}: still conflicting after {self.max_retries} retries"
        )

    async def _get(self, session_id: str) -> tuple[SessionSnapshot | None, int | None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                entry = await self.kv.get(session_key(session_id))
        except KeyNotFoundError:
            return None, None
        except Exception as exc:
            raise SessionStoreError(f"session {session_id!r}: load failed: {exc!r}") from exc
        if not entry.value:
            return None, entry.revision
        try:
            return SessionSnapshot.model_validate_json(entry.value), entry.revision
        except ValueError:  # unreadable (another version's format): start over from this revision
            log.warning("session %s: stored memory unreadable, starting empty", session_id)
            return None, entry.revision

    def _encode(self, memory: SessionMemory) -> bytes:
        snapshot = memory.snapshot()
        value = snapshot.model_dump_json().encode()
        while len(value) > self.max_value_bytes and snapshot.messages:
            snapshot.messages = snapshot.messages[len(snapshot.messages) // 2 + 1 :]
            value = snapshot.model_dump_json().encode()
        if len(value) > self.max_value_bytes:
            raise SessionStoreError(
                f"session {memory.session_id!r}: notes alone are {len(value)} bytes,"
                f" over {self.max_value_bytes}"
            )
        return value
