"""The taskiq peer: the Celery baseline's no-op workloads on taskiq + taskiq-nats + taskiq-redis.

The harness creates the run's stream and durable (through its client broker's startup), starts
``taskiq worker loom_load.taskiq_app:broker --workers <cores>`` in a process group of its own,
runs the closed loop and the sequential round trip, then stops the worker and deletes the
stream in ``finally``. The client waits for each result with ``wait_result(check_interval=0.002)``:
taskiq's default 0.2 s poll would measure the poll, not the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loom_protocol.settings import redacted
from taskiq import AsyncTaskiqTask
from taskiq.exceptions import TaskiqResultTimeoutError

from . import subproc, taskiq_app
from .loom import echo_params
from .peer_loop import Progress, Submit, TaskFailed, Wait, both_workloads, wait_ready

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.002


def worker_command(workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "loom_load.taskiq_app:broker",
        "--workers",
        str(workers),
        "--log-level",
        "WARNING",
    ]


@dataclass
class TaskiqWorker:
    """A running taskiq worker and the client's two coroutines for :mod:`peer_loop`."""

    submit: Submit
    wait: Wait
    roots: dict[int, str]  # the worker's pid, for the CPU windows
    info: dict[str, Any]  # what the report says about the setup (broker, backend, versions, ...)


@contextlib.asynccontextmanager
async def taskiq_worker(
    nats_servers: list[str], redis_url: str, concurrency: int, workers: int, log_dir: Path
) -> AsyncIterator[TaskiqWorker]:
    """Create the run's stream and durable, start the worker, wait until it answers; on exit stop
    it and delete the stream. ``info`` gets ``worker_exit`` once the worker stopped."""
    token = uuid.uuid4().hex[:8]
    named = taskiq_app.names(token)
    broker, task = taskiq_app.make_broker(nats_servers, redis_url, token, redis_pool=concurrency + 16)
    info: dict[str, Any] = {
        "broker": f"JetStream pull ({named['stream']}, durable {named['durable']}, "
        f"fetch batch {taskiq_app.FETCH_BATCH})",
        "result_backend": f"Redis {redacted(redis_url)}, poll every {CHECK_INTERVAL_S * 1000:g} ms",
        "workers": workers,
        "versions": {p: version(p) for p in ("taskiq", "taskiq-nats", "taskiq-redis")},
    }
    env = {
        **os.environ,
        "LOOM_LOAD_TASKIQ_NATS": ",".join(nats_servers),
        "LOOM_LOAD_TASKIQ_REDIS": redis_url,
        "LOOM_LOAD_TASKIQ_TOKEN": token,
    }

    async def submit(i: int) -> AsyncTaskiqTask[Any]:
        return await task.kiq(echo_params(i))

    async def wait(handle: AsyncTaskiqTask[Any], timeout: float) -> None:
        try:
            result = await handle.wait_result(check_interval=CHECK_INTERVAL_S, timeout=timeout)
        except TaskiqResultTimeoutError as exc:
            raise TimeoutError(str(exc)) from exc
        if result.is_err:
            raise TaskFailed(repr(result.error))

    async def probe() -> None:
        await wait(await task.kiq({"ping": True}), 2.0)

    proc = None
    try:
        await broker.startup()  # creates the run's stream and durable consumer
        proc = subproc.start(worker_command(workers), env, log_dir / "taskiq-worker.log")
        info["worker_pid"] = proc.pid
        alive = proc.poll
        info["ready_s"] = round(await wait_ready(probe, lambda: alive() is None), 2)
        yield TaskiqWorker(submit, wait, {proc.pid: "taskiq"}, info)
    finally:
        if proc is not None:
            info["worker_exit"] = await asyncio.to_thread(subproc.stop, proc)
        with contextlib.suppress(Exception):
            await broker.js.delete_stream(named["stream"])
        with contextlib.suppress(Exception):
            await broker.shutdown()


async def run_taskiq(
    nats_servers: list[str],
    redis_url: str,
    concurrency: int,
    workers: int,
    count: int,
    sequential_count: int,
    timeout_s: float,
    log_dir: Path,
    progress: Callable[[str, int], Progress | None],
) -> dict[str, Any]:
    """Start the worker, run both workloads, stop it; the figures and a CPU window per workload."""
    out: dict[str, Any] = {}
    async with taskiq_worker(nats_servers, redis_url, concurrency, workers, log_dir) as worker:
        out = worker.info
        out |= await both_workloads(
            worker.submit,
            worker.wait,
            system="taskiq",
            title="taskiq",
            roots=worker.roots,
            count=count,
            sequential_count=sequential_count,
            concurrency=concurrency,
            timeout_s=timeout_s,
            progress=progress,
        )
    return out
