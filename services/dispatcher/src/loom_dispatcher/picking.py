"""Picks an instance for a task straight from the registry's state in Redis.

The registry keeps its state (heartbeats, agent sets, rotation counters) in the Redis the
dispatcher also uses; the protocol describes its keys and the pick script
(:mod:`loom_protocol.registry_state`). Running that script here makes a pick one EVALSHA, sent
with the task store's other scripts of the same event-loop turn, instead of a NATS request to
the registry's process that then makes the same call. The rotation is the same counter the
registry increments, so picks stay fair across every dispatcher and registry replica, and the
strategy is the one the registry stores with each heartbeat. docs/adr/0006-picks.md.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from loom_protocol import MAX_STRIKES, PICK_SCRIPT, STRIKE_SCRIPT, PickReply, RegistryKeys, Task
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from .errors import RegistryUnavailable
from .scripts import ScriptBatcher
from .store import PickCall, Placed, TaskStore
from .telemetry import span


def reply_of(agent_id: str, instance_id: str | None, candidates: int) -> PickReply:
    """A pick's answer: the instance and how many it was chosen among, or why there is none."""
    if instance_id is None:
        return PickReply(agent_id=agent_id, reason=f"no live instance of agent {agent_id}")
    return PickReply(agent_id=agent_id, instance_id=instance_id, candidates=candidates)


def _pick_span(agent_id: str) -> AbstractContextManager[object]:
    return span("registry.pick", {"loom.agent": agent_id}, kind=SpanKind.CLIENT)


class RedisPicker:
    def __init__(self, scripts: ScriptBatcher, prefix: str, max_strikes: int = MAX_STRIKES) -> None:
        self._keys = RegistryKeys(prefix)
        self._pick = scripts.script(PICK_SCRIPT)
        self._max_strikes = max_strikes

    def _call(self, agent_id: str) -> PickCall:
        return PickCall(self._keys.pick_keys(agent_id), self._keys.pick_args(max_strikes=self._max_strikes))

    async def pick(self, agent_id: str, task_id: str) -> PickReply:
        with _pick_span(agent_id):
            try:
                call = self._call(agent_id)
                instance_id, candidates = await self._pick(keys=call.keys, args=call.args)
            except (RedisError, OSError) as exc:
                raise RegistryUnavailable(f"no pick for {agent_id}: Redis failed: {exc!r}") from exc
        return reply_of(agent_id, None if instance_id is None else str(instance_id), int(candidates))

    async def place(self, store: TaskStore, task: Task, *, retry_at: float, deadline: float) -> Placed | None:
        """Pick for a new task and store it at the pick in one script
        (:meth:`TaskStore.create_at_pick`); None when its id is already stored."""
        with _pick_span(task.target_agent):
            return await store.create_at_pick(
                task, self._call(task.target_agent), retry_at=retry_at, deadline=deadline
            )


class RedisStrikes:
    """Counts an instance's timed-out and failed attempts under the registry's state, where every
    pick script sees them: an instance with enough strikes in the window is picked only when no
    other instance of the agent is live (a worker that hangs or fails everything stops taking
    work until its strikes expire)."""

    def __init__(self, scripts: ScriptBatcher, prefix: str, window_s: float) -> None:
        self._keys = RegistryKeys(prefix)
        self._strike = scripts.script(STRIKE_SCRIPT)
        self._window_ms = str(max(1, int(window_s * 1000)))

    async def strike(self, instance_id: str) -> int:
        """One more strike of ``instance_id``; its strikes in the window."""
        return int(await self._strike(keys=[self._keys.strikes(instance_id)], args=[self._window_ms]))
