"""Faults injected while tasks run, one per case, on one stack of processes (``make chaos``).

Each case submits its own batch of tasks (a fifth of them sleep 0.5-2 s), breaks one thing while
they run, restores it, and checks from the database and the broker: every task terminal, none
executed to completion twice (``agent.answer`` events per task), every message the broker
accepted on LOOM_EVENTS and LOOM_TASKS stored exactly once (checked over the whole streams, so
each case also re-checks the cases before it), every completed execution's answer event stored,
every service ready again. The figures are printed at the end of the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from loom_protocol import Task

from tests.integration.harness import wait_for

from .audit import CaseFigures, audit, row_count, stream_message_count, terminal_count
from .stack import ChaosStack, chaos_stack

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TASKS_PER_CASE = 80
SUBMIT_INTERVAL_S = 0.04  # ~3 s of submissions per case: the fault lands while tasks run
NATS_DOWN_S = 3.0
REDIS_DOWN_S = 2.0
DATABASE_DOWN_S = 5.0

RESULTS: list[CaseFigures] = []


@pytest.fixture(scope="module")
async def chaos(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ChaosStack]:
    async with chaos_stack(tmp_path_factory.mktemp("chaos")) as stack:
        yield stack


def calculator(i: int) -> dict[str, Any]:
    """Every fifth task sleeps 0.5-2 s; the others compute, then answer."""
    if i % 5 == 0:
        seconds = round(0.5 + (i * 0.37) % 1.5, 2)
        first = {"thought": "wait", "tool": "sleep", "arguments": {"seconds": seconds}}
    else:
        first = {"thought": "add", "tool": "calculator", "arguments": {"expression": f"{i}+1"}}
    return {"script": [first, {"thought": "done", "answer": "ok"}]}


async def worker_fault(stack: ChaosStack) -> None:
    async def busy() -> bool:
        return await stack.worker_in_flight("w1") >= 2

    await wait_for(busy, 30, "w1 to hold tasks")
    await stack.crash_and_restart("worker-w1")


def crash(name: str) -> Callable[[ChaosStack], Awaitable[None]]:
    async def fault(stack: ChaosStack) -> None:
        await stack.crash_and_restart(name)

    return fault


async def nats_fault(stack: ChaosStack) -> None:
    stack.nats.kill()
    await asyncio.sleep(NATS_DOWN_S)  # the outage itself
    await stack.nats.started()


async def redis_fault(stack: ChaosStack) -> None:
    await stack.redis.shutdown_nosave()
    await asyncio.sleep(REDIS_DOWN_S)
    await stack.redis.started()


async def database_fault(stack: ChaosStack) -> None:
    await stack.proxy.stop()
    await asyncio.sleep(DATABASE_DOWN_S)
    await stack.proxy.start()


FAULTS: dict[str, Callable[[ChaosStack], Awaitable[None]]] = {
    "worker": worker_fault,
    "dispatcher": crash("dispatcher"),
    "registry": crash("registry"),
    "ingest": crash("ingest"),
    "nats": nats_fault,
    "redis": redis_fault,
    "timescaledb": database_fault,
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault(chaos: ChaosStack, fault: str) -> None:
    tasks = [Task(target_agent="calculator", parameters=calculator(i)) for i in range(TASKS_PER_CASE)]
    ids = [t.task_id for t in tasks]
    submitted = 0

    async def submit_all() -> None:
        nonlocal submitted
        for task in tasks:
            await chaos.submit(task)
            submitted += 1
            await asyncio.sleep(SUBMIT_INTERVAL_S)  # the load's shape, not a synchronisation

    submitting = asyncio.create_task(submit_all())
    try:
        await wait_for(lambda: submitted >= TASKS_PER_CASE // 3 or submitting.done(), 60, "submissions")
        await FAULTS[fault](chaos)
        await submitting
    finally:
        if not submitting.done():
            submitting.cancel()

    async def ended() -> bool:
        try:
            return await terminal_count(chaos.database_url, ids) == len(ids)
        except OSError:
            return False

    try:
        await wait_for(ended, 120, f"{len(ids)} tasks terminal in the database", interval=0.5)
    except AssertionError:
        pass  # reported by the audit below, with the figures
    await chaos.all_ready(60)

    async def caught_up() -> bool:
        return await row_count(chaos.database_url) >= await stream_message_count(chaos.js)

    try:
        await wait_for(caught_up, 60, "ingest to store every stream message", interval=0.5)
    except AssertionError:
        pass
    figures = await audit(fault, chaos.js, chaos.database_url, ids)
    RESULTS.append(figures)
    assert figures.clean, (
        f"{fault}: {figures.terminal}/{figures.tasks} terminal; executed twice {figures.twice[:5]}; "
        f"missing {figures.missing_ids[:5]} ({figures.events_missing}); "
        f"duplicated {figures.events_duplicated}; without events {figures.without_events[:5]}; "
        f"not terminal {figures.not_terminal[:5]}"
    )
