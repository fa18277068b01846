"""The baseline: the same no-op workload on Celery with a Redis broker and result backend.

The harness starts ``celery worker --concurrency=<cores>`` as a subprocess (its own Redis
database, its own queue name per run), measures a closed loop at the same concurrency as
Loom's echo phase and a sequential round trip, and stops the worker in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loom_protocol.settings import redacted

from . import procstat
from .ledger import Ledger
from .loom import echo_params
from .stats import Latency, Timeline, rate

Progress = Callable[[int], None]


def start_worker(
    url: str, queue: str, concurrency: int, log_path: Path, pool: str = "prefork"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOOM_LOAD_CELERY_URL": url, "LOOM_LOAD_CELERY_QUEUE": queue}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "loom_load.celery_app",
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL to the worker's own process group."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group the harness created for this worker
        proc.wait(timeout=5)


def wait_ready(noop: Any, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> float:
    """Seconds until the worker answered a first no-op."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with code {proc.returncode}")
        try:
            noop.delay({"ping": True}).get(timeout=2)
            return time.perf_counter() - start
        except Exception:  # noqa: BLE001,S112 -- not up yet
            continue
    raise TimeoutError(f"celery worker not ready after {timeout_s:.0f} s")


def closed_loop(
    noop: Any,
    count: int,
    concurrency: int,
    timeout_s: float,
    progress: Progress | None,
    params: Callable[[int], Any] = echo_params,
) -> dict[str, Any]:
    """``concurrency`` tasks in flight; the oldest is awaited, then replaced (FIFO window)."""
    ledger = Ledger()
    latency = Latency()
    t0 = time.perf_counter()
    timeline = Timeline(t0, bucket_s=1.0)
    stop_at = t0 + timeout_s
    window: deque[tuple[str, float, Any]] = deque()
    issued = 0
    completed = 0
    last = t0

    def issue() -> None:
        nonlocal issued
        task_id = f"c{issued}"
        ledger.submitted(task_id)
        start = time.perf_counter()
        try:
            window.append((task_id, start, noop.apply_async(args=[params(issued)])))
        except Exception as exc:  # noqa: BLE001
            ledger.submit_failed(task_id, type(exc).__name__)
        issued += 1

    while issued < min(count, concurrency):
        issue()
    while window:
        task_id, start, result = window.popleft()
        try:
            result.get(timeout=max(0.1, min(30.0, stop_at + 15 - time.perf_counter())))
            now = time.perf_counter()
            ledger.finished(task_id, "completed", "celery")
            latency.record(now - start)
            timeline.add(now)
            completed += 1
            last = now
        except Exception as exc:  # noqa: BLE001 -- a failed or lost task is counted, not raised
            if result.state == "FAILURE":
                ledger.finished(task_id, "failed", "celery")
            else:
                ledger.looked_up(task_id, f"celery state {result.state} ({type(exc).__name__})")
        if progress is not None:
            progress(completed)
        if issued < count and time.perf_counter() < stop_at:
            issue()
    span = last - t0
    return {
        "submitted": issued,
        "concurrency": concurrency,
        "duration_s": round(span, 3),
        "throughput": round(rate(completed, span) or 0, 1) or None,
        "latency": latency.summary(),
        "cdf": latency.cdf(),
        "timeline": timeline.series(),
        "accounting": ledger.accounting(),
    }


def sequential(noop: Any, count: int, timeout_s: float, progress: Progress | None) -> dict[str, Any]:
    ledger = Ledger()
    latency = Latency()
    t0 = time.perf_counter()
    done = 0
    for i in range(count):
        if time.perf_counter() - t0 > timeout_s:
            break
        task_id = f"s{i}"
        ledger.submitted(task_id)
        start = time.perf_counter()
        try:
            noop.delay(echo_params(i)).get(timeout=10)
        except Exception as exc:  # noqa: BLE001
            ledger.looked_up(task_id, type(exc).__name__)
            continue
        latency.record(time.perf_counter() - start)
        ledger.finished(task_id, "completed", "celery")
        done += 1
        if progress is not None:
            progress(done)
    span = time.perf_counter() - t0
    return {
        "submitted": len(ledger.entries),
        "duration_s": round(span, 3),
        "throughput": round(rate(done, span) or 0, 1) or None,
        "latency": latency.summary(),
        "cdf": latency.cdf(),
        "accounting": ledger.accounting(),
    }


def configure(url: str, queue: str) -> Any:
    """The Celery app, pointed at ``url`` with ``queue`` as its default queue."""
    os.environ["LOOM_LOAD_CELERY_URL"] = url
    os.environ["LOOM_LOAD_CELERY_QUEUE"] = queue
    from . import celery_app  # reads the environment set just above

    celery_app.app.conf.broker_url = url
    celery_app.app.conf.result_backend = url
    celery_app.app.conf.task_default_queue = queue
    return celery_app


@contextlib.contextmanager
def celery_worker(url: str, workers: int, log_dir: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A worker on a queue of its own, answering: (the no-op task, what the report says about the
    setup); stopped on exit. Blocking: enter and leave it in a thread."""
    queue = f"loomload-{uuid.uuid4().hex[:8]}"
    celery_app = configure(url, queue)
    import celery

    info: dict[str, Any] = {
        "broker": redacted(url),  # the report is a file: no password in it
        "queue": queue,
        "worker_concurrency": workers,
        "celery": celery.__version__,
    }
    proc = start_worker(url, queue, workers, log_dir / "celery-worker.log")
    info["worker_pid"] = proc.pid
    try:
        info["ready_s"] = round(wait_ready(celery_app.noop, proc), 2)
        yield celery_app.noop, info
    finally:
        stop_worker(proc)


def run_celery(
    url: str,
    concurrency: int,
    workers: int,
    count: int,
    sequential_count: int,
    timeout_s: float,
    log_dir: Path,
    progress: Callable[[str, int], Progress | None],
) -> dict[str, Any]:
    """Start a worker, run both workloads, stop the worker. Blocking: run it in a thread."""
    with celery_worker(url, workers, log_dir) as (noop, info):
        out: dict[str, Any] = {**info, "cpu": {}}
        window = procstat.Window()
        out["closed"] = closed_loop(
            noop, count, concurrency, timeout_s, progress(f"Celery no-op closed loop c={concurrency}", count)
        )
        out["cpu"]["closed"] = window.close(out["closed"]["accounting"]["completed"])
        window = procstat.Window()
        out["sequential"] = sequential(
            noop, sequential_count, timeout_s, progress("Celery no-op sequential", sequential_count)
        )
        out["cpu"]["sequential"] = window.close(out["sequential"]["accounting"]["completed"])
    return out
