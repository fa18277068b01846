"""The task journal on a JetStream key-value bucket, shared by every worker instance.

One key per step outcome (``loom_protocol.journal_key``), written with ``create``: the write
returns once the server stored it (the broker's acknowledgement), and a key that exists already
(another attempt recorded that step first) is left as it is. A task's entries are read as the
current values of the keys under its prefix (``loom_nats.latest_values``), bounded by
``timeout_s``.

Keys expire ``ttl_s`` after they were written (0 keeps them): a task resumed later than that
starts from scratch.
"""

from __future__ import annotations

import asyncio
import logging
import time

from loom_nats import latest_values
from loom_protocol import JournalEntry, JournalKind, journal_key, journal_task_filter
from nats.js.client import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from .buckets import open_bucket
from .runtime.durable import StepJournal

log = logging.getLogger(__name__)

ENTRIES_WRITTEN = Counter("loom_worker_journal_writes_total", "Journal entries stored", ["kind"])
WRITE_FAILURES = Counter(
    "loom_worker_journal_write_failures_total", "Journal entries not stored (the step runs again on resume)"
)
ENTRIES_RESTORED = Counter("loom_worker_journal_restored_total", "Step outcomes restored from the journal")


class JournalUnavailable(Exception):
    """The journal could not be read (the reason is in the message)."""


class KvJournal:
    """Reads and writes task journals in one KV bucket."""

    def __init__(self, js: JetStreamContext, bucket: str, kv: KeyValue, *, timeout_s: float = 5.0) -> None:
        self.js = js
        self.bucket = bucket
        self.kv = kv
        self.timeout_s = timeout_s

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, *, ttl_s: float, timeout_s: float = 5.0, replicas: int = 1
    ) -> KvJournal:
        """Create the bucket where missing (``replicas`` copies on a cluster), or bind to one that
        exists with another configuration."""
        kv = await open_bucket(
            js,
            bucket,
            description="Loom task journals: one key per recorded step outcome",
            ttl_s=ttl_s,
            timeout_s=timeout_s,
            replicas=replicas,
        )
        return cls(js, bucket, kv, timeout_s=timeout_s)

    async def for_task(
        self, task_id: str, *, attempt: int, instance_id: str, restore: bool = True
    ) -> StepJournal:
        """The journal of ``task_id`` for this attempt: with the entries earlier attempts recorded
        when ``restore`` (raises :class:`JournalUnavailable` when they cannot be read)."""
        entries = await self.read(task_id) if restore else []
        return StepJournal(entries, _TaskWriter(self, task_id), attempt=attempt, instance_id=instance_id)

    async def read(
        self, task_id: str, *, tries: int = 3, backoff_s: float = 1.0
    ) -> list[tuple[str, JournalEntry]]:
        """Every entry of ``task_id`` as ``(entry id, entry)``; unreadable entries are skipped.

        A read that fails (no answer within ``timeout_s``: the bucket's stream may be electing a
        leader after a server went away) is tried again ``tries`` times in all, ``backoff_s``
        apart, doubling; then :class:`JournalUnavailable`.
        """
        for attempt in range(1, tries + 1):
            try:
                return await asyncio.wait_for(self._read(task_id), self.timeout_s)
            except Exception as exc:
                if attempt == tries:
                    raise JournalUnavailable(
                        f"journal of task {task_id!r} not readable after {tries} tries: {exc!r}"
                    ) from exc
                log.warning("journal of task %s not readable (%r); trying again", task_id, exc)
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _read(self, task_id: str) -> list[tuple[str, JournalEntry]]:
        keys = journal_task_filter(task_id)
        values = await latest_values(self.js, self.bucket, keys, timeout_s=self.timeout_s)
        entries: list[tuple[str, JournalEntry]] = []
        for key, value in values.items():
            if not value:
                continue
            try:
                entries.append((key.rsplit(".", 1)[-1], JournalEntry.model_validate_json(value)))
            except ValueError:
                log.warning("journal entry %s unreadable; that step runs again", key)
        return entries

    async def write(self, task_id: str, kind: JournalKind, entry_id: str, entry: JournalEntry) -> bool:
        key = journal_key(task_id, kind, entry_id)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: no task per write (3.11)
                await self.kv.create(key, entry.to_json())
        except KeyWrongLastSequenceError:
            log.warning("journal entry %s was recorded by another attempt; kept as it is", key)
            return False
        except Exception as exc:
            WRITE_FAILURES.inc()
            log.warning("journal entry %s not stored (%r); that step runs again on resume", key, exc)
            return False
        ENTRIES_WRITTEN.labels(kind.value).inc()
        log.debug("journal entry %s stored in %.1f ms", key, (time.perf_counter() - started) * 1000)
        return True


class _TaskWriter:
    """The :class:`~loom_agent_worker.runtime.durable.JournalWriter` of one task."""

    def __init__(self, journal: KvJournal, task_id: str) -> None:
        self._journal = journal
        self._task_id = task_id

    async def write(self, kind: JournalKind, entry_id: str, entry: JournalEntry) -> bool:
        return await self._journal.write(self._task_id, kind, entry_id, entry)
