"""What Redis persistence costs the dispatcher, and what a crash loses under each setting.

``python -m loom_load.redis_persistence`` starts its own ``redis-server`` processes on free
loopback ports, one per configuration (no persistence, AOF ``appendfsync everysec``, AOF
``appendfsync always``), and drives the dispatcher's real :class:`TaskStore` through the life of
N tasks: ``create`` (pending) then the three compare-and-set transitions dispatched, running,
completed, with C tasks in flight at once (the dispatcher handles its status messages
concurrently). It prints, per configuration, the store operations per second and their p50/p99.

Then the loss window: the same workload runs again, the server is killed with SIGKILL while
writes are in flight, restarted on the same directory, and every acknowledged write is looked
for. A write is lost when the task's stored state is behind the last state the client was told
was written. The loss window is the span from the oldest lost acknowledgement to the kill.

Needs the dispatcher package next to this harness::

    uv run --frozen --project tests/load --with-editable services/dispatcher \
        python -m loom_load.redis_persistence
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom_protocol import Task, TaskStatus

# The order a task's states take in this workload: a stored state "behind" an acknowledged one is a loss.
LIFE = (TaskStatus.PENDING, TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.COMPLETED)


@dataclass(frozen=True)
class Config:
    """One way to run Redis: a name and its persistence arguments."""

    name: str
    args: tuple[str, ...]


CONFIGS = (
    Config("none", ("--save", "", "--appendonly", "no")),
    Config("aof-everysec", ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")),
    Config("aof-always", ("--save", "", "--appendonly", "yes", "--appendfsync", "always")),
)


def server_argv(binary: str, port: int, data_dir: Path, config: Config) -> list[str]:
    """The ``redis-server`` command line for ``config`` on ``port``, its files in ``data_dir``."""
    return [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir), *config.args]


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Acks:
    """What the client was told: per task, the last state written and when (monotonic)."""

    state: dict[str, int] = field(default_factory=dict)
    at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def record(self, task_id: str, step: int, started: float) -> None:
        now = time.monotonic()
        self.state[task_id] = step
        self.at[task_id] = now
        self.latencies.append(now - started)


@dataclass(frozen=True)
class Loss:
    """Acknowledged writes missing after a kill -9 and restart."""

    acknowledged: int  # acknowledged writes in total
    lost_writes: int  # acknowledged writes whose effect is gone
    lost_tasks: int  # tasks whose acknowledged creation is gone entirely
    window_s: float  # from the oldest lost acknowledgement to the kill (0 when nothing is lost)


def count_losses(acks: Acks, stored: dict[str, int | None], killed_at: float) -> Loss:
    """Compare what the client was told (``acks``) with what survived (``stored``: step or None)."""
    lost_writes = lost_tasks = 0
    oldest: float | None = None
    for task_id, step in acks.state.items():
        survived = stored.get(task_id)
        behind = step + 1 if survived is None else max(0, step - survived)
        if behind:
            lost_writes += behind
            lost_tasks += survived is None
            oldest = acks.at[task_id] if oldest is None else min(oldest, acks.at[task_id])
    acknowledged = sum(step + 1 for step in acks.state.values())
    window = 0.0 if oldest is None else max(0.0, killed_at - oldest)
    return Loss(acknowledged, lost_writes, lost_tasks, window)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnRedis:
    """A ``redis-server`` of this run: started, killed with SIGKILL, restarted on the same files."""

    def __init__(self, binary: str, config: Config, data_dir: Path) -> None:
        self.config = config
        self.port = _free_port()
        self.data_dir = data_dir
        self._argv = server_argv(binary, self.port, data_dir, config)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "redis.log").open("ab")
        self._proc = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await self._answers():
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server ({self.config.name}) exited; see {self.data_dir}/redis.log")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server ({self.config.name}) did not answer on {self.port}")

    async def _answers(self) -> bool:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(self.url, socket_timeout=1)
        try:
            if not await client.ping():
                return False
            # a server loading its AOF answers PING with an error; INFO says when it is done
            info = await client.info("persistence")
            return str(info.get("loading", 0)) == "0"
        except (OSError, RedisError):
            return False
        finally:
            await client.aclose()

    def kill(self) -> float:
        """SIGKILL the server; the monotonic time of the kill."""
        assert self._proc is not None
        at = time.monotonic()
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.wait(10)
        return at

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)


def _store(url: str, connections: int) -> Any:
    """The dispatcher's TaskStore on a client configured as the dispatcher configures its own."""
    from loom_dispatcher.store import TaskStore  # type: ignore[import-not-found,unused-ignore]
    from redis.asyncio import BlockingConnectionPool, Redis

    pool = BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=connections, timeout=10
    )
    return TaskStore(Redis.from_pool(pool), "loom-bench")


async def _life(store: Any, n: int, acks: Acks, stop: asyncio.Event) -> None:
    """One task through create + three transitions, each write acknowledged into ``acks``."""
    from loom_dispatcher.store import Change, Scores  # type: ignore[import-not-found,unused-ignore]

    task = Task(target_agent="bench", parameters={"n": n})
    started = time.monotonic()
    if not await store.create(task, time.time()):
        raise RuntimeError(f"task {task.task_id} already known")
    acks.record(task.task_id, 0, started)
    for step, status in enumerate(LIFE[1:], start=1):
        if stop.is_set():
            return

        def transition(cur: Task, _scores: Scores, status: TaskStatus = status) -> Change | None:
            if status is TaskStatus.DISPATCHED:
                nxt = cur.with_status(status, attempt=cur.attempt + 1, instance_id="bench-worker-1")
                return Change(nxt, deadline=time.time() + 300)
            if status is TaskStatus.RUNNING:
                return Change(cur.with_status(status), deadline=time.time() + 300)
            return Change(cur.with_status(status, result={"answer": n}))

        started = time.monotonic()
        if await store.update(task.task_id, transition) is None:
            raise RuntimeError(f"task {task.task_id}: transition to {status} not applied")
        acks.record(task.task_id, step, started)


async def _drive(store: Any, tasks: int | None, concurrency: int, acks: Acks, stop: asyncio.Event) -> None:
    """``tasks`` lives (None: until ``stop``), ``concurrency`` at once; none starts once ``stop`` is set."""
    numbers = itertools.count() if tasks is None else iter(range(tasks))

    async def lane() -> None:
        for n in numbers:
            if stop.is_set():
                return
            await _life(store, n, acks, stop)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


@dataclass(frozen=True)
class Throughput:
    config: str
    writes: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def ops_per_s(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0


async def measure_throughput(server: OwnRedis, tasks: int, concurrency: int) -> Throughput:
    store = _store(server.url, concurrency)
    acks = Acks()
    await _drive(store, min(500, tasks), concurrency, Acks(), asyncio.Event())  # warm-up: scripts loaded
    started = time.monotonic()
    await _drive(store, tasks, concurrency, acks, asyncio.Event())
    seconds = time.monotonic() - started
    lat = acks.latencies
    return Throughput(
        server.config.name, len(lat), seconds, percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
    )


async def measure_loss(server: OwnRedis, concurrency: int, kill_after_s: float) -> Loss:
    """Write at full speed, SIGKILL the server after ``kill_after_s``, restart, count the losses."""
    from redis.exceptions import RedisError

    store = _store(server.url, concurrency)
    acks, stop = Acks(), asyncio.Event()
    driver = asyncio.ensure_future(_drive(store, None, concurrency, acks, stop))
    await asyncio.sleep(kill_after_s)  # the workload runs for this long before the crash
    killed_at = server.kill()
    stop.set()
    try:
        await driver
    except (OSError, RedisError, ConnectionError):
        pass  # the writes in flight at the kill fail: the client was never told they happened
    await server.start()
    reader = _store(server.url, 4)
    stored: dict[str, int | None] = {}
    for task_id in acks.state:
        task = await reader.get(task_id)
        stored[task_id] = None if task is None else LIFE.index(task.status)
    return count_losses(acks, stored, killed_at)


async def run(tasks: int, concurrency: int, kill_after_s: float, root: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    print(f"{version}\n{tasks} tasks x 4 writes (create + 3 CAS transitions), {concurrency} in flight")
    print(f"data under {root}\n")
    print(
        f"{'config':<14}{'writes':>8}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}   "
        f"{'kill -9 after':>13}{'acked':>8}{'lost':>7}{'tasks lost':>11}{'window s':>10}"
    )
    for config in CONFIGS:
        server = OwnRedis(binary, config, root / config.name)
        try:
            await server.start()
            t = await measure_throughput(server, tasks, concurrency)
            server.stop()
            shutil.rmtree(server.data_dir)
            server = OwnRedis(binary, config, root / f"{config.name}-crash")
            await server.start()
            loss = await measure_loss(server, concurrency, kill_after_s)
        finally:
            server.stop()
        print(
            f"{config.name:<14}{t.writes:>8}{t.ops_per_s:>10.0f}{t.p50_ms:>9.2f}{t.p99_ms:>9.2f}   "
            f"{kill_after_s:>12.1f}s{loss.acknowledged:>8}{loss.lost_writes:>7}{loss.lost_tasks:>11}"
            f"{loss.window_s:>10.3f}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loom_load.redis_persistence", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per throughput run (4 writes each)")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks in flight at once")
    parser.add_argument("--kill-after", type=float, default=2.0, help="seconds of writes before the SIGKILL")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the servers keep their files (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.tasks, args.concurrency, args.kill_after, args.dir))
        return
    with tempfile.TemporaryDirectory(prefix="loom-redis-persistence-", dir=os.environ.get("TMPDIR")) as tmp:
        asyncio.run(run(args.tasks, args.concurrency, args.kill_after, Path(tmp)))


if __name__ == "__main__":
    main()
