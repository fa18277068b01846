"""Load on Loom itself: submit tasks over NATS or REST, open or closed loop, and account for each.

A phase submits a bounded number of tasks (and stops at its time limit whatever the count),
waits up to a grace period for every accepted task's final status, looks up the ones still
open over REST, and summarises: submit rate, completed tasks/s, end-to-end latency, per-hop
latency, and the accounting of every task (see :mod:`loom_load.ledger`).
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from loom_protocol import MSG_ID_HEADER, Task, subjects, submitted_msg_id

from .ledger import TERMINAL, Ledger
from .observe import Observer, hop_latencies
from .stats import Latency, Timeline, rate

ParamsFn = Callable[[int], dict[str, Any]]
Progress = Callable[[int], None]  # called with the number of tasks finished so far


def echo_params(i: int) -> dict[str, Any]:
    return {"n": i, "text": "ping"}


def calculator_params(i: int) -> dict[str, Any]:
    return {"prompt": f"what is ({i % 97}+3)*4?"}


def orchestrator_params(i: int) -> dict[str, Any]:
    return {"prompt": f"what is {i % 13}*7 and what is ({i % 5}+2)*3; say hello {i}"}


PARAMS: dict[str, ParamsFn] = {
    "echo": echo_params,
    "calculator": calculator_params,
    "orchestrator": orchestrator_params,
}


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    title: str
    agent: str
    transport: str  # "nats" | "rest"
    mode: str  # "closed" | "open"  (sequential = closed at concurrency 1)
    count: int
    concurrency: int = 1
    rate: float | None = None  # open loop: tasks per second
    task_timeout_s: float = 30.0  # a closed-loop slot stops waiting for one task after this long


class SubmitError(Exception):
    pass


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


@dataclass
class LoomClient:
    js: Any
    http: httpx.AsyncClient
    observer: Observer
    prefix: str
    rest_wait_s: float = 30.0
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def new_task_id(self, phase: str) -> str:
        return f"{self.prefix}{phase}-{next(self._seq)}"

    async def submit_nats(self, task_id: str, agent: str, params: dict[str, Any]) -> None:
        payload = Task(task_id=task_id, target_agent=agent, parameters=params).to_json()
        await self.js.publish(
            subjects.task_submitted(agent),
            payload,
            timeout=10.0,
            headers={MSG_ID_HEADER: submitted_msg_id(task_id), "content-type": "application/json"},
        )

    async def submit_rest(self, task_id: str, agent: str, params: dict[str, Any], wait: float) -> str | None:
        """POST /api/tasks?wait=; the task's status in the response (terminal when it finished)."""
        body = {"taskId": task_id, "targetAgent": agent, "parameters": params}
        response = await self.http.post("/api/tasks", params={"wait": wait}, json=body)
        if response.status_code >= 400:
            raise SubmitError(f"HTTP {response.status_code}: {response.text[:120]}")
        status = response.json().get("status")
        return status if isinstance(status, str) else None

    async def lookup(self, task_id: str) -> str | None:
        try:
            response = await self.http.get(f"/api/tasks/{task_id}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        status = response.json().get("status")
        return status if isinstance(status, str) else None


class PhaseRun:
    """The state of one running phase."""

    def __init__(self, spec: PhaseSpec, client: LoomClient, progress: Progress | None) -> None:
        self.spec = spec
        self.client = client
        self.progress = progress
        self.ledger = Ledger()
        self.latency = Latency()
        self.starts: dict[str, float] = {}
        self.t0 = time.perf_counter()
        self.completions = Timeline(self.t0, bucket_s=1.0)
        self.submits = Timeline(self.t0)
        self.first_submit: float | None = None
        self.last_submit: float | None = None
        self.last_final: float | None = None
        self.accepted = 0
        self.finished = 0
        self.completed = 0

    def _record(self, task_id: str, status: str, at: float, via: str) -> None:
        if self.ledger.entries[task_id].outcome is not None:
            return
        self.ledger.finished(task_id, status, via)
        self.finished += 1
        if status == "completed":
            self.completed += 1
            self.completions.add(at)
            self.latency.record(at - self.starts[task_id])
        self.last_final = at if self.last_final is None else max(self.last_final, at)
        if self.progress is not None:
            self.progress(self.finished)

    async def one(self, i: int, intended: float | None, deadline: float) -> None:
        spec, client = self.spec, self.client
        task_id = client.new_task_id(spec.name)
        params = PARAMS[spec.agent](i)
        self.ledger.submitted(task_id)
        fut = client.observer.watch(task_id)
        client.observer.trace(task_id).t_submit = time.time()
        start = time.perf_counter()
        # open loop: latency counts from the intended send time (no coordinated omission)
        self.starts[task_id] = intended if intended is not None else start
        try:
            if spec.transport == "nats":
                await client.submit_nats(task_id, spec.agent, params)
            else:
                wait = max(0.0, min(client.rest_wait_s, deadline - time.perf_counter()))
                answer = await client.submit_rest(task_id, spec.agent, params, wait)
                if answer is not None and answer in TERMINAL:
                    client.observer.unwatch(task_id)
                    self._note_submit()
                    self._record(task_id, answer, time.perf_counter(), "rest")
                    return
        except Exception as exc:  # noqa: BLE001 -- every failure is accounted for, none stops the run
            client.observer.unwatch(task_id)
            self.ledger.submit_failed(task_id, _reason(exc))
            return
        self._note_submit()
        timeout = max(0.0, min(spec.task_timeout_s, deadline - time.perf_counter()))
        try:
            status, received = await asyncio.wait_for(fut, timeout=timeout)
        except TimeoutError:
            return  # still open: the grace period and the lookup decide
        self._record(task_id, status, received, "nats")

    def _note_submit(self) -> None:
        now = time.perf_counter()
        self.accepted += 1
        self.submits.add(now)
        if self.first_submit is None:
            self.first_submit = now
        self.last_submit = now

    async def run(self, phase_timeout_s: float, grace_s: float) -> dict[str, Any]:
        spec = self.spec
        cpu0 = _cpu_seconds()
        stop_at = self.t0 + phase_timeout_s
        wait_until = stop_at + grace_s
        if spec.mode == "open":
            await self._open_loop(stop_at, wait_until)
        else:
            await self._closed_loop(stop_at, wait_until)
        submit_done = time.perf_counter()
        await self._grace(submit_done + grace_s)
        await self._lookup_open()
        return self._summary(submit_done, _cpu_seconds() - cpu0)

    async def _closed_loop(self, stop_at: float, wait_until: float) -> None:
        counter = itertools.count()

        async def slot() -> None:
            while time.perf_counter() < stop_at:
                i = next(counter)
                if i >= self.spec.count:
                    return
                await self.one(i, None, wait_until)

        await asyncio.gather(*(slot() for _ in range(max(1, self.spec.concurrency))))

    async def _open_loop(self, stop_at: float, wait_until: float) -> None:
        assert self.spec.rate and self.spec.rate > 0
        interval = 1.0 / self.spec.rate
        jobs: list[asyncio.Task[None]] = []
        begin = time.perf_counter()
        for i in range(self.spec.count):
            intended = begin + i * interval
            if intended >= stop_at:
                break
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            jobs.append(asyncio.create_task(self.one(i, intended, wait_until)))
        if jobs:
            await asyncio.wait(jobs)

    async def _grace(self, wait_until: float) -> None:
        observer = self.client.observer
        while True:
            pending = self.ledger.open_ids()
            for task_id in pending:
                known = observer.finals.get(task_id)
                if known is not None:
                    self._record(task_id, known[0], known[1], "nats")
            if not self.ledger.pending_ids() or time.perf_counter() >= wait_until:
                break
            await asyncio.sleep(0.1)
        for task_id in self.ledger.open_ids():
            observer.unwatch(task_id)

    async def _lookup_open(self, limit: int = 500) -> None:
        for task_id in self.ledger.pending_ids()[:limit]:
            self.ledger.looked_up(task_id, await self.client.lookup(task_id))

    def _summary(self, submit_done: float, cpu_s: float) -> dict[str, Any]:
        spec = self.spec
        submit_span = (self.last_submit or 0) - (self.first_submit or 0)
        run_span = (self.last_final or submit_done) - self.t0
        task_ids = list(self.ledger.entries)
        hops = hop_latencies(self.client.observer.traces, task_ids)
        events = [self.client.observer.traces[t].events for t in task_ids if t in self.client.observer.traces]
        return {
            "name": spec.name,
            "title": spec.title,
            "system": "loom",
            "agent": spec.agent,
            "transport": spec.transport,
            "mode": "sequential" if spec.mode == "closed" and spec.concurrency == 1 else spec.mode,
            "count": spec.count,
            "concurrency": spec.concurrency if spec.mode == "closed" else None,
            "target_rate": spec.rate,
            "submitted": len(task_ids),
            "stopped_by": "count" if len(task_ids) >= spec.count else "time limit",
            "accepted": self.accepted,
            "duration_s": round(run_span, 3),
            "submit_rate": _round(rate(self.accepted, submit_span) if self.accepted > 1 else None),
            "throughput": _round(rate(self.completed, run_span)),
            "latency": self.latency.summary(),
            "cdf": self.latency.cdf(),
            "timeline": self.completions.series(),
            "hops": {name: h.summary() for name, h in hops.items() if h.count},
            "events_per_task": round(sum(events) / len(events), 2) if events else None,
            "accounting": self.ledger.accounting(),
            "harness_cpu_pct": round(100 * cpu_s / run_span, 1) if run_span > 0 else None,
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_phase(
    spec: PhaseSpec, client: LoomClient, *, phase_timeout_s: float, grace_s: float, progress: Progress | None
) -> dict[str, Any]:
    return await PhaseRun(spec, client, progress).run(phase_timeout_s, grace_s)
