"""Instances, cards and picks in Redis, shared by every registry replica.

- ``reg:inst:<id>``  the instance's last heartbeat, expiring after N missed heartbeats;
- ``reg:known``      instance ids believed alive (the sweeper compares it with the keys above);
- ``reg:agent:<a>``  instance ids serving agent ``a``; ``reg:agents`` every agent id ever seen in
  a heartbeat (never shrinks: it is what "a known agent" means, answered on
  ``loom.registry.agents`` so the dispatcher can refuse tasks for agents nobody ever ran);
- ``reg:rr:<a>``     the round-robin counter of agent ``a`` (INCR is atomic across replicas);
- ``reg:draining``   instance ids whose last heartbeat said they are draining (never picked).

A round-robin pick is one Lua script (one round trip, atomic): the live, non-draining instances
of the agent in id order, the excluded ones left out unless nothing else is left, and the
agent's counter INCRed to choose among them, so replicas share one rotation.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from loom_protocol import Heartbeat, PickReply, PickRequest
from redis.asyncio import Redis
from redis.exceptions import RedisError

# KEYS: the agent's instance set, its round-robin counter, the draining set.
# ARGV: the instance key prefix, then the excluded instance ids. The instance keys are built
# here from the prefix (not declared in KEYS): fine on one Redis, not on Redis Cluster.
# Answers {instance id or nil, number of candidates}.
_PICK_LUA = """
local ids = redis.call('SMEMBERS', KEYS[1])
table.sort(ids)
local excluded = {}
for i = 2, #ARGV do excluded[ARGV[i]] = true end
local live, others = {}, {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 and redis.call('SISMEMBER', KEYS[3], id) == 0 then
    live[#live + 1] = id
    if not excluded[id] then others[#others + 1] = id end
  end
end
local candidates = others
if #candidates == 0 then candidates = live end
if #candidates == 0 then return {false, 0} end
local turn = redis.call('INCR', KEYS[2])
return {candidates[((turn - 1) % #candidates) + 1], #candidates}
"""


def _text(values: Iterable[Any]) -> list[str]:
    """Redis replies as str (the client decodes responses; its stubs say bytes | str)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


@dataclass(frozen=True)
class Instance:
    heartbeat: Heartbeat
    age_s: float

    @property
    def pickable(self) -> bool:
        return not self.heartbeat.draining


class Membership:
    def __init__(self, redis: Redis, prefix: str, missed_heartbeats: int) -> None:
        self._redis = redis
        self._p = f"{prefix}:reg"
        self._missed = missed_heartbeats
        self._pick = redis.register_script(_PICK_LUA)  # EVALSHA, loaded again if Redis lost it

    async def ping(self) -> bool:
        """True when Redis answers (for /readyz)."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    def _inst(self, instance_id: str) -> str:
        return f"{self._p}:inst:{instance_id}"

    def _agent(self, agent_id: str) -> str:
        return f"{self._p}:agent:{agent_id}"

    async def record(self, hb: Heartbeat) -> bool:
        """Store a heartbeat; True when the instance was not known before (it just came up)."""
        ttl_ms = max(1, int(hb.interval_s * self._missed * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._inst(hb.instance_id), hb.to_json(), px=ttl_ms)
            pipe.sadd(f"{self._p}:known", hb.instance_id)
            if hb.draining:
                pipe.sadd(f"{self._p}:draining", hb.instance_id)
            else:
                pipe.srem(f"{self._p}:draining", hb.instance_id)
            for agent_id in hb.agent_ids:
                pipe.sadd(self._agent(agent_id), hb.instance_id)
                pipe.sadd(f"{self._p}:agents", agent_id)
            results = await pipe.execute()
        return bool(results[1])

    async def forget(self, instance_id: str) -> bool:
        """Remove an instance that said goodbye; True if this replica removed it."""
        await self._redis.delete(self._inst(instance_id))
        if not await self._redis.srem(f"{self._p}:known", instance_id):
            return False
        await self._drop([instance_id])
        return True

    async def evict_expired(self) -> list[str]:
        """Forget instances whose heartbeat expired; returns those this replica evicted."""
        known = sorted(_text(await self._redis.smembers(f"{self._p}:known")))
        if not known:
            return []
        alive = await self._redis.mget([self._inst(i) for i in known])
        evicted = []
        for instance_id, raw in zip(known, alive, strict=True):
            if raw is None and await self._redis.srem(f"{self._p}:known", instance_id):
                evicted.append(instance_id)  # SREM is the claim: one replica wins it
        if evicted:
            await self._drop(evicted)
        return evicted

    async def _drop(self, instance_ids: list[str]) -> None:
        """Take instances already removed from ``known`` out of every agent set and ``draining``."""
        agents = _text(await self._redis.smembers(f"{self._p}:agents"))
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent_id in agents:
                pipe.srem(self._agent(agent_id), *instance_ids)
            pipe.srem(f"{self._p}:draining", *instance_ids)
            await pipe.execute()

    async def known_agents(self) -> list[str]:
        """Every agent id ever seen in a heartbeat, sorted (kept in Redis across restarts)."""
        return sorted(_text(await self._redis.smembers(f"{self._p}:agents")))

    async def is_known(self, agent_id: str) -> bool:
        """True when a heartbeat of an instance hosting ``agent_id`` was ever received."""
        return bool(await self._redis.sismember(f"{self._p}:agents", agent_id))

    async def instances_of(self, agent_id: str) -> list[Instance]:
        ids = sorted(_text(await self._redis.smembers(self._agent(agent_id))))
        return await self._load(ids)

    async def all_instances(self) -> list[Instance]:
        return await self._load(sorted(_text(await self._redis.smembers(f"{self._p}:known"))))

    async def _load(self, ids: list[str]) -> list[Instance]:
        if not ids:
            return []
        now = time.time()
        out = []
        for raw in await self._redis.mget([self._inst(i) for i in ids]):
            if raw is not None:
                hb = Heartbeat.from_json(raw)
                out.append(Instance(hb, max(0.0, now - hb.sent_at.timestamp())))
        return out

    async def pick(self, request: PickRequest, strategy: Literal["round_robin", "least_loaded"]) -> PickReply:
        if strategy == "round_robin":
            return await self._pick_round_robin(request)
        live = [i for i in await self.instances_of(request.agent_id) if i.pickable]
        candidates = [i for i in live if i.heartbeat.instance_id not in request.exclude] or live
        if not candidates:
            return self._none(request)
        turn = await self._redis.incr(f"{self._p}:rr:{request.agent_id}")
        lowest = min(i.heartbeat.load.in_flight / i.heartbeat.load.capacity for i in candidates)
        candidates = [
            i for i in candidates if i.heartbeat.load.in_flight / i.heartbeat.load.capacity == lowest
        ]
        chosen = candidates[(turn - 1) % len(candidates)]
        return PickReply(
            agent_id=request.agent_id, instance_id=chosen.heartbeat.instance_id, candidates=len(candidates)
        )

    async def _pick_round_robin(self, request: PickRequest) -> PickReply:
        keys = [self._agent(request.agent_id), f"{self._p}:rr:{request.agent_id}", f"{self._p}:draining"]
        instance_id, candidates = await self._pick(keys=keys, args=[self._inst(""), *request.exclude])
        if instance_id is None:
            return self._none(request)
        return PickReply(agent_id=request.agent_id, instance_id=instance_id, candidates=int(candidates))

    @staticmethod
    def _none(request: PickRequest) -> PickReply:
        return PickReply(agent_id=request.agent_id, reason=f"no live instance of agent {request.agent_id}")
