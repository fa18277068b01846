"""One Loom phase's clients spread over several processes, so that the harness is not the bottleneck.

One asyncio process tops out below what the stack's REST API answers (with httpx the REST
closed loop kept the harness at ~78% of a core; submissions now go through aiohttp, see
:func:`loom_load.loom.rest_session`). :func:`run_spread` starts N client
processes (multiprocessing, spawn), gives each a share of the phase's tasks and of its
concurrency and a task-id prefix of its own under the run's prefix, lets them warm up, starts
them together, and merges what they measured (:func:`loom_load.loom.summarize`). Each process
hears its tasks' final statuses on NATS itself; the events and assignments that make the per-hop
latencies are heard by the harness's own observer, as for any task of the run.

Accounting stays exact: a process that never reports has its whole share counted ``missing``
with the reason. The client processes' CPU is measured per process (``client[<pid>]``), so a
reader sees whether one of them saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
import nats

from . import procstat
from .ledger import unreported
from .loom import LoomClient, PhasePart, PhaseRun, PhaseSpec, rest_session, run_phase, summarize
from .observe import Observer, Trace

Progress = Callable[[int], None]
READY_TIMEOUT_S = 120.0
PROGRESS_EVERY = 20


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one, the larger first."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class ClientJob:
    index: int
    spec: PhaseSpec
    prefix: str
    nats_servers: list[str]
    dispatcher_url: str
    headers: dict[str, str]
    phase_timeout_s: float
    grace_s: float
    warmup: int = 8


def child_main(job: ClientJob, results: Any, go: Any, abort: Any, release: Any) -> None:
    """A client process: warm up, report ready, run its share when told, report, wait to be released
    (so that the harness reads its CPU while it still exists)."""
    asyncio.run(_child(job, results, go, abort, release))


async def _child(job: ClientJob, results: Any, go: Any, abort: Any, release: Any) -> None:
    http = httpx.AsyncClient(
        base_url=job.dispatcher_url,
        headers=job.headers,
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
    )
    observer = Observer(job.prefix, "")
    rest = rest_session(job.dispatcher_url, job.headers)
    nc: Any = None
    try:
        nc = await nats.connect(
            job.nats_servers,
            name=f"loom-load-client-{job.index}",
            connect_timeout=3,
            max_reconnect_attempts=3,
            reconnect_time_wait=0.5,
        )
        await observer.start(nc, status_only=True)
        client = LoomClient(
            js=nc.jetstream(publish_async_max_pending=4000),
            http=http,
            observer=observer,
            prefix=job.prefix,
            rest=rest,
        )
        spec = job.spec
        warm = PhaseSpec(
            "warmup", "warm-up", spec.agent, spec.transport, "closed", job.warmup, min(4, spec.concurrency)
        )
        await run_phase(warm, client, phase_timeout_s=30, grace_s=5, progress=None)
        results.put(("ready", job.index, os.getpid()))
        await asyncio.to_thread(go.wait, READY_TIMEOUT_S + 60)
        if abort.is_set() or not go.is_set():
            return

        def progress(done: int) -> None:
            if done % PROGRESS_EVERY == 0 or done == spec.count:
                results.put(("progress", job.index, done))

        part = await PhaseRun(spec, client, progress).run_part(job.phase_timeout_s, job.grace_s)
        results.put(("result", job.index, part))
        await asyncio.to_thread(release.wait, 60)
    except Exception as exc:  # noqa: BLE001 -- reported to the harness, which accounts for the share
        results.put(("error", job.index, f"{type(exc).__name__}: {exc}"))
    finally:
        await observer.stop()
        await http.aclose()
        await rest.close()
        if nc is not None:
            await nc.close()


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _missing_part(job: ClientJob, at: float, reason: str) -> PhasePart:
    return PhasePart(
        t0=at,
        submit_done=at,
        first_submit=None,
        last_submit=None,
        last_final=None,
        accepted=0,
        latencies=[],
        completion_times=[],
        accounting=unreported(job.spec.count, reason),
        task_ids=[],
        t_submit={},
        cpu_s=0.0,
        pid=0,
    )


def client_prefix(prefix: str, k: int) -> str:
    """The task-id prefix of client process ``k``: its tasks are ``<prefix>c<k>-<phase>-<n>``."""
    return f"{prefix}c{k}-"


async def run_spread(
    spec: PhaseSpec,
    procs: int,
    *,
    nats_servers: list[str],
    dispatcher_url: str,
    headers: dict[str, str],
    prefix: str,
    phase_timeout_s: float,
    grace_s: float,
    traces: Mapping[str, Trace],
    progress: Callable[[], Progress | None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``spec`` over ``procs`` client processes; (the phase's summary, its CPU window).
    ``progress`` makes the progress callback once the processes are ready to start."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    go, abort, release = ctx.Event(), ctx.Event(), ctx.Event()
    counts = split(spec.count, procs)
    slots = split(spec.concurrency, procs)
    jobs = [
        ClientJob(
            index=k,
            spec=replace(spec, count=counts[k], concurrency=max(1, slots[k])),
            prefix=client_prefix(prefix, k),
            nats_servers=nats_servers,
            dispatcher_url=dispatcher_url,
            headers=headers,
            phase_timeout_s=phase_timeout_s,
            grace_s=grace_s,
        )
        for k in range(procs)
    ]
    processes = [
        ctx.Process(target=child_main, args=(job, results, go, abort, release), name=f"loom-load-client-{k}")
        for k, job in enumerate(jobs)
    ]
    parts: dict[int, PhasePart] = {}
    failed: dict[int, str] = {}
    done: dict[int, int] = {}
    window: dict[str, Any] = {}
    started = time.perf_counter()
    harness_cpu_s = 0.0

    async def receive(until: float) -> tuple[str, int, Any] | None:
        try:
            got: tuple[str, int, Any] = await asyncio.to_thread(
                results.get, True, max(0.05, min(1.0, until - time.perf_counter()))
            )
            return got
        except queue.Empty:
            for k, p in enumerate(processes):
                if k not in parts and k not in failed and not p.is_alive():
                    failed[k] = f"client process {k} exited with code {p.exitcode} before reporting"
            return None

    try:
        for p in processes:
            p.start()
        ready: set[int] = set()
        until = time.perf_counter() + READY_TIMEOUT_S
        while len(ready | failed.keys()) < procs and time.perf_counter() < until:
            msg = await receive(until)
            if msg is None:
                continue
            kind, k, payload = msg
            if kind == "ready":
                ready.add(k)
            elif kind == "error":
                failed[k] = f"client process {k}: {payload}"
        for k in range(procs):
            if k not in ready and k not in failed:
                failed[k] = f"client process {k} not ready after {READY_TIMEOUT_S:.0f} s"
        roots = {p.pid: "client" for p in processes if p.pid is not None}
        cpu_window = procstat.Window(roots)
        cpu0 = _cpu_self()
        started = time.perf_counter()
        update = progress() if progress is not None else None
        if len(failed) < procs:
            go.set()
        until = started + phase_timeout_s + grace_s + spec.task_timeout_s + 60
        while len(parts) + len(failed) < procs and time.perf_counter() < until:
            msg = await receive(until)
            if msg is None:
                continue
            kind, k, payload = msg
            if kind == "progress":
                done[k] = payload
                if update is not None:
                    update(sum(done.values()))
            elif kind == "result":
                parts[k] = payload
            elif kind == "error":
                failed[k] = f"client process {k}: {payload}"
        harness_cpu_s = _cpu_self() - cpu0
        completed = sum(p.completed for p in parts.values())
        window = cpu_window.close(completed)
    finally:
        abort.set()
        go.set()
        release.set()
        for p in processes:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()  # this harness's own child, by its handle
                p.join(timeout=5)
        with contextlib.suppress(Exception):
            results.close()
            results.cancel_join_thread()
    now = time.perf_counter()
    for k in range(procs):
        if k not in parts:
            reason = failed.get(k, f"client process {k} did not report in time")
            parts[k] = _missing_part(jobs[k], min(started, now), reason)
    ordered = [parts[k] for k in range(procs)]
    summary = summarize(spec, ordered, traces)
    span = summary["duration_s"] or 0
    summary["harness_cpu_pct"] = round(100 * harness_cpu_s / span, 1) if span > 0 else None
    summary["client_processes"] = procs
    if failed:
        summary["client_errors"] = [failed[k] for k in sorted(failed)]
    return summary, window
