"""The run's results as headline figures and ratios, a rich table, a JSON file and an HTML page.

Everything takes the results dictionary the CLI builds (see ``loom_load.cli``) and is pure
except :func:`write_reports`, which writes ``results.json`` and ``report.html`` in a folder.
The HTML page is self-contained: tables plus inline SVG charts (latency CDF, throughput over
time), no script and no external asset.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from . import procstat
from .io_bench import ideal_rate, io_verdict
from .stats import ratio

NA = "n/a"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None  # None: no target, or nothing to judge
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return NA
        if self.unit == "×":
            return f"{self.value:.2f}×"
        if self.unit == "ms":
            return f"{self.value:.2f} ms"
        return f"{self.value:,.0f} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "shown": self.shown(),
            "target": self.target,
            "ok": self.ok,
            "note": self.note,
        }


def phase(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    for item in results.get("phases", []):
        if item.get("name") == name:
            found: dict[str, Any] = item
            return found
    return None


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _na_reason(section: Any) -> str:
    if not isinstance(section, dict):
        return "not measured"
    return str(section.get("na") or section.get("error") or "")


TARGETS: dict[str, tuple[str, float]] = {
    "ratio_throughput": (">=", 1.5),
    "ratio_throughput_taskiq": (">=", 1.0),
    "ratio_rounds_celery": (">=", 1.5),
    "ratio_rounds_taskiq": (">=", 1.0),
    "ratio_p50_nats": ("<=", 1.2),
    "ratio_p50_rest": ("<=", 1.5),
    "ratio_rest_nats": (">=", 0.8),
    "ratio_ingest_copy": (">=", 0.5),
    "ingest_lag_p99_ms": ("<", 250.0),
    "live_p99_ms": ("<", 50.0),
    "cpu_per_echo_task": ("<=", 3.0),
}
"""The targets of the headline figures: (comparison, bound). Reported, not asserted."""

_SHOWN_OP = {">=": "≥", "<=": "≤", "<": "<", ">": ">"}

OPEN_PHASE = "echo-nats-open"
"""The phase whose events give the live feed's figure: a steady load of about 1k events/s."""
CLOSED_PHASE = "echo-nats-closed"
"""The echo closed loop over NATS: the throughput, CPU per task and ingest lag figures' phase."""

PEER_TITLES = {
    "celery": "Celery",
    "taskiq": "taskiq-nats",
    "faststream": "FastStream",
    "floor": "nats-py floor",
}
"""The peers measured like the Celery baseline, by their key in the results (and phase prefix)."""

PEER_BROKERS = {
    "celery": ("redis-server",),
    "taskiq": ("nats-server", "redis-server"),
    "faststream": ("nats-server",),
    "floor": ("nats-server",),
}
"""The brokers each peer's CPU per task counts with its client and workers."""


def judge(value: float | None, op: str, bound: float) -> bool | None:
    """Whether ``value`` meets ``op bound``; None when there is no value to judge."""
    if value is None:
        return None
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound, ">": value > bound}[op]


def target_text(key: str, unit: str) -> str:
    op, bound = TARGETS[key]
    shown = f"{bound:g}×" if unit == "×" else f"{bound:g} {unit}"
    return f"{_SHOWN_OP[op]} {shown}"


def _fig(key: str, label: str, value: float | None, unit: str, note: str = "") -> Figure:
    """A figure, with its target and verdict when it has one."""
    if key in TARGETS:
        op, bound = TARGETS[key]
        return Figure(key, label, value, unit, target_text(key, unit), judge(value, op, bound), note)
    return Figure(key, label, value, unit, note=note)


def _peer_of(phase_name: str) -> str | None:
    """The peer a CPU window belongs to (``taskiq-closed`` -> ``taskiq``), None for Loom's."""
    if phase_name.startswith("io-celery"):
        return "celery"
    head = phase_name.split("-", 1)[0]
    return head if head in PEER_TITLES else None


EVENT_STORE = frozenset({"ingest", "postgres"})
"""The processes that keep Loom's record of every step (the ``events`` and ``tasks`` tables)."""


def cpu_per_task(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For every phase with a CPU window: milliseconds of CPU per task completed, by process and
    summed: ``system_ms`` (Loom's phases: the stack's processes; a peer's: its workers and
    brokers), ``client_ms`` (the harness and its client processes), ``sum_ms`` (the two: what
    serving a task cost), ``all_ms`` (every process measured, other work on the machine too)."""
    out: dict[str, dict[str, Any]] = {}
    brokers: dict[str, list[int]] = _get(results, "run", "broker_pids") or {}
    for phase_name, window in (results.get("cpu_s") or {}).items():
        if not isinstance(window, dict):
            continue
        tasks = int(window.get("tasks") or 0)
        by: dict[str, float] = window.get("by_process_s") or {}
        per = procstat.ms_per_task(by, tasks)
        peer = _peer_of(phase_name)

        def system(key: str, peer: str | None = peer) -> bool:
            if peer is None:
                return procstat.is_stack(key, brokers)
            return procstat.is_peer(key, peer, PEER_BROKERS[peer], brokers) and not _client(key)

        system_ms = procstat.subtotal(per, system)
        client_ms = procstat.subtotal(per, _client)
        out[phase_name] = {
            "tasks": tasks,
            "wall_s": window.get("wall_s"),
            "system": PEER_TITLES[peer] if peer else "Loom",
            "system_ms": round(system_ms, 3) if tasks else None,
            "client_ms": round(client_ms, 3) if tasks else None,
            "sum_ms": round(system_ms + client_ms, 3) if tasks else None,
            "all_ms": round(sum(per.values()), 3) if tasks else None,
            "by_process_ms": per,
        }
    return out


def _client(key: str) -> bool:
    return procstat.class_of(key) in procstat.CLIENT_CLASSES


def peers(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system measured on the no-op workloads: Loom (echo over NATS) and each peer."""
    cpu = cpu_per_task(results)
    closed = phase(results, CLOSED_PHASE) or {}
    seq = phase(results, "echo-nats-seq") or {}
    rows: list[dict[str, Any]] = [
        {
            "key": "loom",
            "system": "Loom (echo, NATS)",
            "throughput": closed.get("throughput"),
            "closed_p50_ms": _get(closed, "latency", "p50_ms"),
            "seq_p50_ms": _get(seq, "latency", "p50_ms"),
            "seq_p99_ms": _get(seq, "latency", "p99_ms"),
            "cpu_ms_per_task": _get(cpu, CLOSED_PHASE, "sum_ms"),
            "workers": _instances(results),
            "note": "" if closed else "not measured",
        }
    ]
    for key, title in PEER_TITLES.items():
        section = results.get(key)
        if section is None:
            continue
        rows.append(
            {
                "key": key,
                "system": title,
                "throughput": _get(section, "closed", "throughput"),
                "closed_p50_ms": _get(section, "closed", "latency", "p50_ms"),
                "seq_p50_ms": _get(section, "sequential", "latency", "p50_ms"),
                "seq_p99_ms": _get(section, "sequential", "latency", "p99_ms"),
                "cpu_ms_per_task": _get(cpu, f"{key}-closed", "sum_ms"),
                "workers": section.get("workers") or section.get("worker_concurrency"),
                "note": _na_reason(section) or worker_exit_note(section.get("worker_exit")),
            }
        )
    return rows


def worker_exit_note(codes: Any) -> str:
    """A note when a peer's worker did not stop as asked (SIGTERM) but had crashed or was killed."""
    listed = codes if isinstance(codes, list) else [codes]
    bad = [c for c in listed if isinstance(c, int) and c not in (0, -15)]
    return f"worker exit code(s) {bad}: a worker crashed or was killed" if bad else ""


def _instances(results: dict[str, Any]) -> int | None:
    instances = _get(results, "preflight", "instances")
    if isinstance(instances, dict) and isinstance(instances.get("echo"), int):
        return int(instances["echo"])
    return None


def figures(results: dict[str, Any]) -> list[Figure]:
    """The headline figures and ratios of a run, with their (unasserted) targets."""
    out: list[Figure] = []
    closed = phase(results, CLOSED_PHASE) or {}
    rest_closed = phase(results, "echo-rest-closed") or {}
    open_loop = phase(results, OPEN_PHASE) or {}
    seq_rest = phase(results, "echo-rest-seq") or {}
    seq_nats = phase(results, "echo-nats-seq") or {}
    calc = phase(results, "calculator") or {}
    orch = phase(results, "orchestrator") or {}
    celery = results.get("celery") or {}
    ceilings = results.get("ceilings") or {}
    ingest = results.get("ingest") or {}
    live = results.get("live") or {}
    cpu = cpu_per_task(results)

    conc = closed.get("concurrency")
    loom_tp = closed.get("throughput")
    out.append(Figure("loom_echo_throughput", f"Loom echo closed loop c={conc} (NATS)", loom_tp, "tasks/s"))
    for key in ("p50_ms", "p99_ms"):
        out.append(
            Figure(f"loom_echo_closed_{key}", f"  latency {key[:-3]}", _get(closed, "latency", key), "ms")
        )
    out.append(Figure("loom_echo_submit_rate", "  submit rate", closed.get("submit_rate"), "tasks/s"))
    procs = rest_closed.get("client_processes")
    out.append(
        Figure(
            "loom_echo_rest_throughput",
            "Loom echo closed loop (REST ?wait" + (f", {procs} client processes)" if procs else ")"),
            rest_closed.get("throughput"),
            "tasks/s",
        )
    )
    out.append(
        Figure(
            "loom_echo_open_p99",
            f"Loom echo open loop {open_loop.get('target_rate') or '?'}/s p99",
            _get(open_loop, "latency", "p99_ms"),
            "ms",
        )
    )
    for label, data, key in (("REST ?wait", seq_rest, "rest"), ("NATS", seq_nats, "nats")):
        for p in ("p50_ms", "p99_ms"):
            out.append(
                Figure(
                    f"loom_seq_{key}_{p}",
                    f"Loom sequential round trip {label} {p[:-3]}",
                    _get(data, "latency", p),
                    "ms",
                )
            )
    out.append(
        Figure("loom_calc_throughput", "Loom calculator throughput", calc.get("throughput"), "tasks/s")
    )
    out.append(Figure("loom_calc_p50", "  calculator p50", _get(calc, "latency", "p50_ms"), "ms"))
    out.append(Figure("loom_orch_p50", "Loom orchestrator p50", _get(orch, "latency", "p50_ms"), "ms"))
    echo_cpu = cpu.get(CLOSED_PHASE) or {}
    out.append(
        _fig(
            "cpu_per_echo_task",
            "CPU per echo task: the stack's processes (NATS closed loop)",
            echo_cpu.get("system_ms"),
            "ms",
            "" if echo_cpu else "not measured",
        )
    )
    out.append(
        Figure("cpu_per_echo_task_with_client", "  with the harness's client", echo_cpu.get("sum_ms"), "ms")
    )
    # the event store's share (the peers keep no record of a task's steps), and what the rest
    # costs beside taskiq-nats's whole CPU per task
    by_process: dict[str, float] = echo_cpu.get("by_process_ms") or {}
    store_ms = (
        procstat.subtotal(by_process, lambda k: procstat.class_of(k) in EVENT_STORE) if by_process else None
    )
    out.append(Figure("cpu_per_echo_task_event_store", "  of which ingest + PostgreSQL", store_ms, "ms"))
    with_client = echo_cpu.get("sum_ms")
    out.append(
        _fig(
            "ratio_cpu_without_store_taskiq",
            "  CPU/task without them / taskiq-nats's",
            ratio(
                with_client - store_ms if with_client is not None and store_ms is not None else None,
                _get(cpu, "taskiq-closed", "sum_ms"),
            ),
            "×",
        )
    )

    celery_tp = _get(celery, "closed", "throughput")
    celery_conc = _get(celery, "closed", "concurrency") or conc
    out.append(
        Figure(
            "celery_throughput",
            "Celery no-op closed loop" + (f" c={celery_conc}" if celery_conc else ""),
            celery_tp,
            "tasks/s",
            note=_na_reason(celery) if celery_tp is None else "",
        )
    )
    for p in ("p50_ms", "p99_ms"):
        out.append(
            Figure(
                f"celery_seq_{p}",
                f"Celery sequential round trip {p[:-3]}",
                _get(celery, "sequential", "latency", p),
                "ms",
            )
        )

    nats_pub = _get(ceilings, "nats", "publish_async", "rate")
    out.append(
        Figure(
            "raw_nats_publish",
            "raw JetStream publish_async",
            nats_pub,
            "msgs/s",
            note=_na_reason(ceilings.get("nats")) if nats_pub is None else "",
        )
    )
    fetch_rate = _get(ceilings, "nats", "fetch_ack", "rate")
    out.append(Figure("raw_nats_fetch", "raw JetStream pull fetch+ack", fetch_rate, "msgs/s"))
    copy_rate = _get(ceilings, "copy", "rate")
    out.append(
        Figure(
            "raw_copy",
            "raw TimescaleDB COPY",
            copy_rate,
            "rows/s",
            note=_na_reason(ceilings.get("copy")) if copy_rate is None else "",
        )
    )
    copy_events_rate = _get(ceilings, "copy_events", "rate")
    out.append(
        Figure(
            "raw_copy_events",
            "  COPY into a table like events",
            copy_events_rate,
            "rows/s",
            note=_na_reason(ceilings.get("copy_events")) if copy_events_rate is None else "",
        )
    )

    lag: dict[str, Any] = ingest["lag"] if isinstance(ingest.get("lag"), dict) else {}
    ingest_na = _na_reason(ingest) or _na_reason(lag)
    method = str(lag.get("lag_method", ""))
    # the target's load: the NATS closed loop; the whole run's figure beside it
    closed_lag = _get(lag, "by_phase", CLOSED_PHASE) if not ingest_na else None
    for p in ("p50_ms", "p99_ms"):
        value = _get(closed_lag, p) if isinstance(closed_lag, dict) else None
        missing = lag.get("read_na") or "no event of the NATS closed loop"
        note = ingest_na or (method if value is not None else missing)
        out.append(
            _fig(f"ingest_lag_{p}", f"ingest lag event→row {p[:-3]}, NATS closed loop", value, "ms", note)
        )
    for p in ("p50_ms", "p99_ms"):
        value = None if ingest_na else _get(lag, "lag", p)
        label = f"  whole run (every phase but the burst) {p[:-3]}"
        out.append(_fig(f"ingest_lag_all_{p}", label, value, "ms", ingest_na or ""))
    burst: dict[str, Any] = ingest["burst"] if isinstance(ingest.get("burst"), dict) else {}
    ingest_rate = burst.get("sustained_rate") if not burst.get("na") else None
    out.append(
        Figure(
            "ingest_rows_s",
            f"ingest sustained (burst of {burst.get('events', '?')})",
            ingest_rate,
            "rows/s",
            note=(ingest_na or _na_reason(burst)) if ingest_rate is None else str(burst.get("note") or ""),
        )
    )

    live_na = live.get("na") if isinstance(live, dict) else "not measured"
    # the target's load: synthetic events paced at ~1k/s; the open loop's task events beside it
    paced = results.get("live_paced") or {}
    paced_rate = paced.get("target_rate")
    for p in ("p50_ms", "p99_ms"):
        value = None if live_na else _get(live, "paced_latency", p)
        note = live_na or ("" if value is not None else "none of the paced events arrived on the feed")
        if value is not None and paced.get("rate") is not None:
            note = f"sent at {paced['rate']:,.0f}/s"
        label = f"live feed emit→WebSocket {p[:-3]}, {paced_rate or 0:,.0f} events/s"
        out.append(_fig(f"live_{p}", label, value, "ms", note))
    open_live = _get(live, "by_phase", OPEN_PHASE) if not live_na else None
    open_rate = _get(open_loop, "target_rate")
    for p in ("p50_ms", "p99_ms"):
        value = _get(open_live, p) if isinstance(open_live, dict) else None
        note = live_na or ("" if value is not None else "no event of the open loop on the feed")
        label = f"  the open loop's task events ({open_rate or '?'} tasks/s) {p[:-3]}"
        out.append(_fig(f"live_open_{p}", label, value, "ms", note))
    heard = live.get("listened_to") if isinstance(live, dict) else None
    heard_text = " and ".join(heard) if isinstance(heard, list) and heard else "the run"
    for p in ("p50_ms", "p99_ms"):
        value = None if live_na else _get(live, "latency", p)
        label = f"  every task event heard (listening to {heard_text}) {p[:-3]}"
        out.append(_fig(f"live_all_{p}", label, value, "ms", live_na or ""))

    for key, title in PEER_TITLES.items():
        peer_tp = _get(results.get(key) or {}, "closed", "throughput")
        suffix = "" if key == "celery" else f"_{key}"
        label = f"ratio echo closed loop NATS: Loom / {title}"
        note = "" if peer_tp is not None else _na_reason(results.get(key)) or "not measured"
        out.append(_fig(f"ratio_throughput{suffix}", label, ratio(loom_tp, peer_tp), "×", note))
    out.extend(round_figures(results.get("rounds")))

    celery_p50 = _get(celery, "sequential", "latency", "p50_ms")
    for label, data, key in (("NATS", seq_nats, "nats"), ("REST", seq_rest, "rest")):
        value = ratio(_get(data, "latency", "p50_ms"), celery_p50)
        out.append(_fig(f"ratio_p50_{key}", f"ratio sequential p50 {label}: Loom / Celery", value, "×"))
    out.append(
        _fig(
            "ratio_rest_nats",
            "ratio echo closed loop: REST / NATS",
            ratio(rest_closed.get("throughput"), loom_tp),
            "×",
        )
    )
    ingest_ratio = ratio(ingest_rate, copy_rate)
    out.append(
        _fig(
            "ratio_ingest_copy",
            "ratio ingest / raw COPY",
            ingest_ratio,
            "×",
            "" if ingest_ratio is not None else (ingest_na or _na_reason(burst)),
        )
    )
    # beside it, what one nats-py client pulls and acks here on its own: ingest reads every row
    # it writes through JetStream, one message and one ack per event
    out.append(
        _fig(
            "ratio_ingest_fetch",
            "  ingest / raw JetStream pull fetch+ack",
            ratio(ingest_rate, fetch_rate),
            "×",
        )
    )
    # and what the database itself takes of those rows through COPY, into a table like the one
    # ingest writes (its indexes, the write-ahead log) rather than a bare temporary one
    out.append(
        _fig(
            "ratio_ingest_copy_events",
            "  ingest / COPY into a table like events",
            ratio(ingest_rate, copy_events_rate),
            "×",
        )
    )
    # the ceilings the target implies on this machine, whatever ingest does: a consumer reading
    # one message per event cannot beat the raw pull rate, and no writer into a table shaped like
    # events beats COPY into it
    out.append(
        _fig(
            "ratio_fetch_copy",
            "  ceiling: raw JetStream pull fetch+ack / raw COPY",
            ratio(fetch_rate, copy_rate),
            "×",
        )
    )
    out.append(
        _fig(
            "ratio_copy_events_copy",
            "  ceiling: COPY into a table like events / raw COPY",
            ratio(copy_events_rate, copy_rate),
            "×",
        )
    )
    out.extend(io_figures(results))
    return out


def round_figures(rounds: Any) -> list[Figure]:
    """The paired rounds (rounds.py): per peer, the median over the rounds of Loom's closed-loop
    throughput / the peer's, each pair measured seconds apart; the rounds' ratios in the note."""
    if rounds is None:
        return []
    out = []
    incomplete = _get(rounds, "incomplete")
    for key in ("celery", "taskiq"):
        title = PEER_TITLES[key]
        value = _get(rounds, "median_ratio", key, "median")
        ratios = _get(rounds, "median_ratio", key, "ratios")
        if value is not None and isinstance(ratios, list):
            note = "rounds: " + ", ".join(f"{r:.2f}" for r in ratios)
            if incomplete:
                note += f"; {len(incomplete)} loop(s) did not complete every task (results.json)"
        else:
            note = _na_reason(rounds) or "no round finished"
        label = f"  paired rounds, median: Loom / {title}"
        out.append(_fig(f"ratio_rounds_{key}", label, value, "×", note))
    return out


def io_figures(results: dict[str, Any]) -> list[Figure]:
    """The I/O task (sleep 100 ms, 64 in flight) on Loom and Celery: throughput, p50/p99, and the
    ratio to the ideal (concurrency / delay), with a note when the tasks did not wait."""
    io: dict[str, Any] = results.get("io") or {}
    loom_io = phase(results, "io-loom")
    if not io and loom_io is None:
        return []
    delay = float(io.get("delay_s") or _get(loom_io or {}, "extra_params", "delayS") or 0.1)
    conc = int(io.get("concurrency") or (loom_io or {}).get("concurrency") or 64)
    ideal = ideal_rate(conc, delay)
    out: list[Figure] = []
    for key, title, data in (
        ("loom", "Loom echo delayS", loom_io),
        ("celery", "Celery threads pool, sleep", _get(io, "celery", "closed")),
    ):
        data = data if isinstance(data, dict) else {}
        tp = data.get("throughput")
        p50 = _get(data, "latency", "p50_ms")
        verdict = io_verdict(tp, p50, conc, delay)
        missing = "" if data else (_na_reason(io.get(key)) if key == "celery" else "") or "not measured"
        label = f"I/O task {delay * 1000:g} ms c={conc}: {title}"
        out.append(Figure(f"io_{key}_throughput", label, tp, "tasks/s", note=missing))
        for p in ("p50_ms", "p99_ms"):
            out.append(Figure(f"io_{key}_{p}", f"  latency {p[:-3]}", _get(data, "latency", p), "ms"))
        out.append(
            Figure(
                f"io_{key}_ratio_ideal",
                f"  ratio to the ideal {ideal:g} tasks/s" if ideal else "  ratio to the ideal",
                verdict["ratio_to_ideal"],
                "×",
                note=verdict["note"],
            )
        )
    return out


def rich_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"Loom load test — profile {results.get('run', {}).get('profile', '?')}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("note", overflow="fold", max_width=60)
    for fig in figures(results):
        verdict = {True: "[green]✓[/green] ", False: "[red]✗[/red] ", None: ""}[fig.ok]
        table.add_row(fig.label, fig.shown(), f"{verdict}{fig.target}", fig.note)
    return table


def peers_table(results: dict[str, Any]) -> Table:
    table = Table(title="peers: the same no-op workloads (closed loop, sequential round trip)")
    for column, justify in (
        ("system", "left"),
        ("closed loop tasks/s", "right"),
        ("closed p50 ms", "right"),
        ("seq p50 ms", "right"),
        ("seq p99 ms", "right"),
        ("CPU ms/task", "right"),
        ("workers", "right"),
        ("note", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in peers(results):
        table.add_row(
            row["system"],
            _num(row["throughput"], 0),
            _num(row["closed_p50_ms"], 2),
            _num(row["seq_p50_ms"], 2),
            _num(row["seq_p99_ms"], 2),
            _num(row["cpu_ms_per_task"], 2),
            "" if row["workers"] is None else str(row["workers"]),
            row["note"],
        )
    table.caption = "CPU ms/task: client + workers + broker(s) in the closed loop (Loom: stack + client)"
    return table


def _num(value: Any, digits: int) -> str:
    if value is None:
        return NA
    return f"{value:,.{digits}f}"


def _top(by_process_ms: dict[str, float], n: int = 6) -> str:
    items = list(by_process_ms.items())[:n]
    more = len(by_process_ms) - len(items)
    text = "  ".join(f"{k} {v:.2f}" for k, v in items)
    return text + (f"  (+{more})" if more > 0 else "")


def cpu_table(results: dict[str, Any]) -> Table:
    table = Table(title="CPU per task (ms of CPU / tasks completed in the phase)")
    for column, justify in (
        ("phase", "left"),
        ("tasks", "right"),
        ("system", "right"),
        ("client", "right"),
        ("sum", "right"),
        ("all", "right"),
        ("by process (ms/task)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name, row in cpu_per_task(results).items():
        table.add_row(
            name,
            str(row["tasks"]),
            _num(row["system_ms"], 2),
            _num(row["client_ms"], 2),
            _num(row["sum_ms"], 2),
            _num(row["all_ms"], 2),
            _top(row["by_process_ms"]),
        )
    table.caption = (
        "system: Loom's phases the stack's processes, a peer's its workers and broker(s); "
        "client: the harness and its client processes; all: every process measured"
    )
    return table


def _accounting_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(str(p["title"]), p.get("accounting", {})) for p in results.get("phases", [])]
    for key, title in PEER_TITLES.items():
        section = results.get(key) or {}
        for workload, label in (("closed", "closed loop"), ("sequential", "sequential")):
            if isinstance(section.get(workload), dict):
                rows.append((f"{title} {label}", section[workload].get("accounting", {})))
    io_celery = _get(results, "io", "celery", "closed")
    if isinstance(io_celery, dict):
        rows.append(("Celery I/O task", io_celery.get("accounting", {})))
    return rows


def accounting_table(results: dict[str, Any]) -> Table:
    table = Table(title="every task accounted for")
    columns = ("completed", "failed", "dead", "cancelled", "rejected", "missing", "total")
    table.add_column("phase")
    for column in columns:
        table.add_column(column, justify="right")
    for title, acc in _accounting_rows(results):
        table.add_row(title, *(str(acc.get(c, 0)) for c in columns))
    return table


# -- HTML --------------------------------------------------------------------------------------

_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#000000",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
)


def svg_chart(
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    x_label: str,
    y_label: str,
    x_log: bool = False,
    width: int = 860,
    height: int = 360,
    y_max: float | None = None,
) -> str:
    """A line chart as an inline ``<svg>``: one polyline per series, axes with ticks, a legend."""
    pts = {
        name: [(float(x), float(y)) for x, y in data if not x_log or x > 0] for name, data in series.items()
    }
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        return '<p class="na">no data</p>'
    left, right, top, bottom = 64, 250, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    if x_log:
        x_lo, x_hi = 10.0 ** math.floor(math.log10(min(xs))), 10.0 ** math.ceil(math.log10(max(xs)))
        if x_hi == x_lo:
            x_hi = x_lo * 10
        x_ticks = [10.0**e for e in range(round(math.log10(x_lo)), round(math.log10(x_hi)) + 1)]
    else:
        x_ticks = nice_ticks(min(0.0, min(xs)), max(xs))
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_ticks = nice_ticks(0.0, y_max if y_max is not None else max(ys))
    y_hi = y_ticks[-1]

    def sx(x: float) -> float:
        if x_log:
            return left + (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo)) * plot_w
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (min(y, y_hi) / y_hi) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>',
    ]
    for t in x_ticks:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{_fmt_tick(t)}</text>')
    for value in y_ticks:
        y = sy(value)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(value)}</text>')
    mid_x = left + plot_w / 2
    parts.append(f'<text x="{mid_x:.0f}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{html.escape(y_label)}</text>'
    )
    for i, (name, data) in enumerate(pts.items()):
        color = _COLORS[i % len(_COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>')
        ly = top + 12 + i * 16
        lx = left + plot_w + 10
        parts.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 18}" y2="{ly - 4}" stroke="{color}" stroke-width="3"/>'
        )
        parts.append(f'<text x="{lx + 22}" y="{ly}">{html.escape(name[:38])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` evenly spaced round ticks (steps of 1, 2 or 5 × 10^k) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = [start]
    while ticks[-1] < hi - 1e-9 * step:
        ticks.append(ticks[-1] + step)
    return [round(t, 10) for t in ticks]


def _fmt_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _cdf_series(results: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for p in results.get("phases", []):
        if p.get("cdf"):
            series[p["title"]] = [(x, y * 100) for x, y in p["cdf"]]
    for peer, name in PEER_TITLES.items():
        for key, title in (("closed", f"{name} closed loop"), ("sequential", f"{name} sequential")):
            cdf = _get(results.get(peer) or {}, key, "cdf")
            if cdf:
                series[title] = [(x, y * 100) for x, y in cdf]
    io_cdf = _get(results, "io", "celery", "closed", "cdf")
    if io_cdf:
        series["Celery I/O task"] = [(x, y * 100) for x, y in io_cdf]
    live = results.get("live") or {}
    if live.get("paced_cdf"):
        series["live feed (WS)"] = [(x, y * 100) for x, y in live["paced_cdf"]]
    lag = _get(results, "ingest", "lag", "cdf")
    if lag:
        series["ingest lag"] = [(x, y * 100) for x, y in lag]
    return series


def _timeline_series(results: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for p in results.get("phases", []):
        if p.get("timeline") and p.get("mode") != "sequential":
            series[p["title"]] = p["timeline"]
    for peer, name in PEER_TITLES.items():
        timeline = _get(results.get(peer) or {}, "closed", "timeline")
        if timeline:
            series[f"{name} closed loop"] = timeline
    return series


def render_html(results: dict[str, Any]) -> str:
    run = results.get("run", {})
    title = f"Loom load test {run.get('id', '')} ({run.get('profile', '?')})"
    sections = [f"<h1>{html.escape(title)}</h1>"]
    sections.append(
        "<p>"
        + html.escape(
            f"started {run.get('started_at', '?')}, {run.get('duration_s', '?')} s, "
            f"{run.get('cpus', '?')} CPUs, Python {run.get('python', '?')}"
        )
        + "</p>"
    )
    figs = figures(results)
    sections.append("<h2>Figures</h2>")
    sections.append(
        _table(
            ("figure", "value", "target", "met", "note"),
            [
                (f.label.strip(), f.shown(), f.target, {True: "yes", False: "no", None: ""}[f.ok], f.note)
                for f in figs
            ],
        )
    )
    sections.append("<h2>Peers</h2>")
    sections.append(
        "<p>The same no-op workloads on every system: the closed loop at the echo phase's "
        "concurrency and the sequential round trip. CPU ms/task: client + workers + broker(s) in "
        "the closed loop (Loom: the stack's processes + the harness).</p>"
    )
    sections.append(
        _table(
            (
                "system",
                "closed loop tasks/s",
                "closed p50 ms",
                "seq p50 ms",
                "seq p99 ms",
                "CPU ms/task",
                "workers",
                "note",
            ),
            [
                (
                    r["system"],
                    r["throughput"],
                    r["closed_p50_ms"],
                    r["seq_p50_ms"],
                    r["seq_p99_ms"],
                    r["cpu_ms_per_task"],
                    r["workers"],
                    r["note"],
                )
                for r in peers(results)
            ],
        )
    )
    sections.append("<h2>CPU per task (ms of CPU / tasks completed in the phase)</h2>")
    sections.append(_cpu_html(results))
    sections.append("<h2>Latency CDF</h2>")
    sections.append(
        svg_chart(
            _cdf_series(results),
            x_label="latency (ms, log scale)",
            y_label="% of tasks ≤",
            x_log=True,
            y_max=100,
        )
    )
    sections.append("<h2>Completed tasks per second over time</h2>")
    sections.append(
        svg_chart(_timeline_series(results), x_label="seconds since phase start", y_label="tasks/s")
    )

    rows = []
    for p in results.get("phases", []):
        lat = p.get("latency", {})
        rows.append(
            (
                p["title"],
                p.get("mode"),
                p.get("concurrency") or p.get("target_rate"),
                p.get("submitted"),
                p.get("submit_rate"),
                p.get("throughput"),
                lat.get("p50_ms"),
                lat.get("p95_ms"),
                lat.get("p99_ms"),
                lat.get("max_ms"),
                p.get("events_per_task"),
                p.get("harness_cpu_pct"),
            )
        )
    sections.append("<h2>Loom phases</h2>")
    sections.append(
        _table(
            (
                "phase",
                "mode",
                "conc./rate",
                "tasks",
                "submit/s",
                "completed/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "events/task",
                "harness CPU %",
            ),
            rows,
        )
    )
    acc_cols = ("completed", "failed", "dead", "cancelled", "rejected", "missing", "total")
    acc_rows = [(title, *(acc.get(c, 0) for c in acc_cols)) for title, acc in _accounting_rows(results)]
    sections.append("<h2>Accounting (every submitted task)</h2>")
    sections.append(_table(("phase", *acc_cols), acc_rows))
    hop_rows = []
    for p in results.get("phases", []):
        for hop, s in (p.get("hops") or {}).items():
            hop_rows.append(
                (
                    p["title"],
                    hop,
                    s.get("count"),
                    s.get("p50_ms"),
                    s.get("p95_ms"),
                    s.get("p99_ms"),
                    s.get("max_ms"),
                )
            )
    sections.append("<h2>Per-hop latency</h2>")
    sections.append(
        "<p>submitted / assigned: the dispatcher's CloudEvents; running / done: the worker's status "
        "reports; final: the dispatcher's terminal announcement; client: receipt by the harness.</p>"
    )
    sections.append(_table(("phase", "hop", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"), hop_rows))
    for peer, name in PEER_TITLES.items():
        if results.get(peer):
            sections.append(f"<h2>{html.escape(name)}</h2>")
            sections.append(f"<pre>{html.escape(json.dumps(_strip(results[peer]), indent=2))}</pre>")
    if results.get("io"):
        sections.append("<h2>I/O task</h2>")
        sections.append(f"<pre>{html.escape(json.dumps(_strip(results['io']), indent=2))}</pre>")
    for key, heading in (
        ("ceilings", "Raw ceilings"),
        ("ingest", "Ingest"),
        ("live", "Live feed"),
        ("cpu", "CPU by process (% of one core)"),
    ):
        if results.get(key) is not None:
            sections.append(f"<h2>{heading}</h2>")
            sections.append(f"<pre>{html.escape(json.dumps(_strip(results[key]), indent=2))}</pre>")
    sections.append("<h2>Run</h2>")
    sections.append(f"<pre>{html.escape(json.dumps(run, indent=2))}</pre>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}.na{color:#888}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )


def _cpu_html(results: dict[str, Any]) -> str:
    """Phases as rows, processes (grouped by kind: agent workers summed) as columns."""
    rows = cpu_per_task(results)
    grouped: dict[str, dict[str, float]] = {}
    for name, row in rows.items():
        by: dict[str, float] = {}
        for key, ms in row["by_process_ms"].items():
            kind = procstat.class_of(key)
            by[kind] = by.get(kind, 0.0) + ms
        grouped[name] = by
    kinds = sorted(
        {k for by in grouped.values() for k in by}, key=lambda k: -sum(b.get(k, 0) for b in grouped.values())
    )
    headers = ("phase", "tasks", "system", "client", "sum", "all", *kinds)
    body = [
        (
            name,
            row["tasks"],
            row["system_ms"],
            row["client_ms"],
            row["sum_ms"],
            row["all_ms"],
            *(round(grouped[name][k], 3) if k in grouped[name] else "" for k in kinds),
        )
        for name, row in rows.items()
    ]
    note = (
        "<p>system: for Loom's phases the stack's processes (services, its NATS and Redis, "
        "PostgreSQL), for a peer's its workers and broker(s); client: the harness and its client "
        "processes; all: every process measured, other work on the machine included. Per-process "
        "figures by pid are in results.json (<code>cpu_per_task</code>).</p>"
    )
    return note + _table(headers, body)


def _strip(data: Any) -> Any:
    """The data without the bulky series (cdf, timeline, samples) for display."""
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in ("cdf", "timeline", "samples")}
    if isinstance(data, list):
        return [_strip(v) for v in data]
    return data


def write_reports(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``results.json`` (with the figures) and ``report.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        **results,
        "figures": [f.to_dict() for f in figures(results)],
        "peers": peers(results),
        "cpu_per_task": cpu_per_task(results),
    }
    json_path = folder / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    html_path = folder / "report.html"
    html_path.write_text(render_html(results))
    return json_path, html_path
