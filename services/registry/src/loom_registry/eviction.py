"""The eviction sweep: declares instances that missed their heartbeats down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from faststream.nats import NatsBroker
from loom_protocol import MemberChanged, MembershipChange
from prometheus_client import Gauge

from .consul_mirror import ConsulMirror
from .handlers import announce
from .membership import Membership

log = logging.getLogger(__name__)
INSTANCES = Gauge("loom_registry_instances", "Live instances known to the registry")
HEARTBEAT_AGE = Gauge(
    "loom_registry_heartbeat_age_seconds", "Age of each instance's last heartbeat", ["instance"]
)


async def evict_forever(
    broker: NatsBroker,
    membership: Membership,
    interval_s: float,
    grace_s: float,
    mirror: ConsulMirror | None,
    stop: asyncio.Event,
) -> None:
    """Evict instances whose heartbeats expired every ``interval_s`` until ``stop`` is set (an event,
    not cancellation, which a library may swallow)."""
    # A registry that was down saw no heartbeats: give instances one grace period to send
    # theirs before declaring anyone down, so a registry restart does not evict the fleet.
    evict_after = time.monotonic() + grace_s
    while not stop.is_set():
        try:
            evicted = await membership.evict_expired() if time.monotonic() >= evict_after else []
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
