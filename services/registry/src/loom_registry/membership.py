"""Instances, cards and picks in Redis, shared by every registry replica.

The key layout and the pick script are the protocol's (:mod:`loom_protocol.registry_state`):
the dispatcher picks from this state too. A pick is one Lua script (one round trip, atomic):
the live, non-draining instances of the agent in id order, the excluded ones left out unless
nothing else is left (and with ``least_loaded`` the least loaded of them), and the agent's
counter INCRed to choose among them, so every picker shares one rotation. Each heartbeat also
stores the registry's strategy, which a picker that does not name one follows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loom_protocol import PICK_SCRIPT, Heartbeat, PickReply, PickRequest, PickStrategy, RegistryKeys
from redis.asyncio import Redis
from redis.exceptions import RedisError


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
    def __init__(
        self, redis: Redis, prefix: str, missed_heartbeats: int, strategy: PickStrategy = "round_robin"
    ) -> None:
        self._redis = redis
        self.keys = RegistryKeys(prefix)
        self._missed = missed_heartbeats
        self.strategy: PickStrategy = strategy
        self._pick = redis.register_script(PICK_SCRIPT)  # EVALSHA, loaded again if Redis lost it

    async def ping(self) -> bool:
        """True when Redis answers (for /readyz)."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def record(self, hb: Heartbeat) -> bool:
        """Store a heartbeat; True when the instance was not known before (it just came up)."""
        ttl_ms = max(1, int(hb.interval_s * self._missed * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.instance(hb.instance_id), hb.to_json(), px=ttl_ms)
            pipe.sadd(self.keys.known, hb.instance_id)
            if hb.draining:
                pipe.sadd(self.keys.draining, hb.instance_id)
            else:
                pipe.srem(self.keys.draining, hb.instance_id)
            for agent_id in hb.agent_ids:
                pipe.sadd(self.keys.agent(agent_id), hb.instance_id)
                pipe.sadd(self.keys.agents, agent_id)
            pipe.set(self.keys.strategy, self.strategy)
            results = await pipe.execute()
        return bool(results[1])

    async def forget(self, instance_id: str) -> bool:
        """Remove an instance that said goodbye; True if this replica removed it."""
        await self._redis.delete(self.keys.instance(instance_id))
        if not await self._redis.srem(self.keys.known, instance_id):
            return False
        await self._drop([instance_id])
        return True

    async def evict_expired(self) -> list[str]:
        """Forget instances whose heartbeat expired; returns those this replica evicted."""
        known = sorted(_text(await self._redis.smembers(self.keys.known)))
        if not known:
            return []
        alive = await self._redis.mget([self.keys.instance(i) for i in known])
        evicted = []
        for instance_id, raw in zip(known, alive, strict=True):
            if raw is None and await self._redis.srem(self.keys.known, instance_id):
                evicted.append(instance_id)  # SREM is the claim: one replica wins it
        if evicted:
            await self._drop(evicted)
        return evicted

    async def _drop(self, instance_ids: list[str]) -> None:
        """Take instances already removed from ``known`` out of every agent set and ``draining``."""
        agents = _text(await self._redis.smembers(self.keys.agents))
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent_id in agents:
                pipe.srem(self.keys.agent(agent_id), *instance_ids)
            pipe.srem(self.keys.draining, *instance_ids)
            await pipe.execute()

    async def known_agents(self) -> list[str]:
        """Every agent id ever seen in a heartbeat, sorted (kept in Redis across restarts)."""
        return sorted(_text(await self._redis.smembers(self.keys.agents)))

    async def is_known(self, agent_id: str) -> bool:
        """True when a heartbeat of an instance hosting ``agent_id`` was ever received."""
        return bool(await self._redis.sismember(self.keys.agents, agent_id))

    async def instances_of(self, agent_id: str) -> list[Instance]:
        ids = sorted(_text(await self._redis.smembers(self.keys.agent(agent_id))))
        return await self._load(ids)

    async def all_instances(self) -> list[Instance]:
        return await self._load(sorted(_text(await self._redis.smembers(self.keys.known))))

    async def _load(self, ids: list[str]) -> list[Instance]:
        if not ids:
            return []
        now = time.time()
        out = []
        for raw in await self._redis.mget([self.keys.instance(i) for i in ids]):
            if raw is not None:
                hb = Heartbeat.from_json(raw)
                out.append(Instance(hb, max(0.0, now - hb.sent_at.timestamp())))
        return out

    async def pick(self, request: PickRequest, strategy: PickStrategy | None = None) -> PickReply:
        """Pick an instance for ``request`` by ``strategy`` (default: this registry's)."""
        keys = self.keys.pick_keys(request.agent_id)
        args = self.keys.pick_args(strategy or self.strategy, tuple(request.exclude))
        instance_id, candidates = await self._pick(keys=keys, args=args)
        if instance_id is None:
            return self._none(request)
        text = instance_id.decode() if isinstance(instance_id, bytes) else str(instance_id)
        return PickReply(agent_id=request.agent_id, instance_id=text, candidates=int(candidates))

    @staticmethod
    def _none(request: PickRequest) -> PickReply:
        return PickReply(agent_id=request.agent_id, reason=f"no live instance of agent {request.agent_id}")
