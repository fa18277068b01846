"""The task path through real processes over JetStream and Redis: a worker killed mid-task, the
dispatcher and registry killed and restarted, a worker drained by SIGTERM. (Everything else on
the task path runs in process: tests/component/test_task_path.py.)"""

from __future__ import annotations

import signal

import httpx
import pytest
from loom_protocol import Task

from .harness import Stack, process, wait_for
from .task_support import Finals, sleepy, submit_nats

pytestmark = pytest.mark.integration


async def test_killed_worker_tasks_complete_elsewhere_once(stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher(LOOM_RETRY_BACKOFF_S="0.05")
    for name in ("k0", "k1", "k2"):  # the one to kill is a process
        await stack.worker(name, agents="calculator", process=name == "k1")
    await stack.wait_instances("calculator", 3)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    tasks = [Task(target_agent="calculator", parameters=sleepy(2.0)) for _ in range(30)]
    for task in tasks:
        await submit_nats(nc, task)
    ids = [t.task_id for t in tasks]

    async def victim_busy() -> bool:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{stack.workers['k1'].url}/metrics")).text
        return any(
            line.startswith("loom_worker_in_flight ") and float(line.split()[1]) >= 3
            for line in text.splitlines()
        )

    await wait_for(victim_busy, 60, "k1 to hold tasks")
    process(stack.workers["k1"]).kill()
    await wait_for(lambda: finals.done(ids), 60, "every task to end")
    assert all(len(finals.by_task[t]) == 1 for t in ids), "a task ended more than once"
    outcomes = {t: finals.by_task[t][0] for t in ids}
    assert {o.status for o in outcomes.values()} == {"completed"}
    assert "k1" not in {o.instance_id for o in outcomes.values()}
    assert any(o.attempt >= 2 for o in outcomes.values()), "no task was re-dispatched"


async def test_dispatcher_and_registry_restarts_lose_nothing(stack: Stack) -> None:
    registry = process(await stack.registry(process=True))
    dispatcher = process(await stack.dispatcher(process=True))
    await stack.worker("r0", agents="echo,calculator")
    await stack.worker("r1", agents="echo,calculator")
    await stack.wait_instances("calculator", 2)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    first = [Task(target_agent="calculator", parameters=sleepy(0.3)) for _ in range(40)]
    for task in first:
        await submit_nats(nc, task)
    dispatcher.kill()
    second = [Task(target_agent="echo", parameters={"i": i}) for i in range(40)]
    for task in second:  # accepted by JetStream while no dispatcher runs
        await submit_nats(nc, task)
    await dispatcher.restart()
    registry.kill()
    third = [Task(target_agent="echo", parameters={"i": i}) for i in range(20)]
    for task in third:
        await submit_nats(nc, task)
    await registry.restart()
    await stack.wait_instances("echo", 2)
    ids = [t.task_id for t in first + second + third]
    await wait_for(lambda: finals.done(ids), 90, "every task to end after the restarts")
    assert all(len(finals.by_task[t]) == 1 for t in ids), "a task ended more than once"
    assert {finals.by_task[t][0].status for t in ids} == {"completed"}


async def test_sigterm_drains_hands_back_and_deregisters(stack: Stack, http: httpx.AsyncClient) -> None:
    await stack.registry()
    await stack.dispatcher(LOOM_RETRY_BACKOFF_S="0.05")
    await stack.worker("stay", agents="calculator")
    # heartbeats every 2 s: eviction would take 6 s, so a quick disappearance is the goodbye
    leaving = await stack.worker(
        "leave", agents="calculator", process=True, LOOM_HEARTBEAT_INTERVAL_S="2", LOOM_DRAIN_TIMEOUT_S="1"
    )
    await stack.wait_instances("calculator", 2)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    short = [Task(target_agent="calculator", parameters=sleepy(0.3)) for _ in range(4)]
    long = [Task(target_agent="calculator", parameters=sleepy(4.0)) for _ in range(4)]
    for task in short + long:
        await submit_nats(nc, task)

    async def leaving_busy() -> bool:
        text = (await http.get(f"{leaving.url}/metrics")).text
        return any(
            line.startswith("loom_worker_in_flight ") and float(line.split()[1]) >= 2
            for line in text.splitlines()
        )

    await wait_for(leaving_busy, 30, "the leaving worker to hold tasks")
    process(leaving).signal(signal.SIGTERM)
    await wait_for(lambda: not process(leaving).alive, 20, "the worker to drain and exit")
    await stack.wait_instances("calculator", 1, timeout=3)
    ids = [t.task_id for t in short + long]
    await wait_for(lambda: finals.done(ids), 60, "every task to end")
    assert all(len(finals.by_task[t]) == 1 for t in ids), "a task ended more than once"
    assert {finals.by_task[t][0].status for t in ids} == {"completed"}
    handed_back = [finals.by_task[t.task_id][0] for t in long if finals.by_task[t.task_id][0].attempt > 1]
    assert handed_back, "no long task was handed back by the draining worker"
    assert all(o.instance_id == "stay" for o in handed_back)
