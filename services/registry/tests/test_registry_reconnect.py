"""No false evictions: a registry whose NATS server or Redis goes away and comes back evicts no
live worker, and still evicts a dead one within its heartbeat TTL. A nats-server of the test's own
(stopped and started again on the same port and store), the real Redis (``redis`` fixture), and for
the Redis outage a redis-server of the test's own (append-only file on, so the heartbeat keys and
their expiry times survive the restart)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker
from loom_protocol import AgentCard, Heartbeat, InstanceLoad, subjects
from loom_protocol.jetstream import ALL_STREAMS, stream_create_request
from loom_registry.eviction import EvictionHold, evict_forever, is_connected
from loom_registry.handlers import build_router
from loom_registry.membership import Membership
from nats.aio.client import Client
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

INTERVAL_S = 0.2  # the worker's heartbeat interval: its key expires after 3 of them (0.6 s)


class ServerProcess:
    """One server process on a fixed port, which a test stops and starts again (same port and
    data): ``argv`` says how to run it."""

    name = "server"

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self._proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self._proc.poll() is None, f"{self.name} exited"
            assert time.monotonic() < deadline, f"{self.name} did not start in time"
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (redis-server writes its append-only file out first)."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


class NatsServer(ServerProcess):
    name = "nats-server"

    def __init__(self, store: Path) -> None:
        super().__init__()
        self._store = store

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        binary = str(Path(sys.executable).parent / "nats-server")
        return [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self._store)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "js")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Worker:
    """Heartbeats like the agent-worker: on a timer, and at once on every reconnect."""

    def __init__(self, instance_id: str, interval_s: float = INTERVAL_S) -> None:
        self.instance_id = instance_id
        self.interval_s = interval_s
        self.nc: Client | None = None
        self.beating = True
        self.last_beat = 0.0
        self._task: asyncio.Task[None] | None = None

    def _heartbeat(self) -> bytes:
        card = AgentCard(agent_id="echo", name="Echo")
        return Heartbeat(
            instance_id=self.instance_id,
            agents=[card],
            host="test",
            pid=1,
            load=InstanceLoad(in_flight=0, capacity=1),
            version="test",
            interval_s=self.interval_s,
        ).to_json()

    async def beat(self) -> None:
        assert self.nc is not None
        if self.beating and self.nc.is_connected:
            await self.nc.publish(subjects.registry_heartbeat(self.instance_id), self._heartbeat())
            self.last_beat = time.monotonic()

    async def start(self, url: str) -> None:
        async def reconnected() -> None:
            await self.beat()

        self.nc = await nats.connect(
            url, reconnected_cb=reconnected, reconnect_time_wait=0.05, max_reconnect_attempts=-1
        )
        self._task = asyncio.create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            try:
                await self.beat()
            except nats.errors.Error:  # disconnected: the next beat tries again
                pass
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.nc is not None:
            await self.nc.close()


class CountingMembership(Membership):
    """Membership that remembers every eviction and counts the sweeps that could evict."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix, 3)
        self.evicted: list[tuple[str, float]] = []
        self.sweeps = 0

    async def evict_expired(self) -> list[str]:
        self.sweeps += 1
        gone = await super().evict_expired()
        self.evicted += [(instance_id, time.monotonic()) for instance_id in gone]
        return gone


class RedisServer(ServerProcess):
    """redis-server with its append-only file on, so keys and their expiry survive a restart."""

    name = "redis-server"

    def __init__(self, data: Path) -> None:
        super().__init__()
        data.mkdir(parents=True, exist_ok=True)
        self._data = data

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server") or "redis-server"
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(self._data),
        ]


@asynccontextmanager
async def running_registry(
    server: NatsServer, client: Redis, prefix: str, grace_s: float = 1.0
) -> AsyncIterator[tuple[NatsBroker, CountingMembership, EvictionHold]]:
    membership = CountingMembership(client, prefix)
    holder: list[EvictionHold] = []

    async def lost() -> None:
        holder[0].lost()

    async def back() -> None:
        holder[0].back()

    broker = NatsBroker(
        server.url,
        disconnected_cb=lost,
        reconnected_cb=back,
        reconnect_time_wait=0.05,
        max_reconnect_attempts=-1,
    )
    hold = EvictionHold(grace_s, lambda: is_connected(broker), startup_grace_s=0.0)
    holder.append(hold)
    broker.include_router(build_router(broker, membership))
    nc = await broker.connect()
    for spec in ALL_STREAMS:
        await nc.request(*stream_create_request(spec), timeout=5)
    await broker.start()
    stop = asyncio.Event()
    sweeper = asyncio.create_task(evict_forever(broker, membership, 0.05, 0.0, None, stop, hold))
    try:
        yield broker, membership, hold
    finally:
        stop.set()
        await asyncio.wait({sweeper}, timeout=5)
        await broker.stop()


@pytest.fixture
async def registry(
    server: NatsServer, redis: tuple[Redis, str]
) -> AsyncIterator[tuple[NatsBroker, CountingMembership, EvictionHold]]:
    client, prefix = redis
    async with running_registry(server, client, prefix) as running:
        yield running


async def test_a_registry_that_loses_nats_evicts_no_live_worker_and_still_evicts_a_dead_one(
    server: NatsServer,
    registry: tuple[NatsBroker, CountingMembership, EvictionHold],
    redis: tuple[Redis, str],
) -> None:
    broker, membership, _ = registry
    client, prefix = redis
    worker = Worker("w1")
    await worker.start(server.url)
    try:

        async def recorded() -> bool:
            return bool(await client.exists(f"{prefix}:reg:inst:w1"))

        async def expired() -> bool:
            return not await recorded()

        await until(recorded)
        server.stop()  # the broker is gone: no heartbeat reaches the registry

        async def disconnected() -> bool:
            return not is_connected(broker)

        await until(disconnected)
        await until(expired)  # the heartbeat key ran out while NATS was down
        sweeps_while_down = membership.sweeps
        server.start()

        async def reconnected() -> bool:
            return is_connected(broker)

        await until(reconnected)
        await until(recorded)  # the worker announced itself again

        async def sweeps_after_grace() -> bool:
            return membership.sweeps >= sweeps_while_down + 5

        await until(sweeps_after_grace)  # the grace is over: evictions run again
        assert membership.evicted == []
        assert "w1" in await client.smembers(f"{prefix}:reg:known")

        # a real death is still seen within 3 heartbeat intervals (and a sweep)
        worker.beating = False
        last = worker.last_beat

        async def evicted() -> bool:
            return bool(membership.evicted)

        await until(evicted)
        (instance_id, at) = membership.evicted[0]
        assert instance_id == "w1"
        assert at - last <= 3 * INTERVAL_S + 0.5
    finally:
        await worker.stop()


async def test_a_registry_whose_redis_restarts_evicts_no_live_worker_and_still_evicts_a_dead_one(
    server: NatsServer, tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    # no retries: a sweep during the outage fails at once, and the first one after the restart
    # runs before the next heartbeat (sweeps every 0.05 s, heartbeats every second)
    client = Redis(
        host="127.0.0.1", port=own.port, decode_responses=True, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    worker = Worker("w1", interval_s=1.0)
    try:
        # the grace after Redis is back spans 3 heartbeats, as the registry's defaults do (3 s, 1 s):
        # a grace of one interval lost the race with a heartbeat delayed on a loaded machine
        async with running_registry(server, client, "loom-test", grace_s=3.0) as (_, membership, _hold):
            await worker.start(server.url)

            async def recorded() -> bool:
                with contextlib.suppress(OSError, RedisError):
                    return bool(await client.exists("loom-test:reg:inst:w1"))
                return False

            await until(recorded)
            own.stop()  # heartbeats keep coming, nothing can store them; the key's expiry passes
            await asyncio.sleep(3 * worker.interval_s + 0.5)  # the outage itself, longer than the key's TTL
            own.start()  # the append-only file brings back reg:known with w1, its key expired
            sweeps_at_restart = membership.sweeps

            async def sweeps_after_grace() -> bool:
                return membership.sweeps >= sweeps_at_restart + 80  # 4 s of sweeps: past the 3 s grace

            await until(sweeps_after_grace)
            assert membership.evicted == []
            # read with a client of its own: the registry's pool may still hold a connection from
            # before the restart, and with retries off its first use fails ("closed by server")
            async with Redis(host="127.0.0.1", port=own.port, decode_responses=True) as observer:
                assert "w1" in await observer.smembers("loom-test:reg:known")

            worker.beating = False  # a real death is still seen

            async def evicted() -> bool:
                return bool(membership.evicted)

            await until(evicted)
            assert membership.evicted[0][0] == "w1"
    finally:
        await worker.stop()
        await client.aclose()
        own.stop()


async def test_evictions_are_held_while_disconnected_and_for_the_grace_after() -> None:
    connected = [True]
    hold = EvictionHold(0.3, lambda: connected[0], startup_grace_s=0.0)
    assert hold.check()
    connected[0] = False
    assert not hold.check()
    connected[0] = True
    assert not hold.check()  # back: the grace starts now
    released = time.monotonic()

    async def free() -> bool:
        return hold.check()

    await until(free, timeout_s=5)
    assert time.monotonic() - released >= 0.3
