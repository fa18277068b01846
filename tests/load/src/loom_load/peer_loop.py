"""The workloads every asyncio peer (taskiq, FastStream, the nats-py floor) runs, shaped like Loom's.

A closed loop keeps ``concurrency`` tasks in flight: each slot submits a task, waits for its
result, then submits the next, until ``count`` tasks were issued or the time limit passed. The
sequential round trip is the same loop with one slot. A peer supplies two coroutines: ``submit``
(returns a handle; raising means the submission failed: ``rejected``) and ``wait`` (returns once
the result is in; raises :class:`TaskFailed` for a task that failed and :class:`TimeoutError`
for one that never answered: ``missing``). Every task ends in one bucket of the ledger.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import procstat
from .ledger import Ledger
from .stats import Latency, Timeline, rate

Progress = Callable[[int], None]
Submit = Callable[[int], Awaitable[Any]]
Wait = Callable[[Any, float], Awaitable[None]]


class TaskFailed(Exception):
    """The peer ran the task and reported a failure."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


async def closed_loop(
    submit: Submit,
    wait: Wait,
    *,
    system: str,
    count: int,
    concurrency: int,
    timeout_s: float,
    task_timeout_s: float = 30.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``count`` tasks with ``concurrency`` in flight; the summary (the Celery baseline's shape)."""
    ledger = Ledger()
    latency = Latency()
    t0 = time.perf_counter()
    timeline = Timeline(t0, bucket_s=1.0)
    stop_at = t0 + timeout_s
    counter = itertools.count()
    done = 0
    completed = 0
    last = t0

    async def one(i: int) -> None:
        nonlocal done, completed, last
        task_id = f"{system}-{i}"
        ledger.submitted(task_id)
        start = time.perf_counter()
        try:
            handle = await submit(i)
        except Exception as exc:  # noqa: BLE001 -- every failure is accounted for, none stops the run
            ledger.submit_failed(task_id, _reason(exc))
            return
        limit = max(0.1, min(task_timeout_s, stop_at + task_timeout_s - time.perf_counter()))
        try:
            await wait(handle, limit)
        except TaskFailed:
            ledger.finished(task_id, "failed", system)
        except TimeoutError:
            ledger.looked_up(task_id, f"no result within {limit:.0f} s")
        except Exception as exc:  # noqa: BLE001
            ledger.looked_up(task_id, _reason(exc))
        else:
            now = time.perf_counter()
            ledger.finished(task_id, "completed", system)
            latency.record(now - start)
            timeline.add(now)
            completed += 1
            last = max(last, now)
        done += 1
        if progress is not None:
            progress(completed)

    async def slot() -> None:
        while time.perf_counter() < stop_at:
            i = next(counter)
            if i >= count:
                return
            await one(i)

    await asyncio.gather(*(slot() for _ in range(max(1, min(concurrency, count)))))
    span = last - t0
    return {
        "submitted": len(ledger.entries),
        "concurrency": concurrency,
        "mode": "sequential" if concurrency == 1 else "closed",
        "duration_s": round(span, 3),
        "throughput": round(rate(completed, span) or 0, 1) or None,
        "latency": latency.summary(),
        "cdf": latency.cdf(),
        "timeline": timeline.series(),
        "accounting": ledger.accounting(),
    }


async def wait_ready(
    probe: Callable[[], Awaitable[None]], alive: Callable[[], bool], timeout_s: float = 60.0
) -> float:
    """Seconds until ``probe`` (one task, with a short timeout of its own) succeeded; raises when the
    worker exited (``alive`` false) or after ``timeout_s``."""
    start = time.perf_counter()
    last: BaseException | None = None
    while time.perf_counter() - start < timeout_s:
        if not alive():
            raise RuntimeError("the worker exited before it answered")
        try:
            await probe()
            return time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 -- not up yet
            last = exc
            await asyncio.sleep(0.1)  # a retry's pause: a refused probe fails at once
    raise TimeoutError(f"worker not ready after {timeout_s:.0f} s (last: {last!r})")


async def both_workloads(
    submit: Submit,
    wait: Wait,
    *,
    system: str,
    title: str,
    roots: dict[int, str],
    count: int,
    sequential_count: int,
    concurrency: int,
    timeout_s: float,
    progress: Callable[[str, int], Progress | None],
) -> dict[str, Any]:
    """The closed loop, then the sequential round trip, each with the CPU of ``roots`` (the peer's
    worker processes) over its own window: the ``closed``, ``sequential`` and ``cpu`` results."""
    out: dict[str, Any] = {"cpu": {}}
    for key, n, slots, label in (
        ("closed", count, concurrency, f"{title} no-op closed loop c={concurrency}"),
        ("sequential", sequential_count, 1, f"{title} no-op sequential"),
    ):
        window = procstat.Window(roots)
        out[key] = await closed_loop(
            submit,
            wait,
            system=system,
            count=n,
            concurrency=slots,
            timeout_s=timeout_s,
            progress=progress(label, n),
        )
        out["cpu"][key] = window.close(out[key]["accounting"]["completed"])
    return out
