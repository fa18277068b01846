"""Load on Loom itself: submit tasks over NATS or REST, open or closed loop, and account for each.

A phase submits a bounded number of tasks (and stops at its time limit whatever the count),
waits up to a grace period for every accepted task's final status, looks up the ones still
open over REST, and summarises: submit rate, completed tasks/s, end-to-end latency, per-hop
latency, and the accounting of every task (see :mod:`loom_load.ledger`). A phase may run in
several client processes (:mod:`loom_load.client_procs`): each measures a :class:`PhasePart`
and :func:`summarize` merges them; one process is the case of one part.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from loom_protocol import MSG_ID_HEADER, Task, subjects, submitted_msg_id

from .ledger import TERMINAL, Ledger, merge_accounting
from .observe import Observer, Trace, hop_latencies
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
    extra_params: Mapping[str, Any] | None = None  # added to every task's parameters

    def params(self, i: int) -> dict[str, Any]:
        return {**PARAMS[self.agent](i), **(self.extra_params or {})}


class SubmitError(Exception):
    pass


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def rest_session(base_url: str, headers: dict[str, str]) -> aiohttp.ClientSession:
    """The session REST submissions go through: aiohttp, whose client costs under 1 ms of CPU per
    request at 64 connections where httpx's cost over 10 ms (the REST closed loop measured the
    harness). Close it with ``await session.close()``."""
    return aiohttp.ClientSession(
        base_url=base_url,
        headers=headers,
        connector=aiohttp.TCPConnector(limit=0),  # one connection per task in flight
        timeout=aiohttp.ClientTimeout(total=120, connect=5),
    )


async def submit_nats(js: Any, task_id: str, agent: str, params: dict[str, Any]) -> None:
    """Submit a task over JetStream, as a client of the NATS API does (awaiting the stream's ack)."""
    payload = Task(task_id=task_id, target_agent=agent, parameters=params).to_json()
    await js.publish(
        subjects.task_submitted(agent),
        payload,
        timeout=10.0,
        headers={MSG_ID_HEADER: submitted_msg_id(task_id), "content-type": "application/json"},
    )


@dataclass
class LoomClient:
    js: Any
    http: httpx.AsyncClient
    observer: Observer
    prefix: str
    rest: aiohttp.ClientSession  # REST submissions (rest_session); ``http`` for everything else
    rest_wait_s: float = 30.0
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def new_task_id(self, phase: str) -> str:
        return f"{self.prefix}{phase}-{next(self._seq)}"

    async def submit_nats(self, task_id: str, agent: str, params: dict[str, Any]) -> None:
        await submit_nats(self.js, task_id, agent, params)

    async def submit_rest(self, task_id: str, agent: str, params: dict[str, Any], wait: float) -> str | None:
        """POST /api/tasks?wait=; the task's status in the response (terminal when it finished)."""
        body = {"taskId": task_id, "targetAgent": agent, "parameters": params}
        try:
            async with self.rest.post("/api/tasks", params={"wait": str(wait)}, json=body) as reply:
                text = await reply.text()
                if reply.status >= 400:
                    raise SubmitError(f"HTTP {reply.status}: {text[:120]}")
                answer = json.loads(text)
        except aiohttp.ClientError as exc:
            raise SubmitError(_reason(exc)) from exc
        status = answer.get("status") if isinstance(answer, dict) else None
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
        self.latencies: list[float] = []
        self.completion_times: list[float] = []
        self.starts: dict[str, float] = {}
        self.t0 = time.perf_counter()
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
            self.completion_times.append(at)
            self.latencies.append(at - self.starts[task_id])
        self.last_final = at if self.last_final is None else max(self.last_final, at)
        if self.progress is not None:
            self.progress(self.finished)

    async def one(self, i: int, intended: float | None, deadline: float) -> None:
        spec, client = self.spec, self.client
        task_id = client.new_task_id(spec.name)
        params = spec.params(i)
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
        if self.first_submit is None:
            self.first_submit = now
        self.last_submit = now

    async def run(self, phase_timeout_s: float, grace_s: float) -> dict[str, Any]:
        part = await self.run_part(phase_timeout_s, grace_s)
        return summarize(self.spec, [part], self.client.observer.traces)

    async def run_part(self, phase_timeout_s: float, grace_s: float) -> PhasePart:
        """Run the phase; what this process measured, for :func:`summarize`."""
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
        traces = self.client.observer.traces
        return PhasePart(
            t0=self.t0,
            submit_done=submit_done,
            first_submit=self.first_submit,
            last_submit=self.last_submit,
            last_final=self.last_final,
            accepted=self.accepted,
            latencies=self.latencies,
            completion_times=self.completion_times,
            accounting=self.ledger.accounting(),
            task_ids=list(self.ledger.entries),
            t_submit={t: v for t in self.ledger.entries if (v := traces[t].t_submit) is not None},
            cpu_s=_cpu_seconds() - cpu0,
            pid=os.getpid(),
        )

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


@dataclass
class PhasePart:
    """What one client process measured in a phase: raw enough to be merged with other parts."""

    t0: float  # perf_counter readings: one clock for every process of this machine
    submit_done: float
    first_submit: float | None
    last_submit: float | None
    last_final: float | None
    accepted: int
    latencies: list[float]  # seconds, one per completed task
    completion_times: list[float]
    accounting: dict[str, Any]
    task_ids: list[str]
    t_submit: dict[str, float]  # wall clock, by task id: the first hop's start
    cpu_s: float  # this process's CPU over the phase
    pid: int

    @property
    def completed(self) -> int:
        return len(self.latencies)


def _lowest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _highest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarize(spec: PhaseSpec, parts: Sequence[PhasePart], traces: Mapping[str, Trace]) -> dict[str, Any]:
    """One phase's summary from the parts its client processes measured (one part: one process).

    Rates are counted over the union of the parts' spans; latencies, completions and the ledger's
    buckets are merged; per-hop latencies come from ``traces`` (what the harness heard on NATS),
    with each task's submission time taken from the part that submitted it."""
    t0 = min(p.t0 for p in parts)
    submit_done = max(p.submit_done for p in parts)
    first_submit = _lowest([p.first_submit for p in parts])
    last_submit = _highest([p.last_submit for p in parts])
    last_final = _highest([p.last_final for p in parts])
    accepted = sum(p.accepted for p in parts)
    completed = sum(p.completed for p in parts)
    latency = Latency()
    completions = Timeline(t0, bucket_s=1.0)
    for p in parts:
        latency.record_many(p.latencies)
        for at in p.completion_times:
            completions.add(at)
    submit_span = (last_submit or 0) - (first_submit or 0)
    run_span = (last_final or submit_done) - t0
    task_ids = [t for p in parts for t in p.task_ids]
    for p in parts:
        for task_id, at in p.t_submit.items():
            trace = traces.get(task_id)
            if trace is not None and trace.t_submit is None:
                trace.t_submit = at
    hops = hop_latencies(traces, task_ids)
    events = [traces[t].events for t in task_ids if t in traces]
    cpu_s = sum(p.cpu_s for p in parts)
    accounting = merge_accounting([p.accounting for p in parts])
    submitted = int(accounting["total"])
    out = {
        "name": spec.name,
        "title": spec.title,
        "system": "loom",
        "agent": spec.agent,
        "transport": spec.transport,
        "mode": "sequential" if spec.mode == "closed" and spec.concurrency == 1 else spec.mode,
        "count": spec.count,
        "concurrency": spec.concurrency if spec.mode == "closed" else None,
        "target_rate": spec.rate,
        "submitted": submitted,
        "stopped_by": "count" if submitted >= spec.count else "time limit",
        "accepted": accepted,
        "duration_s": round(run_span, 3),
        "submit_rate": _round(rate(accepted, submit_span) if accepted > 1 else None),
        "throughput": _round(rate(completed, run_span)),
        "latency": latency.summary(),
        "cdf": latency.cdf(),
        "timeline": completions.series(),
        "hops": {name: h.summary() for name, h in hops.items() if h.count},
        "events_per_task": round(sum(events) / len(events), 2) if events else None,
        "accounting": accounting,
        "harness_cpu_pct": round(100 * cpu_s / run_span, 1) if run_span > 0 else None,
    }
    if spec.extra_params:
        out["extra_params"] = dict(spec.extra_params)
    if len(parts) > 1:
        out["client_procs"] = [
            {
                "pid": p.pid,
                "tasks": len(p.task_ids),
                "completed": p.completed,
                "cpu_s": round(p.cpu_s, 3),
                "cpu_pct": round(100 * p.cpu_s / run_span, 1) if run_span > 0 else None,
            }
            for p in parts
        ]
    return out


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_phase(
    spec: PhaseSpec, client: LoomClient, *, phase_timeout_s: float, grace_s: float, progress: Progress | None
) -> dict[str, Any]:
    return await PhaseRun(spec, client, progress).run(phase_timeout_s, grace_s)
