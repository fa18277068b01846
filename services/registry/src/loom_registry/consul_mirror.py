"""Optional mirror of the registry into Consul (py-consul): each agent an instance serves becomes
a Consul service with a TTL check that heartbeats keep passing. Off unless LOOM_CONSUL_URL is set.

The registry's own view (Redis) stays the source of truth for picks; Consul is for operators and
other tools that discover services there. py-consul's client is synchronous, so calls run in a
thread and never hold up heartbeat handling; a failing Consul is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import consul
from consul.check import Check
from loom_protocol import Heartbeat

log = logging.getLogger(__name__)


def service_id(instance_id: str, agent_id: str) -> str:
    return f"loom-{instance_id}-{agent_id}"


def service_registrations(hb: Heartbeat, missed_heartbeats: int) -> list[dict[str, Any]]:
    """The Consul service definitions (agent.service.register keyword arguments) of a heartbeat."""
    ttl = f"{max(1, round(hb.interval_s * missed_heartbeats))}s"
    return [
        {
            "name": f"loom-{card.agent_id}",
            "service_id": service_id(hb.instance_id, card.agent_id),
            "address": hb.host,
            "tags": [
                "loom",
                f"instance:{hb.instance_id}",
                *(f"capability:{c.value}" for c in card.capabilities),
            ],
            "meta": {
                "instance_id": hb.instance_id,
                "agent_id": card.agent_id,
                "pid": str(hb.pid),
                "version": hb.version,
            },
            "check": {**Check.ttl(ttl), "DeregisterCriticalServiceAfter": "1m"},
        }
        for card in hb.agents
    ]


class ConsulMirror:
    def __init__(self, url: str, missed_heartbeats: int, token: str | None = None) -> None:
        parts = urlsplit(url)
        self._client = consul.Consul(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8500,
            scheme=parts.scheme or "http",
            token=token,
        )
        self._missed = missed_heartbeats
        self._known: dict[str, list[str]] = {}

    async def heartbeat(self, hb: Heartbeat) -> None:
        try:
            await asyncio.to_thread(self._sync_heartbeat, hb)
        except Exception as exc:  # Consul is optional: never let it break the registry
            log.warning("consul mirror failed: %r", exc, extra={"instance_id": hb.instance_id})

    def _sync_heartbeat(self, hb: Heartbeat) -> None:
        ids = [service_id(hb.instance_id, a) for a in hb.agent_ids]
        if self._known.get(hb.instance_id) != ids:
            for registration in service_registrations(hb, self._missed):
                self._client.agent.service.register(**registration)
            self._known[hb.instance_id] = ids
        for sid in ids:
            self._client.agent.check.ttl_pass(f"service:{sid}")

    async def down(self, instance_id: str) -> None:
        try:
            await asyncio.to_thread(self._sync_down, instance_id)
        except Exception as exc:
            log.warning("consul mirror failed: %r", exc, extra={"instance_id": instance_id})

    def _sync_down(self, instance_id: str) -> None:
        for sid in self._known.pop(instance_id, []):
            self._client.agent.service.deregister(sid)
