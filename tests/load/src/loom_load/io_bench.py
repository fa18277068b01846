"""The I/O-task comparison: tasks that each wait 100 ms, 64 in flight (the shape task-queue peers
publish), where the ideal is ``concurrency / delay`` = 640 tasks/s.

Loom runs its echo agent with ``{"delayS": 0.1}`` (the agent sleeps that long before answering)
as a phase of the Loom steps (``io-loom``); this module runs the Celery side: a worker started by
the harness with a pool that holds 64 sleeping tasks (``--pool=threads --concurrency=64``), its
task ``time.sleep(0.1)``. :func:`io_verdict` turns a measured phase into the figures, and says so
when the tasks did not wait (a Loom worker without ``delayS`` answers at once: a throughput far
above the ideal is not a success).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import celery_bench, procstat

Progress = Callable[[int], None]


def ideal_rate(concurrency: int, delay_s: float) -> float | None:
    """Tasks/s with ``concurrency`` tasks waiting ``delay_s`` each and no other cost."""
    return concurrency / delay_s if delay_s > 0 else None


def io_verdict(
    throughput: float | None, p50_ms: float | None, concurrency: int, delay_s: float
) -> dict[str, Any]:
    """Ratio of a measured throughput to the ideal, and whether the tasks waited at all: a p50
    below 90% of the delay means they did not (the figure is then not a result for I/O tasks)."""
    ideal = ideal_rate(concurrency, delay_s)
    ratio = throughput / ideal if throughput is not None and ideal else None
    waited: bool | None = None
    note = ""
    if p50_ms is not None:
        waited = p50_ms >= 0.9 * delay_s * 1000
        if not waited:
            note = (
                f"observed p50 {p50_ms:.1f} ms < the {delay_s * 1000:.0f} ms delay: the tasks did not "
                "wait (does the worker take delayS?); not a result for I/O tasks"
            )
    return {
        "ideal_rate": ideal,
        "ratio_to_ideal": None if ratio is None else round(ratio, 3),
        "waited": waited,
        "note": note,
    }


def run_celery_io(
    url: str,
    count: int,
    concurrency: int,
    delay_s: float,
    timeout_s: float,
    log_dir: Path,
    progress: Callable[[str, int], Progress | None],
) -> dict[str, Any]:
    """Start a threads-pool worker, run the sleeping closed loop, stop it. Blocking: run it in a thread."""
    queue = f"loomload-io-{uuid.uuid4().hex[:8]}"
    celery_app = celery_bench.configure(url, queue)
    out: dict[str, Any] = {
        "pool": f"threads, concurrency {concurrency}",
        "queue": queue,
        "delay_s": delay_s,
        "cpu": {},
    }
    proc = celery_bench.start_worker(
        url, queue, concurrency, log_dir / "celery-io-worker.log", pool="threads"
    )
    out["worker_pid"] = proc.pid
    try:
        out["ready_s"] = round(celery_bench.wait_ready(celery_app.noop, proc), 2)
        window = procstat.Window()
        t0 = time.perf_counter()
        out["closed"] = celery_bench.closed_loop(
            celery_app.sleep_io,
            count,
            concurrency,
            timeout_s,
            progress(f"Celery sleep {delay_s:g} s c={concurrency} (I/O task)", count),
            params=lambda i: {"n": i, "delayS": delay_s},
        )
        out["cpu"]["closed"] = window.close(out["closed"]["accounting"]["completed"])
        out["wall_s"] = round(time.perf_counter() - t0, 3)
    finally:
        celery_bench.stop_worker(proc)
    return out
