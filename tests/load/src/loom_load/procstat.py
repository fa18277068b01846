"""CPU used by the stack's processes during a phase, read from /proc (Linux; empty elsewhere).

Processes are named by what they run: ``dispatcher``, ``agent-worker``, ``nats-server`` and
``redis-server`` (one entry per pid: tests elsewhere on the machine may run their own),
``postgres`` (all backends summed), ``celery`` (the worker and its pool), ``harness`` (this
process), and the other services by name. Processes the harness started itself (the peers'
workers, its client processes) are named by the caller through ``roots``: a root and every
process below it get ``<name>[<pid>]``.

:func:`snapshot` reads /proc; the rest is arithmetic on what it returned: CPU seconds between
two snapshots, percent of one core, milliseconds of CPU per task, and the subtotals the report
needs (the stack's processes, one peer's client + workers + broker).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

PER_PID = frozenset({"agent-worker", "dispatcher", "nats-server", "redis-server"})
CLIENT_CLASSES = frozenset({"harness", "client"})
PEER_CLASSES = frozenset({"celery", "taskiq", "faststream", "floor"})

_HARNESS_WORKERS = {
    "loom_load.taskiq_app": "taskiq",
    "loom_load.faststream_peer": "faststream",
    "loom_load.floor": "floor",
}


def classify(cmdline: str) -> str | None:
    """A short name for a process of interest, from its command line; None for the others."""
    for module, name in _HARNESS_WORKERS.items():
        if module in cmdline:
            return name
    if "loom_load.celery_app" in cmdline or (
        "celery" in cmdline and "worker" in cmdline and "loomload" in cmdline
    ):
        return "celery"
    if "-m loom_load" in cmdline:
        return None  # the harness's own helpers: named by the caller (roots) when it started them
    if "-m loom_" in cmdline:
        service = cmdline.split("-m loom_", 1)[1].split()[0]
        return service.replace("_", "-")
    if "nats-server" in cmdline:
        return "nats-server"
    if "redis-server" in cmdline:
        return "redis-server"
    if cmdline.startswith("postgres") or "/bin/postgres" in cmdline:
        return "postgres"
    return None


def class_of(key: str) -> str:
    """``dispatcher[123]`` -> ``dispatcher``."""
    return key.split("[", 1)[0]


def pid_of(key: str) -> int | None:
    """``dispatcher[123]`` -> 123; None for a key that sums several processes."""
    if not key.endswith("]") or "[" not in key:
        return None
    text = key.rsplit("[", 1)[1][:-1]
    return int(text) if text.isdigit() else None


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, CPU ticks used: utime + stime) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _root_of(pid: int, parents: Mapping[int, int], roots: Mapping[int, str]) -> int | None:
    seen = 0
    while pid > 1 and seen < 64:
        if pid in roots:
            return pid
        pid = parents.get(pid, 0)
        seen += 1
    return None


def snapshot(roots: Mapping[int, str] | None = None) -> dict[str, float]:
    """CPU seconds used so far, by process name (see the module's docstring for the keys)."""
    out: dict[str, float] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    roots = roots or {}
    me = os.getpid()
    stats: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            got = _stat(entry.name)
            if got is not None:
                stats[int(entry.name)] = got
    parents = {pid: ppid for pid, (ppid, _) in stats.items()}
    for pid, (_, ticks) in stats.items():
        root = _root_of(pid, parents, roots) if roots else None
        if root is not None:
            key = f"{roots[root]}[{pid}]"
        elif pid == me:
            key = "harness"
        else:
            try:
                raw = (proc / str(pid) / "cmdline").read_bytes()
            except OSError:
                continue
            name = classify(raw.replace(b"\0", b" ").decode(errors="replace").strip())
            if name is None:
                continue
            key = f"{name}[{pid}]" if name in PER_PID else name
        out[key] = out.get(key, 0.0) + ticks / _TICKS
    return out


def cpu_seconds(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two snapshots (processes that used none left out)."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    return {k: round(v, 4) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0}


def cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Percent of one core used by each process between two snapshots, busiest first."""
    if seconds <= 0:
        return {}
    used = {k: (after[k] - before.get(k, 0.0)) / seconds * 100 for k in after}
    return {k: round(v, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.5}


def ms_per_task(by_process_s: Mapping[str, float], tasks: int) -> dict[str, float]:
    """Milliseconds of CPU per task by process (CPU seconds / tasks completed), busiest first."""
    if tasks <= 0:
        return {}
    per = {k: 1000.0 * v / tasks for k, v in by_process_s.items()}
    return {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}


def subtotal(by_process: Mapping[str, float], include: Callable[[str], bool]) -> float:
    """The sum over the processes ``include`` accepts."""
    return sum(v for k, v in by_process.items() if include(k))


def _broker_ok(key: str, name: str, brokers: Mapping[str, Iterable[int]]) -> bool:
    """A ``nats-server``/``redis-server`` key counts when it is the stack's (or when the stack's
    pids are unknown: every one counts)."""
    pids = set(brokers.get(name, ()))
    return not pids or pid_of(key) in pids


def is_stack(key: str, brokers: Mapping[str, Iterable[int]]) -> bool:
    """A process of the Loom stack: its services, its NATS and Redis, PostgreSQL; not the harness's
    clients nor the peers' workers."""
    name = class_of(key)
    if name in CLIENT_CLASSES or name in PEER_CLASSES:
        return False
    if name in ("nats-server", "redis-server"):
        return _broker_ok(key, name, brokers)
    return True


def is_peer(key: str, peer: str, broker_names: Iterable[str], brokers: Mapping[str, Iterable[int]]) -> bool:
    """A process of one peer's measurement: the client (harness), the peer's workers, its brokers."""
    name = class_of(key)
    if name in CLIENT_CLASSES or name == peer:
        return True
    return name in set(broker_names) and _broker_ok(key, name, brokers)


@dataclass
class Window:
    """CPU by process over one phase: opened before the phase, closed after it."""

    roots: Mapping[int, str] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0

    def __post_init__(self) -> None:
        self.before = snapshot(self.roots)
        self.t0 = time.perf_counter()

    def close(self, tasks: int) -> dict[str, Any]:
        """``{"wall_s", "tasks", "by_process_s"}``: what :func:`ms_per_task` and the report use."""
        after = snapshot(self.roots)
        wall = time.perf_counter() - self.t0
        return {"wall_s": round(wall, 3), "tasks": tasks, "by_process_s": cpu_seconds(self.before, after)}


def percent_of(window: Mapping[str, Any]) -> dict[str, float]:
    """A closed :class:`Window` as percent of one core by process (``results["cpu"]``'s form)."""
    wall = float(window.get("wall_s") or 0)
    if wall <= 0:
        return {}
    by: Mapping[str, float] = window.get("by_process_s") or {}
    return {k: round(100 * v / wall, 1) for k, v in by.items() if 100 * v / wall >= 0.5}


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def pid_listening_on(port: int) -> int | None:
    """The process that listens on ``port`` (so the stack's service, not a test's own copy)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
        except OSError:
            continue
    return None
