"""``python -m loom_load``: run the load test against a running stack and write the reports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats
import typer
from nats.errors import NoServersError
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from . import celery_bench, faststream_peer, floor, io_bench, procstat, rounds, search, taskiq_bench
from .ceilings import copy_ceiling, copy_events_ceiling, nats_ceilings
from .client_procs import client_prefix, run_spread
from .ingest import LagTracker, ingest_burst, probe_events_table
from .live import LiveFeed, paced_events, paced_source
from .loom import LoomClient, PhaseRun, PhaseSpec, rest_session, run_phase, summarize
from .observe import Observer
from .pyspy import Sampler
from .reply_bench import run_reply_peer
from .report import accounting_table, cpu_table, peers_table, rich_table, write_reports
from .settings import PROFILES, Profile, Targets, auth_headers, resolve_api_key, resolve_targets

log = logging.getLogger("loom_load")
console = Console(width=None if Console().is_terminal else 130)
app = typer.Typer(add_completion=False, help=__doc__)

STEPS = (
    "ceilings",
    "sequential",
    "closed",
    "rest",
    "open",
    "calculator",
    "orchestrator",
    "ingest",
    "live",
    "celery",
    "taskiq",
    "faststream",
    "floor",
    "rounds",
    "io",
    "search",
)
PEERS = ("taskiq", "faststream", "floor")
SPREAD_PHASES = frozenset({"echo-rest-closed"})  # run over --client-procs client processes
QUIET_PHASES = frozenset({"echo-rest-seq", "echo-nats-seq", "echo-nats-closed", "echo-rest-closed"})
"""The phases whose figures compare with a peer's client: the harness hears only their final
statuses, as a client waiting for its tasks does (a peer's client hears nothing else either).
Hearing every report, event and assignment as well took the harness about as much CPU again as
its own submissions and outcomes in the closed loops (0.9-1.4 against 0.5-0.6 ms per echo task,
on the 2 cores the stack runs on), and in a sequential round trip the harness handled the task's
reports and events in the event loop that was to read its final status. Their per-hop figures
come from :data:`HOPS_PHASE` and their events' ingest lag from the table (commit time − event
time of every event row of their tasks)."""
HOPS_PHASE = "echo-nats-seq-hops"
"""Sequential round trips over NATS with every message heard: the per-hop figures."""
LIVE_PHASES = frozenset({"echo-nats-open"})
"""The phases the live feed's client listens to (besides its own paced events, the figure's):
elsewhere, a WebSocket client reading every event, and the query service fanning them out to
it, would take CPU from the stack on the same cores (about 10% of the echo closed loop's
throughput on 2 cores; half the ingest burst's CPU)."""


def loom_phases(profile: Profile) -> list[tuple[str, PhaseSpec]]:
    """(step, phase) in the order they run."""
    p = profile
    return [
        (
            "sequential",
            PhaseSpec(
                "echo-rest-seq", "echo sequential REST ?wait", "echo", "rest", "closed", p.sequential_count
            ),
        ),
        (
            "sequential",
            PhaseSpec("echo-nats-seq", "echo sequential NATS", "echo", "nats", "closed", p.sequential_count),
        ),
        (
            "sequential",
            PhaseSpec(
                HOPS_PHASE,
                "echo sequential NATS, every hop heard",
                "echo",
                "nats",
                "closed",
                p.sequential_count,
            ),
        ),
        (
            "closed",
            PhaseSpec(
                "echo-nats-closed",
                f"echo closed loop NATS c={p.echo_closed_concurrency}",
                "echo",
                "nats",
                "closed",
                p.echo_closed_count,
                p.echo_closed_concurrency,
            ),
        ),
        (
            "rest",
            PhaseSpec(
                "echo-rest-closed",
                f"echo closed loop REST c={p.echo_closed_concurrency}",
                "echo",
                "rest",
                "closed",
                p.echo_rest_count,
                p.echo_closed_concurrency,
            ),
        ),
        (
            "open",
            open_loop_spec(p.echo_open_rate, p.echo_open_seconds),
        ),
        (
            "calculator",
            PhaseSpec(
                "calculator",
                f"calculator closed loop NATS c={p.calculator_concurrency}",
                "calculator",
                "nats",
                "closed",
                p.calculator_count,
                p.calculator_concurrency,
            ),
        ),
        (
            "orchestrator",
            PhaseSpec(
                "orchestrator",
                f"orchestrator closed loop NATS c={p.orchestrator_concurrency}",
                "orchestrator",
                "nats",
                "closed",
                p.orchestrator_count,
                p.orchestrator_concurrency,
            ),
        ),
        (
            "io",
            PhaseSpec(
                "io-loom",
                f"echo delayS={p.io_delay_s:g} NATS c={p.io_concurrency} (I/O task)",
                "echo",
                "nats",
                "closed",
                p.io_count,
                p.io_concurrency,
                extra_params={"delayS": p.io_delay_s},
            ),
        ),
    ]


def open_loop_spec(rate: float, seconds: float) -> PhaseSpec:
    count = max(1, math.ceil(rate * seconds))
    return PhaseSpec(
        "echo-nats-open", f"echo open loop NATS {rate:g}/s", "echo", "nats", "open", count, rate=rate
    )


def open_rate(profile_max: float, closed_throughput: float | None, forced: float | None) -> float:
    """The open loop's rate: as forced, else half the closed loop's throughput (a load the stack
    sustains, so the latency measured is not that of an ever-growing queue), at most the
    profile's rate, rounded to 2 significant digits."""
    if forced is not None:
        return forced
    if not closed_throughput:
        return profile_max
    rate = min(profile_max, 0.5 * closed_throughput)
    return float(f"{max(rate, 1.0):.2g}")


def repo_root() -> Path:
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return here


def _steps(only: str | None, skip: str | None) -> set[str]:
    chosen = set(STEPS) if not only else {s.strip() for s in only.split(",") if s.strip()}
    chosen -= {s.strip() for s in (skip or "").split(",") if s.strip()}
    unknown = chosen - set(STEPS)
    if unknown:
        raise typer.BadParameter(f"unknown step(s) {sorted(unknown)}; known: {', '.join(STEPS)}")
    return chosen


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    columns = (
        TextColumn("[bold]{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:

        def bar(title: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(title, total=total, rate="")
            started = time.perf_counter()

            def update(done: int) -> None:
                elapsed = time.perf_counter() - started
                shown = f"{done / elapsed:,.0f}/s" if elapsed > 0.2 else ""
                progress.update(task, completed=done, rate=shown)

            return update

        yield bar


class KeyRefused(Exception):
    """A service refused the harness's API key (401), or the key lacks a scope the run needs (403)."""


def query_http_url(query_ws_url: str) -> str:
    """The query service's HTTP base URL, from its live feed's WebSocket URL."""
    parts = urlsplit(query_ws_url)
    return urlunsplit(parts._replace(scheme="https" if parts.scheme == "wss" else "http", path="", query=""))


async def key_refusal(
    targets: Targets,
    api_key: str | None,
    *,
    live: bool,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str | None:
    """Why the services would refuse this run's requests for its API key, or None.

    Asks, with the key, what the run needs: the dispatcher to read a task and to take a submission
    (an empty body: 422 once the key passes, nothing is submitted), the registry its agents and,
    for the live feed, the query service to read. A request that gets no answer is not judged here.
    """
    probes: list[tuple[str, str, str, str, Any]] = [
        ("dispatcher", targets.dispatcher_url, "GET", "/api/tasks/loom-load-key-check", None),
        ("dispatcher", targets.dispatcher_url, "POST", "/api/tasks", {}),
        ("registry", targets.registry_url, "GET", "/api/agents", None),
    ]
    if live:
        probes.append(("query", query_http_url(targets.query_ws_url), "GET", "/api/tasks?limit=1", None))
    async with httpx.AsyncClient(headers=auth_headers(api_key), timeout=5, transport=transport) as client:
        for service, base, method, path, body in probes:
            try:
                response = await client.request(method, base.rstrip("/") + path, json=body)
            except httpx.HTTPError:
                continue
            if response.status_code not in (401, 403):
                continue
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {}
            said = error.get("message") or response.reason_phrase
            where = f"{service} at {base} ({method} {path.split('?')[0]})"
            if response.status_code == 403:
                scope = error.get("scope", "?")
                return (
                    f"{where}: HTTP 403 {said}. The API key lacks the '{scope}' scope; the load test "
                    "needs read and submit (LOOM_API_KEY, environment or .env)"
                )
            if api_key is None:
                return (
                    f"{where}: HTTP 401 {said}. The services require API keys: set LOOM_API_KEY "
                    "(environment or the repository's .env) to a key with the read and submit scopes"
                )
            return f"{where}: HTTP 401 {said}. Set LOOM_API_KEY (environment or .env) to a valid key"
    return None


async def preflight(targets: Targets, http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        response = await http.get("/readyz", timeout=5)
        out["dispatcher_ready"] = response.status_code == 200
    except httpx.HTTPError as exc:
        out["dispatcher_ready"] = False
        out["dispatcher_error"] = f"{type(exc).__name__}: {exc}"
    try:
        async with httpx.AsyncClient(base_url=targets.registry_url, timeout=5, headers=headers) as registry:
            agents = (await registry.get("/api/agents")).json().get("agents", [])
        out["instances"] = {a.get("agentId"): len(a.get("instances", [])) for a in agents}
    except (httpx.HTTPError, ValueError) as exc:
        out["registry_error"] = f"{type(exc).__name__}: {exc}"
    return out


async def run(
    targets: Targets,
    profile: Profile,
    steps: set[str],
    out_dir: Path,
    py_spy: str | None,
    max_seconds: float,
    forced_open_rate: float | None = None,
    api_key: str | None = None,
    client_procs: int = 1,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    headers = auth_headers(api_key)  # on every HTTP and WebSocket call to the stack
    prefix = f"lt{run_id}-"
    burst_source = f"/tests/load/{run_id}"
    started = time.perf_counter()
    results: dict[str, Any] = {
        "run": {
            "id": run_id,
            "task_id_prefix": prefix,
            "profile": profile.name,
            "profile_settings": profile.to_dict(),
            "steps": sorted(steps),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "targets": targets.redacted(),
            "api_key": "sent (LOOM_API_KEY)" if api_key else "none",
            "client_procs": client_procs,
            "broker_pids": broker_pids(targets),
        },
        "phases": [],
        "cpu": {},
        "cpu_s": {},
    }

    def over_budget() -> bool:
        return time.perf_counter() - started > max_seconds

    async def nats_error(exc: Exception) -> None:
        log.warning("NATS: %r", exc)

    nc = await nats.connect(
        targets.nats_servers,
        name=f"loom-load-{run_id}",
        connect_timeout=3,
        max_reconnect_attempts=5,
        error_cb=nats_error,
    )
    js = nc.jetstream(publish_async_max_pending=4000)
    http = httpx.AsyncClient(
        base_url=targets.dispatcher_url,
        headers=headers,
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
    )
    try:
        with progress_bars() as bar:
            results["preflight"] = pre = await preflight(targets, http, headers)
            loom_steps = steps & {
                "sequential",
                "closed",
                "rest",
                "open",
                "calculator",
                "orchestrator",
                "ingest",
                "live",
                "io",
            }
            if loom_steps and not pre.get("dispatcher_ready"):
                console.print(
                    f"[red]dispatcher not ready at {targets.dispatcher_url}: skipping Loom phases[/red]"
                )
                results["loom_skipped"] = pre.get("dispatcher_error") or "dispatcher not ready"
                loom_steps = set()
            if loom_steps:  # fail fast: a refused key would fail every task of every phase
                refusal = await key_refusal(targets, api_key, live="live" in loom_steps)
                if refusal is not None:
                    raise KeyRefused(refusal)

            if "ceilings" in steps:
                results["ceilings"] = await _ceilings(js, targets, profile)

            if "search" in steps:
                results["search"] = await _search(targets, profile, out_dir, api_key)

            if loom_steps:
                await _loom(
                    results,
                    loom_steps,
                    nc,
                    js,
                    http,
                    targets,
                    profile,
                    prefix,
                    burst_source,
                    out_dir,
                    py_spy,
                    forced_open_rate,
                    bar,
                    over_budget,
                    headers,
                    client_procs,
                )

            if "celery" in steps and not over_budget():
                try:
                    results["celery"] = await asyncio.to_thread(
                        celery_bench.run_celery,
                        targets.celery_url,
                        profile.echo_closed_concurrency,
                        os.cpu_count() or 1,
                        profile.celery_count,
                        profile.celery_sequential_count,
                        profile.phase_timeout_s,
                        out_dir,
                        bar,
                    )
                except Exception as exc:  # noqa: BLE001 -- the baseline failing must not lose the run
                    log.exception("celery baseline failed")
                    results["celery"] = {"na": f"celery baseline failed: {type(exc).__name__}: {exc}"}
                _peer_cpu(results, "celery")

            for peer in PEERS:
                if peer in steps and not over_budget():
                    results[peer] = await _peer(peer, targets, profile, out_dir, bar)
                    _peer_cpu(results, peer)
                    console.print(peer_line(peer, results[peer]))

            if "rounds" in steps and not over_budget() and pre.get("dispatcher_ready"):
                with console.status(
                    f"paired rounds: Loom, Celery and taskiq-nats closed loops ×{profile.rounds}"
                ):
                    try:
                        results["rounds"] = await rounds.paired_rounds(
                            nc,
                            js,
                            prefix=f"{prefix}rounds-",
                            nats_servers=targets.nats_servers,
                            redis_url=targets.celery_url,
                            rounds=profile.rounds,
                            count=profile.celery_count,
                            concurrency=profile.echo_closed_concurrency,
                            workers=os.cpu_count() or 1,
                            timeout_s=profile.phase_timeout_s,
                            log_dir=out_dir,
                        )
                    except Exception as exc:  # noqa: BLE001 -- a failing step must not lose the run
                        log.exception("paired rounds failed")
                        results["rounds"] = {"na": f"paired rounds failed: {type(exc).__name__}: {exc}"}

            if "io" in steps and not over_budget():
                celery_io = await _celery_io(targets, profile, out_dir, bar)
                for window in (celery_io.pop("cpu", None) or {}).values():
                    record_cpu(results, "io-celery", window)
                results["io"] = {
                    "delay_s": profile.io_delay_s,
                    "concurrency": profile.io_concurrency,
                    "count": profile.io_count,
                    "loom_phase": "io-loom",
                    "celery": celery_io,
                }
    finally:
        await http.aclose()
        await nc.close()
    results["run"]["duration_s"] = round(time.perf_counter() - started, 1)
    results["run"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def broker_pids(targets: Targets) -> dict[str, list[int]]:
    """The pids of the stack's NATS servers and Redis (listening on the targets' ports): the
    brokers whose CPU the figures count, not the copies tests elsewhere on the machine run."""
    out: dict[str, list[int]] = {"nats-server": [], "redis-server": []}
    ports = [("nats-server", urlsplit(u).port or 4222) for u in targets.nats_servers]
    ports.append(("redis-server", urlsplit(targets.celery_url).port or 6379))
    for name, port in ports:
        pid = procstat.pid_listening_on(port)
        if pid is not None and pid not in out[name]:
            out[name].append(pid)
    return out


def record_cpu(results: dict[str, Any], phase: str, window: dict[str, Any]) -> None:
    """A phase's CPU window: raw (``cpu_s``) and as percent of one core (``cpu``)."""
    results["cpu_s"][phase] = window
    results["cpu"][phase] = procstat.percent_of(window)


def _peer_cpu(results: dict[str, Any], peer: str) -> None:
    """Move a peer's CPU windows (``closed``, ``sequential``) into the run's per-phase CPU."""
    section = results.get(peer)
    if not isinstance(section, dict):
        return
    names = {"closed": f"{peer}-closed", "sequential": f"{peer}-seq"}
    for workload, window in (section.pop("cpu", None) or {}).items():
        if workload in names:
            record_cpu(results, names[workload], window)


async def _peer(
    peer: str,
    targets: Targets,
    profile: Profile,
    out_dir: Path,
    bar: Callable[[str, int], Callable[[int], None]],
) -> dict[str, Any]:
    """One peer's workloads (the Celery baseline's), its failure recorded rather than raised."""
    workers = os.cpu_count() or 1
    common = (profile.celery_count, profile.celery_sequential_count, profile.phase_timeout_s, out_dir, bar)
    try:
        if peer == "taskiq":
            return await taskiq_bench.run_taskiq(
                targets.nats_servers, targets.celery_url, profile.echo_closed_concurrency, workers, *common
            )
        commands, title, packages = {
            "faststream": (faststream_peer.worker_commands, "FastStream", ("faststream", "nats-py")),
            "floor": (floor.worker_commands, "nats-py floor", ("nats-py",)),
        }[peer]
        return await run_reply_peer(
            peer,
            title,
            commands,
            targets.nats_servers,
            profile.echo_closed_concurrency,
            workers,
            *common,
            packages=packages,
        )
    except Exception as exc:  # noqa: BLE001 -- a peer failing must not lose the run
        log.exception("%s peer failed", peer)
        return {"na": f"{peer} failed: {type(exc).__name__}: {exc}"}


async def _celery_io(
    targets: Targets, profile: Profile, out_dir: Path, bar: Callable[[str, int], Callable[[int], None]]
) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(
            io_bench.run_celery_io,
            targets.celery_url,
            profile.io_count,
            profile.io_concurrency,
            profile.io_delay_s,
            profile.phase_timeout_s,
            out_dir,
            bar,
        )
    except Exception as exc:  # noqa: BLE001
        log.exception("celery I/O task failed")
        return {"na": f"celery I/O task failed: {type(exc).__name__}: {exc}"}


def peer_line(peer: str, section: dict[str, Any]) -> str:
    if "na" in section:
        return f"[bold]{peer}[/bold]: [red]{section['na']}[/red]"
    closed, seq = section.get("closed") or {}, section.get("sequential") or {}
    acc = closed.get("accounting", {})
    lost = acc.get("total", 0) - acc.get("completed", 0)
    return (
        f"[bold]{peer}[/bold]: closed loop {closed.get('throughput') or 0:,.1f} completed/s, "
        f"p50 {_get_ms(closed, 'p50_ms')} ms; sequential p50 {_get_ms(seq, 'p50_ms')} ms, "
        f"p99 {_get_ms(seq, 'p99_ms')} ms" + (f", [red]{lost} not completed[/red]" if lost else "")
    )


def _get_ms(data: dict[str, Any], key: str) -> Any:
    return (data.get("latency") or {}).get(key)


def phase_line(summary: dict[str, Any]) -> str:
    lat = summary.get("latency", {})
    acc = summary.get("accounting", {})
    lost = acc.get("total", 0) - acc.get("completed", 0)
    return (
        f"[bold]{summary['title']}[/bold]: {summary.get('throughput') or 0:,.1f} completed/s, "
        f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, "
        f"{acc.get('completed', 0)}/{acc.get('total', 0)} completed"
        + (f", [red]{lost} not completed[/red]" if lost else "")
    )


async def _search(targets: Targets, profile: Profile, out_dir: Path, api_key: str | None) -> dict[str, Any]:
    """GET /api/tasks and /api/sessions/{id} on a scratch database (no running stack needed but
    TimescaleDB and NATS); its own time budget."""
    size = search.SIZES.get(profile.name, search.SIZES["short"])
    with console.status(f"task search: {size.tasks:,} tasks in a scratch database, then the scenarios"):
        try:
            return await search.run_search_bench(
                targets.database_url,
                targets.nats_url,
                search.repo_root(),
                n_tasks=size.tasks,
                requests=size.requests,
                max_seconds=size.max_seconds,
                log=out_dir / "search-query.log",
                api_key=api_key,
            )
        except Exception as exc:  # noqa: BLE001 -- a failed benchmark must not lose the run
            log.exception("task search benchmark failed")
            return {"na": f"task search benchmark failed: {type(exc).__name__}: {exc}"}


async def _ceilings(js: Any, targets: Targets, profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with console.status("raw ceilings: JetStream publish_async and fetch+ack"):
        try:
            out["nats"] = await nats_ceilings(js, profile.ceiling_seconds)
        except Exception as exc:  # noqa: BLE001
            out["nats"] = {"na": f"{type(exc).__name__}: {exc}"}
    with console.status("raw ceilings: TimescaleDB COPY"):
        try:
            out["copy"] = await copy_ceiling(targets.database_url, profile.ceiling_seconds)
        except Exception as exc:  # noqa: BLE001
            out["copy"] = {"na": f"{type(exc).__name__}: {exc}"}
    with console.status("raw ceilings: COPY into a table like events"):
        try:
            out["copy_events"] = await copy_events_ceiling(targets.database_url, profile.ceiling_seconds)
        except Exception as exc:  # noqa: BLE001
            out["copy_events"] = {"na": f"{type(exc).__name__}: {exc}"}
    return out


async def _loom(
    results: dict[str, Any],
    steps: set[str],
    nc: Any,
    js: Any,
    http: httpx.AsyncClient,
    targets: Targets,
    profile: Profile,
    prefix: str,
    burst_source: str,
    out_dir: Path,
    py_spy: str | None,
    forced_open_rate: float | None,
    bar: Callable[[str, int], Callable[[int], None]],
    over_budget: Callable[[], bool],
    headers: dict[str, str],
    client_procs: int = 1,
) -> None:
    observer = Observer(prefix, burst_source)
    await observer.start(nc)
    rest = rest_session(targets.dispatcher_url, headers)
    client = LoomClient(js=js, http=http, observer=observer, prefix=prefix, rest=rest)

    columns, why_not = await probe_events_table(targets.database_url)
    live: LiveFeed | None = None
    if "live" in steps:
        live = LiveFeed(targets.query_ws_url, prefix, burst_source, headers)
    tracker: LagTracker | None = None
    if columns is not None:
        tracker = LagTracker(targets.database_url, columns)
        tracker.sources_excluded.update((burst_source, paced_source(burst_source)))
        observer.sinks.append(tracker.add)
        tracker.start()
    results["ingest"] = {"table_columns": sorted(columns)} if columns else {"na": why_not}

    try:
        # warm-up: connections, the dispatcher's and workers' first-call paths (not measured)
        warm = PhaseSpec("warmup", "warm-up", "echo", "nats", "closed", 20, 4)
        await run_phase(warm, client, phase_timeout_s=30, grace_s=10, progress=None)
        warm_rest = PhaseSpec("warmup-rest", "warm-up REST", "echo", "rest", "closed", 20, 4)
        await run_phase(warm_rest, client, phase_timeout_s=30, grace_s=10, progress=None)

        for step, spec in loom_phases(profile):
            if step not in steps:
                continue
            if spec.name == "echo-nats-open":
                closed = next((p for p in results["phases"] if p["name"] == "echo-nats-closed"), None)
                rate = open_rate(
                    profile.echo_open_rate, closed and closed.get("throughput"), forced_open_rate
                )
                spec = open_loop_spec(rate, profile.echo_open_seconds)
            if over_budget():
                console.print(f"[yellow]time budget spent: skipping {spec.title}[/yellow]")
                continue
            sampler = None
            if py_spy and spec.name == "echo-nats-closed":
                ports = {"dispatcher": targets.dispatcher_url, "registry": targets.registry_url}
                port = urlsplit(ports[py_spy]).port if py_spy in ports else None
                sampler = Sampler(py_spy, out_dir, port=port)
                sampler.start()
            if live is not None and spec.name in LIVE_PHASES:
                await live.start(during=spec.title)
            quiet = spec.name in QUIET_PHASES
            if quiet:
                await observer.hush()
            started = time.time()
            spread = client_procs > 1 and spec.name in SPREAD_PHASES
            try:
                if spread:
                    title, count = f"{spec.title} ({client_procs} clients)", spec.count
                    summary, window = await run_spread(
                        spec,
                        client_procs,
                        nats_servers=targets.nats_servers,
                        dispatcher_url=targets.dispatcher_url,
                        headers=headers,
                        prefix=prefix,
                        phase_timeout_s=profile.phase_timeout_s,
                        grace_s=profile.grace_s,
                        traces=observer.traces,
                        progress=functools.partial(bar, title, count),
                    )
                else:
                    cpu_window = procstat.Window()
                    run = PhaseRun(spec, client, bar(spec.title, spec.count))
                    part = await run.run_part(profile.phase_timeout_s, profile.grace_s)
                    # closed before the summary: its histograms are the harness's bookkeeping,
                    # not the phase's work (in a sequential phase they cost more than the phase)
                    window = cpu_window.close(int(part.accounting["completed"]))
                    summary = summarize(spec, [part], observer.traces)
            finally:
                if quiet:
                    if tracker is not None:  # before listening again: its stragglers are read too
                        procs = range(client_procs) if spread else range(0)
                        prefixes = [
                            f"{prefix}{spec.name}-",
                            *(f"{client_prefix(prefix, k)}{spec.name}-" for k in procs),
                        ]
                        tracker.read_after(spec.name, prefixes, started - 1.0, time.time() + profile.grace_s)
                    await observer.listen()
                if sampler is not None:
                    results["py_spy"] = sampler.stop()
                if live is not None and spec.name in LIVE_PHASES:
                    # the phase's tail, on its way: as many of its events as the harness heard
                    expected = functools.partial(observer.events_by_phase.__getitem__, spec.name)
                    await live.phase_heard(spec.name, expected, timeout_s=2.0)
                    await live.stop()
            record_cpu(results, spec.name, window)
            if quiet:  # not heard: their rows are counted in ingest.lag.rows_read_by_phase
                summary["events_per_task"] = None
                summary["heard"] = "final statuses only"
            results["phases"].append(summary)
            console.print(phase_line(summary))

        if live is not None and not over_budget():
            rate = profile.live_event_rate
            await live.start(during=f"{rate:,.0f} synthetic events/s")
            with console.status(f"live feed: {rate:,.0f} synthetic events/s for {profile.live_seconds:g} s"):
                cpu_window = procstat.Window()
                paced = await paced_events(nc, live.paced_source, rate, profile.live_seconds)
                record_cpu(results, "live-paced", cpu_window.close(paced["events"]))
                results["live_paced"] = paced
                await live.paced_heard(paced["events"], timeout_s=2.0)  # the tail, on its way
            await live.stop()

        if tracker is not None:
            with console.status("ingest: waiting for the run's events to become visible"):
                await tracker.drain(profile.ingest_grace_s)
            results["ingest"]["lag"] = tracker.summary()
            if "ingest" in steps and not over_budget():
                with console.status(f"ingest: burst of {profile.ingest_burst_events} synthetic events"):
                    # the burst's events are counted in the table: hearing each one too cost the
                    # harness as much CPU as ingest's writing them, on the same cores
                    await observer.hush()
                    cpu_window = procstat.Window()
                    try:
                        results["ingest"]["burst"] = await ingest_burst(
                            nc,
                            targets.database_url,
                            burst_source,
                            profile.ingest_burst_events,
                            profile.ingest_grace_s * 4,
                        )
                    except Exception as exc:  # noqa: BLE001
                        results["ingest"]["burst"] = {"na": f"{type(exc).__name__}: {exc}"}
                    rows = results["ingest"]["burst"].get("events") or 0
                    record_cpu(results, "ingest-burst", cpu_window.close(int(rows)))
    finally:
        await rest.close()
        if tracker is not None:
            await tracker.drain(0)
        if live is not None:
            await live.stop()
            results["live"] = live.summary()
            results["live"]["task_events_heard_on_nats"] = observer.task_events
        await observer.stop()
        results["observed"] = {
            "events_of_this_run": observer.events_seen,
            "status_messages": observer.status_msgs,
            "events_per_second": observer.events_timeline.series(),
        }


@app.command()
def main(
    profile: Annotated[str, typer.Option(help="short (a few minutes on 2 cores), long, or smoke")] = "short",
    only: Annotated[
        str | None, typer.Option(help=f"comma-separated steps to run: {', '.join(STEPS)}")
    ] = None,
    skip: Annotated[str | None, typer.Option(help="comma-separated steps to leave out")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder parent (default: <repo>/reports)")] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="default: LOOM_NATS_URL, .env, nats://127.0.0.1:4222")
    ] = None,
    dispatcher_url: Annotated[str | None, typer.Option(help="default: http://127.0.0.1:8001")] = None,
    registry_url: Annotated[str | None, typer.Option(help="default: http://127.0.0.1:8002")] = None,
    query_ws_url: Annotated[str | None, typer.Option(help="default: ws://127.0.0.1:8004/ws/events")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="default: LOOM_DATABASE_URL, .env, the local TimescaleDB")
    ] = None,
    celery_url: Annotated[str | None, typer.Option(help="default: LOOM_REDIS_URL with database 5")] = None,
    py_spy: Annotated[
        str | None,
        typer.Option(
            help="sample this service (dispatcher, registry, ingest, query, replay, agent-worker, or a "
            "port) with py-spy during the echo closed loop"
        ),
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="skip the remaining steps after this long")
    ] = None,
    forced_rate: Annotated[
        float | None,
        typer.Option("--open-rate", help="open-loop tasks/s (default: half the closed loop's throughput)"),
    ] = None,
    client_procs: Annotated[
        int,
        typer.Option(
            "--client-procs",
            min=1,
            help="client processes for the REST closed loop (one asyncio client tops out below the stack)",
        ),
    ] = 2,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Drive the running stack (make up) and compare it with Celery and the machine's raw ceilings."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    steps = _steps(only, skip)
    try:
        targets = resolve_targets(
            {
                "nats_url": nats_url,
                "dispatcher_url": dispatcher_url,
                "registry_url": registry_url,
                "query_ws_url": query_ws_url,
                "database_url": database_url,
                "celery_url": celery_url,
            }
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = (out or repo_root() / "reports") / f"bench-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    budget = max_seconds if max_seconds is not None else (900.0 if chosen.name == "short" else 7200.0)
    if os.getloadavg()[0] > 1.0:
        console.print(
            f"[yellow]load average {os.getloadavg()[0]:.2f} at start: other work on this machine "
            "will show in every figure[/yellow]"
        )
    api_key = resolve_api_key()
    try:
        results = asyncio.run(
            run(targets, chosen, steps, folder, py_spy, budget, forced_rate, api_key, client_procs)
        )
    except KeyRefused as exc:
        console.print(Text(f"API key refused: {exc}", style="red"))
        raise typer.Exit(2) from None
    except (OSError, NoServersError) as exc:
        console.print(
            f"[red]cannot reach NATS at {targets.nats_url} ({exc!r}): is the stack up (make up)?[/red]"
        )
        raise typer.Exit(2) from exc
    json_path, html_path = write_reports(results, folder)
    console.print(rich_table(results))
    console.print(peers_table(results))
    console.print(accounting_table(results))
    console.print(cpu_table(results))
    if results.get("search", {}).get("scenarios"):
        console.print(search.search_table(results["search"]))
    elif "na" in results.get("search", {}):
        console.print(f"[red]{results['search']['na']}[/red]")
    if results.get("py_spy", {}).get("top_self"):
        console.print(f"[bold]py-spy {py_spy}: top frames by self time[/bold]")
        for frame, pct in results["py_spy"]["top_self"][:10]:
            console.print(f"  {pct:5.1f}%  {frame}")
    console.print(f"reports: {json_path}  {html_path}")
