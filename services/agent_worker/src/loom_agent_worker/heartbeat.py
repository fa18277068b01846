"""Heartbeats on their own timer: a busy task loop never makes the instance look dead."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from faststream.nats import NatsBroker
from loom_protocol import Heartbeat, subjects
from prometheus_client import Counter

from .execution import Executor
from .outbox import JSON, Outbox

log = logging.getLogger(__name__)
ANNOUNCED = Counter("loom_worker_reconnect_heartbeats_total", "Heartbeats sent at once on a broker reconnect")


class Heartbeater:
    def __init__(self, broker: NatsBroker, executor: Executor, interval_s: float, version: str) -> None:
        self._outbox = Outbox(broker)
        self._executor = executor
        self._interval_s = interval_s
        self._version = version
        self._task: asyncio.Task[None] | None = None

    def heartbeat(self) -> Heartbeat:
        ex = self._executor
        return Heartbeat(
            instance_id=ex.instance_id,
            agents=[a.agent_card for a in ex.agents.values()],
            host=socket.gethostname(),
            pid=os.getpid(),
            load=ex.load,
            version=self._version,
            draining=ex.draining,
            interval_s=self._interval_s,
        )

    async def beat(self) -> None:
        await self._outbox.core(
            subjects.registry_heartbeat(self._executor.instance_id), self.heartbeat().to_json(), JSON
        )

    async def announce(self) -> None:
        """A heartbeat now, off the timer (on reconnect); a failure is logged, never raised."""
        try:
            await self.beat()
            ANNOUNCED.inc()
        except Exception as exc:
            log.warning("heartbeat on reconnect not sent: %r", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _forever(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self._interval_s)
