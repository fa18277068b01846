"""Picks against a real Redis (a fresh key prefix per test; `make test` needs Redis reachable
at LOOM_REDIS_URL): round-robin over live instances, draining and excluded instances, expiry."""

from __future__ import annotations

import asyncio
import collections

import pytest
from loom_protocol import PICK_SCRIPT, AgentCard, Heartbeat, InstanceLoad, PickRequest, RegistryKeys
from loom_registry.membership import Membership
from redis.asyncio import Redis


@pytest.fixture
def membership(redis: tuple[Redis, str]) -> Membership:
    return Membership(*redis, missed_heartbeats=3)


def beat(
    instance_id: str, *agents: str, draining: bool = False, interval_s: float = 5.0, in_flight: int = 0
) -> Heartbeat:
    return Heartbeat(
        instance_id=instance_id,
        agents=[AgentCard(agent_id=a, name=a) for a in agents],
        host="127.0.0.1",
        pid=1,
        load=InstanceLoad(in_flight=in_flight, capacity=4),
        draining=draining,
        interval_s=interval_s,
    )


async def test_round_robin_is_fair_and_shared_by_replicas(membership: Membership) -> None:
    for i in range(3):
        await membership.record(beat(f"w{i}", "echo"))
    await membership.record(beat("other", "calculator"))
    # two "replicas" (the same keys) answering concurrently share one rotation
    replicas = [membership, Membership(membership._redis, membership.keys.prefix, 3)]
    replies = []
    for _ in range(10):  # 30 at a time: within the client's connection pool
        replies += await asyncio.gather(
            *(replicas[n % 2].pick(PickRequest(agent_id="echo"), "round_robin") for n in range(30))
        )
    counts = collections.Counter(r.instance_id for r in replies)
    assert counts == {"w0": 100, "w1": 100, "w2": 100}
    assert {r.candidates for r in replies} == {3}


async def test_draining_and_excluded_instances(membership: Membership) -> None:
    await membership.record(beat("a", "echo"))
    await membership.record(beat("b", "echo"))
    await membership.record(beat("a", "echo", draining=True))
    picks = {
        (await membership.pick(PickRequest(agent_id="echo"), "round_robin")).instance_id for _ in range(4)
    }
    assert picks == {"b"}
    await membership.record(beat("a", "echo"))  # back from draining
    excluded = PickRequest(agent_id="echo", exclude=["b"])
    picks = {(await membership.pick(excluded, "round_robin")).instance_id for _ in range(4)}
    assert picks == {"a"}
    only_b = PickRequest(agent_id="echo", exclude=["a", "b"])  # nothing else: the excluded are fine
    assert (await membership.pick(only_b, "round_robin")).candidates == 2


async def test_no_instance_and_expired_heartbeats(membership: Membership) -> None:
    reply = await membership.pick(PickRequest(agent_id="echo"), "round_robin")
    assert reply.instance_id is None and reply.reason == "no live instance of agent echo"
    await membership.record(beat("gone", "echo", interval_s=0.02))  # expires after 60 ms
    await membership.record(beat("stays", "echo"))
    await asyncio.sleep(0.2)
    picks = {
        (await membership.pick(PickRequest(agent_id="echo"), "round_robin")).instance_id for _ in range(4)
    }
    assert picks == {"stays"}


async def test_least_loaded_still_answers(membership: Membership) -> None:
    await membership.record(beat("x", "echo"))
    reply = await membership.pick(PickRequest(agent_id="echo"), "least_loaded")
    assert reply.instance_id == "x" and reply.candidates == 1


async def test_least_loaded_picks_among_the_least_loaded_in_turn(membership: Membership) -> None:
    await membership.record(beat("busy", "echo", in_flight=3))
    await membership.record(beat("idle-a", "echo", in_flight=1))
    await membership.record(beat("idle-b", "echo", in_flight=1))
    picks = [
        (await membership.pick(PickRequest(agent_id="echo"), "least_loaded")).instance_id for _ in range(4)
    ]
    assert sorted(picks) == ["idle-a", "idle-a", "idle-b", "idle-b"]
    excluded = PickRequest(agent_id="echo", exclude=["idle-a", "idle-b"])
    assert (await membership.pick(excluded, "least_loaded")).instance_id == "busy"


async def test_a_picker_naming_no_strategy_follows_the_registrys(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    registry = Membership(client, prefix, 3, strategy="least_loaded")
    await registry.record(beat("busy", "echo", in_flight=4))
    await registry.record(beat("idle", "echo", in_flight=0))
    # what the dispatcher runs: the protocol's script and keys, no strategy named
    keys = RegistryKeys(prefix)
    script = client.register_script(PICK_SCRIPT)
    for _ in range(3):
        instance_id, candidates = await script(keys=keys.pick_keys("echo"), args=keys.pick_args())
        assert (instance_id, candidates) == ("idle", 1)
    assert await client.get(keys.strategy) == "least_loaded"


async def test_known_agents_are_every_agent_ever_seen_even_after_its_instances_left(
    membership: Membership,
) -> None:
    assert await membership.known_agents() == []
    await membership.record(beat("w1", "echo", "calculator"))
    await membership.record(beat("w2", "orchestrator"))
    assert await membership.forget("w2")
    assert await membership.known_agents() == ["calculator", "echo", "orchestrator"]
    assert await membership.is_known("orchestrator")
    assert not await membership.is_known("calculater")
    # another replica (or a restarted registry) reads the same answer from Redis
    again = Membership(membership._redis, membership.keys.prefix, 3)
    assert await again.known_agents() == ["calculator", "echo", "orchestrator"]
