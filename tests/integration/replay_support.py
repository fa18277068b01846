"""Helpers for the replay tests of both tiers: the whole stack (registry, dispatcher, worker, ingest, replay)
on a per-test database, running tasks, and waiting until a trace is completely stored.

The per-test database fixture is events_support's ``database_url``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from loom_protocol import TERMINAL_STATUSES, TERMINAL_TASK_EVENT_TYPES

from .events_support import FAST_INGEST, fetch
from .harness import AnyService, Stack, wait_for

TERMINAL = TERMINAL_STATUSES
ORDER = "time, coalesce(seq, -1), id"


async def start_replay(
    stack: Stack, database_url: str, name: str = "replay-0", *, process: bool = False, **env: str
) -> AnyService:
    dispatcher = {"LOOM_DISPATCHER_URL": stack.api} if stack.dispatchers else {}
    env = {"LOOM_DATABASE_URL": database_url, **dispatcher, **env}
    return await stack.add(name, "loom_replay", env, process=process).started()


async def full_stack(
    stack: Stack, database_url: str, *, workers: int = 1, replicas: int = 1, process_replays: bool = False
) -> list[AnyService]:
    """Registry, dispatcher, workers, ingest and replay on the test's stack, started side by
    side (each only needs NATS, Redis or the database); returns the replay replicas (processes
    with ``process_replays``, the rest in the test's process)."""
    services = [
        stack.registry_service(),
        dispatcher := stack.dispatcher_service(LOOM_NO_INSTANCE_TIMEOUT_S="5"),
        *(stack.worker_service(f"rw{index}") for index in range(workers)),
        stack.add("ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST}),
    ]
    replays = [
        stack.service(
            f"replay-{index}",
            "loom_replay",
            process=process_replays,
            LOOM_DATABASE_URL=database_url,
            LOOM_DISPATCHER_URL=dispatcher.url,
        )
        for index in range(replicas)
    ]
    await asyncio.gather(*(svc.started(120) for svc in (*services, *replays)))
    await stack.wait_instances("orchestrator", workers)
    await stack.wait_instances("calculator", workers)
    return replays


async def run_task(
    http: httpx.AsyncClient, stack: Stack, agent: str, parameters: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 30},
        json={"targetAgent": agent, "parameters": parameters, **fields},
    )
    assert resp.status_code == 200, resp.text
    task: dict[str, Any] = resp.json()
    assert task["status"] in TERMINAL, task
    return task


def trace_of(task: dict[str, Any]) -> str:
    return str(task["trace"]["traceparent"][3:35])


async def trace_complete(database_url: str, trace_id: str) -> bool:
    """Whether every row of a finished trace is stored: each task has its final status row and
    its dispatcher ``task.<terminal>`` event, and each agent's events are contiguous from seq 0
    up to its closing pair (``agent.answer`` and ``memory.consolidate``, or an ``error``)."""
    rows = await fetch(
        database_url,
        "SELECT task_id, kind, type, seq, data FROM events WHERE trace_id = $1 AND task_id IS NOT NULL",
        trace_id,
    )
    tasks: dict[str, dict[str, Any]] = {}
    for row in rows:
        fresh = {"final": False, "closed": False, "seqs": set(), "types": set()}
        task = tasks.setdefault(row["task_id"], fresh)
        data = (json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]) or {}
        if row["kind"] == "task" and row["type"].startswith("loom.task.status.") and data.get("final"):
            task["final"] = True
        if row["kind"] == "event" and row["type"] in TERMINAL_TASK_EVENT_TYPES:
            task["closed"] = True
        if row["kind"] == "event" and row["seq"] is not None:
            task["seqs"].add(row["seq"])
            task["types"].add(row["type"])
    if not tasks:
        return False
    for task in tasks.values():
        if not (task["final"] and task["closed"]):
            return False
        seqs, types = task["seqs"], task["types"]
        if seqs and (seqs != set(range(max(seqs) + 1))):
            return False
        if seqs and not ({"agent.answer", "memory.consolidate"} <= types or "error" in types):
            return False
    return True


async def wait_trace_stored(database_url: str, trace_id: str, timeout: float = 60) -> None:
    await wait_for(lambda: trace_complete(database_url, trace_id), timeout, f"trace {trace_id} stored")


async def trace_events(database_url: str, trace_id: str, as_of: str | None = None) -> list[dict[str, Any]]:
    """The trace's rows as CloudEvents, in replay order (those ingested by ``as_of`` when given:
    a replay session's snapshot)."""
    rows = await fetch(
        database_url,
        "SELECT attributes, data FROM events WHERE trace_id = $1 "
        f"AND ingested_at <= coalesce($2::timestamptz, 'infinity') ORDER BY {ORDER}",  # noqa: S608
        trace_id,
        datetime.fromisoformat(as_of) if as_of else None,
    )
    events = []
    for row in rows:
        event = json.loads(row["attributes"])
        if row["data"] is not None:
            event["data"] = json.loads(row["data"])
        events.append(event)
    return events


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
