"""The stack a chaos run breaks: registry, dispatcher, three workers, ingest (on TimescaleDB through
the run's TCP proxy) and query, each a process on the run's own nats-server and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
from loom_protocol import MSG_ID_HEADER, Task, subjects, submitted_msg_id

from tests.integration.events_support import FAST_INGEST, fresh_database
from tests.integration.harness import DATABASE_URL, Service

from .infra import OwnNats, OwnRedis, TcpProxy, upstream_of

WORKERS = ("w0", "w1", "w2")


class ChaosStack:
    """Processes and infrastructure of one chaos run, each reachable by name for a fault."""

    def __init__(self, log_dir: Path, database_url: str) -> None:
        self.log_dir = log_dir
        self.database_url = database_url
        self.nats = OwnNats(log_dir)
        self.redis = OwnRedis(log_dir)
        self.proxy = TcpProxy(*upstream_of(DATABASE_URL))
        self.services: dict[str, Service] = {}
        self.nc: Any = None

    def _env(self) -> dict[str, str]:
        return {
            "LOOM_NATS_URL": self.nats.url,
            "LOOM_REDIS_URL": self.redis.url,
            "LOOM_REDIS_PREFIX": "chaos",
            "LOOM_DATABASE_URL": self.database_url,
            "LOOM_LOG_LEVEL": "INFO",
        }

    def _add(self, name: str, module: str, **env: str) -> Service:
        svc = Service(name, module, {**self._env(), **env}, self.log_dir)
        self.services[name] = svc
        return svc

    async def start(self) -> None:
        await self.nats.started()
        await self.redis.started()
        await self.proxy.start()
        first = [
            self._add("registry", "loom_registry"),
            self._add(
                "dispatcher",
                "loom_dispatcher",
                LOOM_RETRY_BACKOFF_S="0.05",
                LOOM_TASK_TIMEOUT_S="30",
                LOOM_NO_INSTANCE_TIMEOUT_S="30",
            ),
            self._add("ingest", "loom_ingest", **{**FAST_INGEST, "LOOM_DATABASE_URL": self.proxy_url}),
        ]
        await asyncio.gather(*(svc.started(90) for svc in first))
        rest = [self._add("query", "loom_query")]
        rest += [
            self._add(
                f"worker-{name}",
                "loom_agent_worker",
                LOOM_INSTANCE_ID=name,
                LOOM_WORKER_AGENTS="calculator",
                LOOM_HEARTBEAT_INTERVAL_S="0.5",
                LOOM_DRAIN_TIMEOUT_S="5",
            )
            for name in WORKERS
        ]
        await asyncio.gather(*(svc.started(90) for svc in rest))
        self.nc = await nats.connect(
            self.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.25, connect_timeout=2
        )

    @property
    def proxy_url(self) -> str:
        return self.proxy.url_for(self.database_url)

    @property
    def js(self) -> Any:
        return self.nc.jetstream(timeout=5)

    async def stop(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        for svc in reversed(list(self.services.values())):
            await asyncio.to_thread(svc.stop)
        await self.proxy.stop()
        self.redis.stop()
        self.nats.stop()

    async def crash_and_restart(self, name: str) -> None:
        """kill -9 of one service, then start it again and wait for /readyz."""
        svc = self.services[name]
        svc.kill()
        svc.start()
        await svc.ready(90)

    async def all_ready(self, timeout: float = 60) -> None:
        await asyncio.gather(*(svc.ready(timeout) for svc in self.services.values()))

    async def worker_in_flight(self, name: str) -> float:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                text = (await client.get(f"{self.services[f'worker-{name}'].url}/metrics")).text
        except httpx.HTTPError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("loom_worker_in_flight "):
                return float(line.split()[1])
        return 0.0

    async def submit(self, task: Task, deadline_s: float = 90) -> None:
        """Publish a submission until JetStream acknowledges it (the same msg id every time)."""
        headers = {MSG_ID_HEADER: submitted_msg_id(task.task_id)}
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            try:
                await self.js.publish(
                    subjects.task_submitted(task.target_agent), task.to_json(), headers=headers, timeout=2
                )
                return
            except Exception:
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def chaos_stack(log_dir: Path) -> AsyncIterator[ChaosStack]:
    async with fresh_database() as database_url:
        stack = ChaosStack(log_dir, database_url)
        try:
            await stack.start()
            yield stack
        finally:
            await stack.stop()
