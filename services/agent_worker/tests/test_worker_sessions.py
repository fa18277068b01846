"""The shared session memory (sessions.py) against a real nats-server: what one instance saves the
next reads, concurrent saves merge, conflicts are bounded, any session id is a key."""

from __future__ import annotations

import uuid

import pytest
from loom_agent_worker.runtime import ChatMessage
from loom_agent_worker.sessions import KvSessionStore, SessionStoreError, session_key
from loom_protocol import MemoryTier
from nats.aio.client import Client
from prometheus_client import REGISTRY


async def _stores(nc: Client, count: int = 2, **options: object) -> list[KvSessionStore]:
    """``count`` stores on one bucket, as ``count`` worker instances would have."""
    bucket = f"T_{uuid.uuid4().hex[:8]}"
    return [await KvSessionStore.open(nc.jetstream(), bucket, ttl_s=60, **options) for _ in range(count)]  # type: ignore[arg-type]


def _conflicts() -> float:
    return REGISTRY.get_sample_value("loom_worker_memory_conflicts_total") or 0.0


async def test_a_second_instance_reads_what_the_first_saved(nc: Client) -> None:
    one, two = await _stores(nc)
    memory = await one.load("s-1")
    assert (memory.revision, memory.notes()) == (None, [])
    note = memory.add_note("the user prefers metric units", node_id="concierge", importance=0.9)
    memory.add_message(ChatMessage(role="user", content="hello"))
    await one.save(memory)
    one.release(memory)
    assert memory.pending_changes == 0 and memory.revision is not None

    seen = await two.load("s-1")
    assert seen.notes(MemoryTier.SESSION) == [note]
    assert [m.content for m in seen.messages] == ["hello"]
    assert seen.revision == memory.revision
    seen.add_note("second task", node_id="concierge")
    await two.save(seen)
    two.release(seen)

    again = await one.load("s-1")  # released: read again from the bucket, so it has two's write
    assert [n.content for n in again.notes()] == ["the user prefers metric units", "second task"]
    one.release(again)


async def test_concurrent_tasks_on_two_instances_merge_their_additions(nc: Client) -> None:
    one, two = await _stores(nc)
    a, b = await one.load("s-2"), await two.load("s-2")
    a.add_note("from a", node_id="x", importance=0.9)
    a.consolidate()  # promotes "from a" by id
    b.add_note("from b", node_id="y", tier=MemoryTier.WORKING)
    conflicts = _conflicts()
    await one.save(a)
    await two.save(b)  # based on the old revision: conflict, re-load, re-apply, retry
    assert _conflicts() == conflicts + 1
    one.release(a)
    two.release(b)

    merged = await one.load("s-2")
    assert [n.content for n in merged.notes(MemoryTier.LONG_TERM)] == ["from a"]
    assert [n.content for n in merged.notes(MemoryTier.WORKING)] == ["from b"]
    assert merged.notes(MemoryTier.SESSION) == []
    one.release(merged)


async def test_conflicts_are_retried_a_bounded_number_of_times(nc: Client) -> None:
    one, two = await _stores(nc, max_retries=0)
    a, b = await one.load("s-3"), await two.load("s-3")
    a.add_note("a", node_id="x")
    b.add_note("b", node_id="y")
    await one.save(a)
    with pytest.raises(SessionStoreError, match="still conflicting after 0 retries"):
        await two.save(b)


async def test_tasks_of_one_session_on_one_instance_share_a_memory(nc: Client) -> None:
    (store,) = await _stores(nc, count=1)
    first, second = await store.load("s-4"), await store.load("s-4")
    assert first is second
    first.add_note("seen by both", node_id="x")
    await store.save(first)
    store.release(first)
    second.add_note("later", node_id="x")
    await store.save(second)  # no conflict: the shared memory knows the revision first wrote
    store.release(second)
    third = await store.load("s-4")
    assert third is not first and [n.content for n in third.notes()] == ["seen by both", "later"]


async def test_any_session_id_is_a_valid_key_and_nothing_is_written_without_changes(nc: Client) -> None:
    (store,) = await _stores(nc, count=1)
    odd = "user 42 / café.* >"
    memory = await store.load(odd)
    await store.save(memory)  # nothing changed: nothing written
    assert memory.revision is None
    memory.add_note("x", node_id="a")
    await store.save(memory)
    assert (await store.kv.get(session_key(odd))).revision == memory.revision


async def test_the_bucket_keeps_one_version_and_expires_sessions(nc: Client) -> None:
    (store,) = await _stores(nc, count=1)
    status = await store.kv.status()
    assert status.history == 1
    assert status.ttl == 60


async def test_a_bucket_configured_otherwise_is_used_as_it_is(nc: Client) -> None:
    bucket = f"T_{uuid.uuid4().hex[:8]}"
    first = await KvSessionStore.open(nc.jetstream(), bucket, ttl_s=60)
    second = await KvSessionStore.open(nc.jetstream(), bucket, ttl_s=30)  # another TTL: bound, not changed
    memory = await first.load("s")
    memory.add_note("kept", node_id="a")
    await first.save(memory)
    assert [n.content for n in (await second.load("s")).notes()] == ["kept"]
    assert (await second.kv.status()).ttl == 60


async def test_an_unreachable_bucket_is_a_clear_error(nc: Client) -> None:
    (store,) = await _stores(nc, count=1)
    await nc.close()
    with pytest.raises(SessionStoreError, match="session 's-5': load failed"):
        await store.load("s-5")
