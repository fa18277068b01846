"""The eviction sweep: declares instances that missed their heartbeats down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from faststream.nats import NatsBroker
from loom_protocol import MemberChanged, MembershipChange
from prometheus_client import Counter, Gauge

from .consul_mirror import ConsulMirror
from .handlers import announce
from .membership import Membership

log = logging.getLogger(__name__)
INSTANCES = Gauge("loom_registry_instances", "Live instances known to the registry")
HOLDS = Counter(
    "loom_registry_eviction_holds_total",
    "Times evictions were held: the registry lost its broker connection or its Redis",
    ["lost"],
)
HEARTBEAT_AGE = Gauge(
    "loom_registry_heartbeat_age_seconds", "Age of each instance's last heartbeat", ["instance"]
)


class EvictionHold:
    """When evictions are held: while the registry's own broker connection is down, while its
    Redis does not answer, and for ``grace_s`` after either comes back (and after start-up).

    A heartbeat gap that coincides with the registry's loss of the broker or of Redis says
    nothing about the instance: its heartbeats had nowhere to go, or could not be stored. The
    keys in Redis expire all the same, so without the hold every live instance would be
    declared down when the connection comes back. Fed by the broker's connection callbacks
    (:meth:`lost`, :meth:`back`), by :meth:`check`, which polls the broker connection on every
    sweep (a drop too short for the callbacks is still seen), and by :meth:`store`, which the
    sweep calls with the outcome of its Redis ping.
    """

    def __init__(
        self, grace_s: float, connected: Callable[[], bool], *, startup_grace_s: float | None = None
    ) -> None:
        self._grace_s = grace_s
        self._connected = connected
        self._down: set[str] = set()  # "broker", "redis"
        # a registry that was down saw no heartbeats
        self._until = time.monotonic() + (grace_s if startup_grace_s is None else startup_grace_s)

    def lost(self, what: str = "broker") -> None:
        if what not in self._down:
            HOLDS.labels(what).inc()
            log.warning(
                "%s connection lost: evictions held until it is back and %g s more", what, self._grace_s
            )
        self._down.add(what)

    def back(self, what: str = "broker") -> None:
        self._down.discard(what)
        self._until = max(self._until, time.monotonic() + self._grace_s)
        log.info("%s connection back: evictions held %g s more", what, self._grace_s)

    def store(self, answers: bool) -> None:
        """The outcome of a Redis ping: holds evictions while Redis is unreachable."""
        if not answers:
            self.lost("redis")
        elif "redis" in self._down:
            self.back("redis")

    def check(self) -> bool:
        """True when an eviction may happen now."""
        connected = self._connected()
        if not connected:
            self.lost()
        elif "broker" in self._down:
            self.back()
        return connected and not self._down and time.monotonic() >= self._until


def is_connected(broker: NatsBroker) -> bool:
    """Whether ``broker`` holds a live connection to a NATS server now."""
    try:
        return bool(broker.connection.is_connected)
    except Exception:  # not connected yet (no connection object)
        return False


async def evict_forever(
    broker: NatsBroker,
    membership: Membership,
    interval_s: float,
    grace_s: float,
    mirror: ConsulMirror | None,
    stop: asyncio.Event,
    hold: EvictionHold | None = None,
) -> None:
    """Evict instances whose heartbeats expired every ``interval_s`` until ``stop`` is set (an event,
    not cancellation, which a library may swallow); never while ``hold`` holds evictions (by
    default: for ``grace_s`` after start-up and after every reconnect to NATS or Redis, and while
    either is unreachable)."""
    hold = hold or EvictionHold(grace_s, lambda: is_connected(broker))
    while not stop.is_set():
        try:
            hold.store(await membership.ping())
            evicted = await membership.evict_expired() if hold.check() else []
            for instance_id in evicted:
                log.warning("instance down: missed heartbeats", extra={"instance_id": instance_id})
                if mirror is not None:
                    await mirror.down(instance_id)
                await announce(
                    broker,
                    MemberChanged(
                        instance_id=instance_id, change=MembershipChange.DOWN, reason="missed heartbeats"
                    ),
                )
            instances = await membership.all_instances()
            INSTANCES.set(len(instances))
            for inst in instances:
                HEARTBEAT_AGE.labels(inst.heartbeat.instance_id).set(inst.age_s)
            for instance_id in evicted:
                with contextlib.suppress(KeyError):  # never seen by this replica
                    HEARTBEAT_AGE.remove(instance_id)
        except Exception:
            log.exception("eviction sweep failed; trying again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
