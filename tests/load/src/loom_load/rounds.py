"""Paired rounds: Loom's echo closed loop over NATS and each peer's no-op closed loop, taken in
turn, a few times over, in one stretch of the run.

The phases of a run are minutes apart, and the machine's speed moves by 15-30% over minutes
(docs/load.md): a ratio of two phases measured that far apart carries that noise. Here Loom,
Celery and taskiq-nats each run the same closed loop (``count`` tasks, ``concurrency`` in
flight) in every round, one after the other, the order reversed every other round so that a
drift within a round favours none of them; the peers' workers stay up, idle, while the others
run. Each round gives a ratio per peer (Loom's throughput / the peer's, both measured within
seconds of each other); the figure is the median over the rounds.

Loom and taskiq run the loop of :mod:`peer_loop` (a slot submits, waits for the outcome,
submits the next); Celery its own FIFO window (:func:`celery_bench.closed_loop`), as in its
phase. Loom's tasks are submitted over JetStream and end with the dispatcher's final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import celery_bench
from .loom import echo_params, submit_nats
from .observe import Observer
from .peer_loop import Submit, TaskFailed, Wait, closed_loop
from .taskiq_bench import taskiq_worker

LOOM = "loom"
PEERS = ("celery", "taskiq")
Loop = Callable[[], Awaitable[dict[str, Any]]]


def median_ratios(
    rounds: Sequence[Mapping[str, float | None]], peers: Sequence[str] = PEERS
) -> dict[str, Any]:
    """For each peer: the median over the rounds of Loom's throughput / the peer's, and the ratios
    (a round where either did not finish a task counts for nothing)."""
    out: dict[str, Any] = {}
    for peer in peers:
        ratios = []
        for row in rounds:
            loom, other = row.get(LOOM), row.get(peer)
            if loom and other:
                ratios.append(round(loom / other, 4))
        out[peer] = {"ratios": ratios, "median": statistics.median(ratios) if ratios else None}
    return out


@contextlib.asynccontextmanager
async def loom_nats(nc: Any, js: Any, prefix: str) -> AsyncIterator[tuple[Submit, Wait]]:
    """Submit echo tasks over JetStream; an outcome is the dispatcher's final status (heard by an
    observer of this step's own task ids)."""
    observer = Observer(prefix, burst_source="")
    await observer.start(nc, status_only=True)
    counter = itertools.count()

    async def submit(i: int) -> tuple[str, asyncio.Future[tuple[str, float]]]:
        task_id = f"{prefix}{next(counter)}"
        fut = observer.watch(task_id)
        try:
            await submit_nats(js, task_id, "echo", echo_params(i))
        except BaseException:
            observer.unwatch(task_id)
            raise
        return task_id, fut

    async def wait(handle: tuple[str, asyncio.Future[tuple[str, float]]], timeout: float) -> None:
        task_id, fut = handle
        try:
            status, _ = await asyncio.wait_for(fut, timeout)
        finally:
            observer.unwatch(task_id)
        if status != "completed":
            raise TaskFailed(status)

    try:
        yield submit, wait
    finally:
        await observer.stop()


async def paired_rounds(
    nc: Any,
    js: Any,
    *,
    prefix: str,
    nats_servers: list[str],
    redis_url: str,
    rounds: int,
    count: int,
    concurrency: int,
    workers: int,
    timeout_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    """Start a Celery and a taskiq worker, run ``rounds`` rounds, stop them: every closed loop's
    throughput per round and the median ratios."""
    out: dict[str, Any] = {"rounds": [], "count": count, "concurrency": concurrency}
    with contextlib.ExitStack() as sync_stack:
        async with contextlib.AsyncExitStack() as stack:
            celery_dir = log_dir / "rounds-celery"
            celery_dir.mkdir(parents=True, exist_ok=True)
            noop, _ = await asyncio.to_thread(
                sync_stack.enter_context, celery_bench.celery_worker(redis_url, workers, celery_dir)
            )
            stack.push_async_callback(asyncio.to_thread, sync_stack.close)  # stopped in a thread too
            taskiq_dir = log_dir / "rounds-taskiq"
            taskiq_dir.mkdir(parents=True, exist_ok=True)
            taskiq = await stack.enter_async_context(
                taskiq_worker(nats_servers, redis_url, concurrency, workers, taskiq_dir)
            )
            loom_submit, loom_wait = await stack.enter_async_context(loom_nats(nc, js, prefix))

            def peer_loop(system: str, submit: Submit, wait: Wait) -> Loop:
                return lambda: closed_loop(
                    submit, wait, system=system, count=count, concurrency=concurrency, timeout_s=timeout_s
                )

            loops: list[tuple[str, Loop]] = [
                (LOOM, peer_loop(LOOM, loom_submit, loom_wait)),
                (
                    "celery",
                    lambda: asyncio.to_thread(
                        celery_bench.closed_loop, noop, count, concurrency, timeout_s, None
                    ),
                ),
                ("taskiq", peer_loop("taskiq", taskiq.submit, taskiq.wait)),
            ]
            for number in range(rounds):
                row: dict[str, float | None] = {}
                for name, loop in loops if number % 2 == 0 else loops[::-1]:
                    result = await loop()
                    row[name] = result.get("throughput")
                    acc = result.get("accounting") or {}
                    if acc.get("completed") != acc.get("total"):
                        out.setdefault("incomplete", []).append({"round": number, "system": name, **acc})
                out["rounds"].append(row)
    out["median_ratio"] = median_ratios(out["rounds"])
    return out
