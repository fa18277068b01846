"""Picks from the registry's state in Redis (a real Redis, a fresh key prefix per test): the
state is written the way the registry writes it, by the protocol's key layout."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest
from loom_dispatcher.errors import RegistryUnavailable
from loom_dispatcher.picking import RedisPicker, RedisStrikes
from loom_dispatcher.store import Scores, TaskStore
from loom_protocol import RegistryKeys, Task, TaskStatus
from redis.asyncio import Redis


async def heartbeat(
    client: Redis, keys: RegistryKeys, instance_id: str, agent_id: str, in_flight: int = 0
) -> None:
    body = json.dumps({"instanceId": instance_id, "load": {"inFlight": in_flight, "capacity": 4}})
    await client.set(keys.instance(instance_id), body, px=10_000)
    await client.sadd(keys.agent(agent_id), instance_id)


async def picked(picker: RedisPicker, times: int = 4) -> set[str | None]:
    """The instances ``times`` picks of echo went to."""
    return {(await picker.pick("echo", "t")).instance_id for _ in range(times)}


async def test_picks_rotate_over_live_instances_and_share_the_registrys_counter(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    keys = RegistryKeys(prefix)
    for instance_id in ("w0", "w1", "w2"):
        await heartbeat(client, keys, instance_id, "echo")
    await client.sadd(keys.agent("echo"), "gone")  # listed, but its heartbeat expired
    picker = RedisPicker(TaskStore(client, prefix).scripts, prefix)
    replies = await asyncio.gather(*(picker.pick("echo", f"t{n}") for n in range(30)))
    assert collections.Counter(r.instance_id for r in replies) == {"w0": 10, "w1": 10, "w2": 10}
    assert {r.candidates for r in replies} == {3}
    assert int(await client.get(keys.rotation("echo"))) == 30  # the counter the registry also turns


async def test_draining_instances_are_skipped_and_none_live_is_a_reply_with_the_reason(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    keys = RegistryKeys(prefix)
    await heartbeat(client, keys, "w0", "echo")
    await heartbeat(client, keys, "w1", "echo")
    await client.sadd(keys.draining, "w0")
    picker = RedisPicker(TaskStore(client, prefix).scripts, prefix)
    assert await picked(picker) == {"w1"}
    none = await picker.pick("calculator", "t")
    assert none.instance_id is None and none.reason == "no live instance of agent calculator"


async def test_the_registrys_stored_strategy_is_followed(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    keys = RegistryKeys(prefix)
    await heartbeat(client, keys, "busy", "echo", in_flight=4)
    await heartbeat(client, keys, "idle", "echo", in_flight=1)
    picker = RedisPicker(TaskStore(client, prefix).scripts, prefix)
    assert await picked(picker) == {"busy", "idle"}
    await client.set(keys.strategy, "least_loaded")
    assert await picked(picker) == {"idle"}


async def test_an_unreachable_redis_is_registry_unavailable() -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
    picker = RedisPicker(TaskStore(client, "loom-none").scripts, "loom-none")
    with pytest.raises(RegistryUnavailable, match="Redis failed"):
        await picker.pick("echo", "t")
    await client.aclose()


async def test_an_instance_with_enough_strikes_is_picked_only_when_no_other_is_live(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    keys = RegistryKeys(prefix)
    await heartbeat(client, keys, "good", "echo")
    await heartbeat(client, keys, "bad", "echo")
    scripts = TaskStore(client, prefix).scripts
    picker, strikes = RedisPicker(scripts, prefix, max_strikes=2), RedisStrikes(scripts, prefix, window_s=0.5)
    assert [await strikes.strike("bad") for _ in range(2)] == [1, 2]
    assert await picked(picker) == {"good"}
    await client.delete(keys.instance("good"))  # the only other one is gone: the struck one serves
    assert (await picker.pick("echo", "t")).instance_id == "bad"
    await heartbeat(client, keys, "good", "echo")
    ttl_ms = await client.pttl(keys.strikes("bad"))
    assert 0 < ttl_ms <= 500  # the window runs from the first strike
    await client.delete(keys.strikes("bad"))  # the window passed
    assert await picked(picker) == {"good", "bad"}
    off = RedisPicker(scripts, prefix, max_strikes=0)
    await strikes.strike("bad")
    await strikes.strike("bad")
    assert await picked(off) == {"good", "bad"}


async def test_a_new_task_is_picked_for_and_stored_in_one_step(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    keys = RegistryKeys(prefix)
    for instance_id in ("w0", "w1"):
        await heartbeat(client, keys, instance_id, "echo")
    store = TaskStore(client, prefix)
    picker = RedisPicker(store.scripts, prefix)
    tasks = [Task(task_id=f"t{n}", target_agent="echo", parent_task_id="p1") for n in range(4)]
    placed = await asyncio.gather(*(picker.place(store, t, retry_at=10.0, deadline=99.0) for t in tasks))
    assert collections.Counter(p.instance_id for p in placed if p) == {"w0": 2, "w1": 2}
    for p in placed:
        assert p is not None and p.candidates == 2
        assert (p.task.status, p.task.attempt, p.task.instance_id) == (
            TaskStatus.DISPATCHED,
            1,
            p.instance_id,
        )
        stored = await store.read(p.task.task_id)
        assert stored is not None and stored.task == p.task and stored.scores == Scores(99.0, None)
        assert store.hint(p.task.task_id) == stored  # the exact JSON a later compare-and-set expects
        assert await client.sismember(f"{prefix}:instance:{p.instance_id}:tasks", p.task.task_id)
    assert await client.smembers(f"{prefix}:children:p1") == {t.task_id for t in tasks}
    # a known id: nothing written, nothing picked (the rotation stays where it was)
    again = await picker.place(store, tasks[0], retry_at=10.0, deadline=99.0)
    assert again is None and int(await client.get(keys.rotation("echo"))) == 4


async def test_a_new_task_no_instance_can_take_waits_pending(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = TaskStore(client, prefix)
    picker = RedisPicker(store.scripts, prefix)
    task = Task(task_id="t1", target_agent="calculator")
    placed = await picker.place(store, task, retry_at=10.0, deadline=99.0)
    assert placed is not None and placed.instance_id is None and placed.task == task
    stored = await store.read("t1")
    assert stored is not None and stored.task.status is TaskStatus.PENDING
    assert stored.scores == Scores(None, 10.0)
