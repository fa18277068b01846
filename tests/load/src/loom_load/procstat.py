"""CPU used by the stack's processes during a phase, read from /proc (Linux; empty elsewhere).

Processes are named by what they run: ``dispatcher``, ``agent-worker``, ``nats-server`` (one
entry per pid: tests elsewhere on the machine may run their own), ``redis-server``,
``postgres`` (all backends summed), ``celery`` (the worker and its pool), ``harness`` (this
process), and the other services by name.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def classify(cmdline: str) -> str | None:
    """A short name for a process of interest, from its command line; None for the others."""
    if "-m loom_" in cmdline:
        service = cmdline.split("-m loom_", 1)[1].split()[0]
        return service.replace("_", "-")
    if "loom_load.celery_app" in cmdline or (
        "celery" in cmdline and "worker" in cmdline and "loomload" in cmdline
    ):
        return "celery"
    if "nats-server" in cmdline:
        return "nats-server"
    if "redis-server" in cmdline:
        return "redis-server"
    if cmdline.startswith("postgres") or "/bin/postgres" in cmdline:
        return "postgres"
    return None


def _cpu_ticks(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def snapshot() -> dict[str, float]:
    """CPU seconds used so far, by process name (agent workers and dispatchers keyed by pid)."""
    out: dict[str, float] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    me = str(os.getpid())
    for entry in proc.iterdir():
        pid = entry.name
        if not pid.isdigit():
            continue
        if pid == me:
            name: str | None = "harness"
        else:
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                )
            except OSError:
                continue
            name = classify(cmdline)
        if name is None:
            continue
        ticks = _cpu_ticks(pid)
        if ticks is None:
            continue
        key = f"{name}[{pid}]" if name in ("agent-worker", "dispatcher", "nats-server") else name
        out[key] = out.get(key, 0.0) + ticks / _TICKS
    return out


def cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Percent of one core used by each process between two snapshots, busiest first."""
    if seconds <= 0:
        return {}
    used = {k: (after[k] - before.get(k, 0.0)) / seconds * 100 for k in after}
    return {k: round(v, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.5}
