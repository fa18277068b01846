"""Fixtures: a fresh nats-server per test, the machine's Redis under a per-test key prefix, and
Loom service processes started on free ports and stopped in ``finally``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import redis.asyncio as aioredis
from dotenv import dotenv_values

from .harness import REPO, NatsServer, Service, wait_for

pytestmark = pytest.mark.integration


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or dotenv_values(REPO / ".env").get(name) or default


REDIS_URL = _setting("LOOM_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = _setting("LOOM_DATABASE_URL", "postgresql://postgres@127.0.0.1:5433/loom")


class Stack:
    """The services of one test, all on the test's own nats-server and Redis prefix."""

    def __init__(self, nats_server: NatsServer, log_dir: Path, prefix: str) -> None:
        self.nats_server = nats_server
        self.log_dir = log_dir
        self.prefix = prefix
        self.services: list[Service] = []
        self.dispatchers: list[Service] = []
        self.registries: list[Service] = []
        self.workers: dict[str, Service] = {}
        self.nc: Any = None

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "LOOM_NATS_URL": self.nats_server.url,
            "LOOM_REDIS_URL": REDIS_URL,
            "LOOM_DATABASE_URL": DATABASE_URL,
            "LOOM_REDIS_PREFIX": self.prefix,
            "LOOM_LOG_LEVEL": "INFO",
            **extra,
        }

    def service(self, name: str, module: str, **env: str) -> Service:
        """A Loom service process on this stack (not started yet: ``await svc.started()``)."""
        svc = Service(name, module, self.env(**env), self.log_dir)
        self.services.append(svc)
        return svc

    async def registry(self, **env: str) -> Service:
        svc = await self.service(f"registry-{len(self.registries)}", "loom_registry", **env).started()
        self.registries.append(svc)
        return svc

    async def dispatcher(self, **env: str) -> Service:
        env = {"LOOM_NO_INSTANCE_TIMEOUT_S": "3", "LOOM_TASK_TIMEOUT_S": "30", **env}
        svc = await self.service(f"dispatcher-{len(self.dispatchers)}", "loom_dispatcher", **env).started()
        self.dispatchers.append(svc)
        return svc

    async def worker(
        self, instance_id: str, agents: str = "echo,calculator,orchestrator", **env: str
    ) -> Service:
        env = {
            "LOOM_INSTANCE_ID": instance_id,
            "LOOM_WORKER_AGENTS": agents,
            "LOOM_HEARTBEAT_INTERVAL_S": "0.2",
            "LOOM_DRAIN_TIMEOUT_S": "5",
            **env,
        }
        svc = await self.service(f"worker-{instance_id}", "loom_agent_worker", **env).started()
        self.workers[instance_id] = svc
        return svc

    @property
    def api(self) -> str:
        return self.dispatchers[0].url

    async def wait_instances(self, agent_id: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait until the registry lists ``count`` live instances of ``agent_id``."""

        async def listed() -> list[dict[str, Any]] | None:
            async with httpx.AsyncClient(timeout=2) as client:
                body = (await client.get(f"{self.registries[0].url}/api/agents")).json()
            for agent in body["agents"]:
                if agent["agentId"] == agent_id and len(agent["instances"]) == count:
                    return list(agent["instances"])
            return None

        result: list[dict[str, Any]] = await wait_for(listed, timeout, f"{count} instances of {agent_id}")
        return result

    async def nats(self) -> Any:
        if self.nc is None:
            self.nc = await nats.connect(self.nats_server.url)
        return self.nc

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path, tmp_path / "jetstream")
    try:
        yield await server.started()
    finally:
        server.stop()


@pytest.fixture
async def stack(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Stack]:
    prefix = f"loomtest-{uuid.uuid4().hex[:10]}"
    s = Stack(nats_server, tmp_path, prefix)
    try:
        yield s
    finally:
        if s.nc is not None:
            await s.nc.close()
        s.stop()
        r = aioredis.from_url(REDIS_URL)
        try:
            keys = [k async for k in r.scan_iter(f"{prefix}:*", count=1000)]
            if keys:
                await r.delete(*keys)
        finally:
            await r.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
