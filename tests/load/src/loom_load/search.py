"""Task search benchmark: ``GET /api/tasks`` and ``GET /api/sessions/{id}`` over a scratch database.

A database of its own is made on the TimescaleDB server (``loombench_<hex>``, dropped after), its
schema made by ingest's migration files (read from the repository, recorded in
``schema_migrations`` as ingest records them), then filled directly over SQL: ``tasks`` rows as
the projection holds them, their ``task_text`` as ingest writes it, and ``llm.usage`` rows in
``events`` for the sessions' tasks (deterministic, from a seed). A query service is started as
a process of the workspace on a free loopback port against that database, and each scenario
(filters, paging, counts, free text, the session view) is timed over sequential requests with
httpx: p50 / p95 / p99 in milliseconds. Bounded in time: scenarios left when the budget is
spent are reported skipped. With an API key (``LOOM_API_KEY``) the query service requires it
(its ``LOOM_API_KEYS``) and every request carries it, as a deployment with keys runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import typer
from rich.console import Console
from rich.table import Table

from .settings import auth_headers, resolve_api_key, resolve_targets
from .stats import Latency

STATUSES: tuple[tuple[str, float], ...] = (
    ("completed", 0.70),
    ("failed", 0.08),
    ("running", 0.05),
    ("pending", 0.04),
    ("dispatched", 0.03),
    ("input_required", 0.02),
    ("cancelled", 0.05),
    ("dead", 0.03),
)
"""Status mix of the generated tasks (weights)."""
TERMINAL = frozenset({"completed", "failed", "cancelled", "dead"})
COMMON_WORD = "weather"  # in about a third of the prompts
RARE_WORD = "zanzibar"  # in about one task in a thousand
WORDS = (
    "agent tool plan step answer question report summary data table chart price stock market city "
    "travel flight hotel budget invoice customer order refund search result error retry timeout "
    "cache model prompt token cost latency query index page cursor filter status session parent "
    "child task queue worker instance approve reject review draft email letter translate french "
    "german spanish code python test build deploy release version schema column row join count"
).split()

TASK_COLUMNS = (
    "task_id",
    "target_agent",
    "source_agent",
    "action",
    "status",
    "final",
    "attempt",
    "instance_id",
    "parent_task_id",
    "session_id",
    "trace_id",
    "parameters",
    "result",
    "error",
    "metadata",
    "created_at",
    "updated_at",
    "finished_at",
    "cancel_requested_at",
    "pending_approval",
    "approvals",
)
EVENT_COLUMNS = (
    "time",
    "id",
    "kind",
    "type",
    "source",
    "subject",
    "task_id",
    "session_id",
    "node_id",
    "agent_id",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "data",
    "attributes",
)


@dataclass(frozen=True)
class SearchSize:
    """How big one profile's benchmark is."""

    tasks: int  # in the scratch database
    requests: int  # timed per scenario
    max_seconds: float  # the whole benchmark, setup included


SIZES: dict[str, SearchSize] = {
    "smoke": SearchSize(10_000, 30, 40.0),
    "short": SearchSize(10_000, 200, 55.0),
    "long": SearchSize(100_000, 100, 240.0),
}


@dataclass
class Dataset:
    """What was generated: the rows, and the values scenarios pick their parameters from
    (agents, sessions with tasks, tasks with children, the creation times' range)."""

    tasks: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    agents: list[str]
    sessions: list[str]
    parents: list[str]
    oldest: datetime
    newest: datetime


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(n_tasks: int, seed: int = 7, now: datetime | None = None) -> Dataset:
    """``n_tasks`` task rows over the last 7 days (40 agents, a session for 4 tasks in 5, a parent
    for 1 in 5) and 1-3 ``llm.usage`` event rows per task of a session."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC).replace(microsecond=0)
    span_s = 7 * 86_400
    agents = [f"agent-{i:02d}" for i in range(40)]
    sessions = [f"sess-{i:05d}" for i in range(max(1, n_tasks // 5))]
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    created_list = sorted(now - timedelta(seconds=rng.uniform(0, span_s)) for _ in range(n_tasks))
    tasks: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    parents: list[str] = []
    ids: list[str] = []
    for i, created in enumerate(created_list):
        task_id = f"bt-{i:07d}-{rng.getrandbits(32):08x}"
        agent = rng.choice(agents)
        status = rng.choices(statuses, weights)[0]
        session = rng.choice(sessions) if rng.random() < 0.8 else None
        parent = rng.choice(ids[-200:]) if ids and rng.random() < 0.2 else None
        if parent is not None:
            parents.append(parent)
        prompt = _words(rng, rng.randint(10, 40))
        if rng.random() < 0.33:
            prompt += f" {COMMON_WORD}"
        if rng.random() < 0.001:
            prompt += f" {RARE_WORD}"
        updated = created + timedelta(seconds=rng.uniform(0.05, 60))
        terminal = status in TERMINAL
        result = json.dumps({"answer": _words(rng, rng.randint(20, 150))}) if status == "completed" else None
        error = {"failed": "tool timed out: " + _words(rng, 5), "dead": "no instance", "cancelled": "by user"}
        pending = (
            json.dumps({"key": "1.0", "tool": "shell", "arguments": {"cmd": "ls"}, "step": 1, "attempt": 1})
            if status == "input_required"
            else None
        )
        tasks.append(
            (
                task_id,
                agent,
                None,
                "execute",
                status,
                terminal,
                0 if status == "pending" else 1,
                None if status == "pending" else f"w-{rng.randint(1, 8)}",
                parent,
                session,
                uuid.UUID(int=rng.getrandbits(128)).hex,
                json.dumps({"prompt": prompt}),
                result,
                error.get(status),
                "{}",
                created,
                updated,
                updated if terminal else None,
                updated if status == "cancelled" else None,
                pending,
                "[]",
            )
        )
        ids.append(task_id)
        if session is not None:
            for call in range(rng.randint(1, 3)):
                events.append(
                    _usage_row(rng, created + timedelta(seconds=call + 0.5), task_id, session, agent)
                )
    return Dataset(
        tasks=tasks,
        events=events,
        agents=agents,
        sessions=sorted({row[9] for row in tasks if row[9] is not None}),
        parents=sorted(set(parents)),
        oldest=created_list[0] if created_list else now,
        newest=created_list[-1] if created_list else now,
    )


def _usage_row(rng: random.Random, at: datetime, task_id: str, session: str, agent: str) -> tuple[Any, ...]:
    tokens_in, tokens_out = rng.randint(100, 4000), rng.randint(10, 800)
    cost = round(tokens_in * 3e-6 + tokens_out * 1.5e-5, 6)
    event_id = uuid.UUID(int=rng.getrandbits(128)).hex
    source = f"/workers/w-1/agents/{agent}"
    data = {"model": "m", "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": cost}
    attributes = {
        "specversion": "1.0",
        "id": event_id,
        "type": "llm.usage",
        "source": source,
        "time": at.isoformat(),
        "taskid": task_id,
        "sessionid": session,
        "agentid": agent,
    }
    return (
        at,
        event_id,
        "event",
        "llm.usage",
        source,
        "llm:p/m",
        task_id,
        session,
        agent,
        agent,
        tokens_in,
        tokens_out,
        cost,
        json.dumps(data),
        json.dumps(attributes),
    )


# -- scenarios ------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """A kind of request, timed ``requests`` times; ``params(i)`` gives the i-th request's
    parameters (values rotate, so that one cached answer is not what is measured)."""

    name: str
    params: Callable[[int], dict[str, Any]]
    path: Callable[[int], str] = field(default=lambda i: "/api/tasks")
    follow_cursor: bool = False  # each request asks for the page after the previous one's


def scenarios(data: Dataset) -> list[Scenario]:
    """The scenarios, from the data set's agents, sessions, parents and times."""
    a, s, p = data.agents, data.sessions, data.parents or ["none"]
    day = timedelta(days=1)

    def window(i: int) -> dict[str, Any]:
        start = data.oldest + (i % 6) * day
        return {"since": start.isoformat(), "until": (start + day).timestamp()}

    def session(i: int) -> str:
        return s[(i * 7919) % len(s)]

    return [
        Scenario("first page (no filter)", lambda i: {}),
        Scenario("status=completed", lambda i: {"status": "completed"}),
        Scenario("status=input_required (rare)", lambda i: {"status": "input_required"}),
        Scenario("status=failed,dead", lambda i: {"status": "failed,dead"}),
        Scenario("agent", lambda i: {"agent": a[i % len(a)]}),
        Scenario("agent + status=failed", lambda i: {"agent": a[i % len(a)], "status": "failed"}),
        Scenario("session", lambda i: {"session": session(i)}),
        Scenario("parent", lambda i: {"parent": p[i % len(p)]}),
        Scenario("since/until (1 day)", window),
        Scenario(f"q={COMMON_WORD} (1/3 match)", lambda i: {"q": COMMON_WORD}),
        Scenario(f"q={RARE_WORD} (rare)", lambda i: {"q": RARE_WORD}),
        Scenario("q='timed out' + status=failed", lambda i: {"q": "timed out", "status": "failed"}),
        Scenario("q='stock price' (words common, phrase rare)", lambda i: {"q": "stock price"}),
        Scenario("cursor pages, limit 50", lambda i: {}, follow_cursor=True),
        Scenario("cursor pages, status=completed", lambda i: {"status": "completed"}, follow_cursor=True),
        Scenario("limit=200", lambda i: {"limit": 200}),
        Scenario("session view", lambda i: {}, path=lambda i: f"/api/sessions/{session(i)}"),
    ]


async def time_scenario(
    client: httpx.AsyncClient, scenario: Scenario, requests: int, deadline: float
) -> dict[str, Any]:
    """Time ``requests`` sequential requests (after 3 untimed ones); stops at ``deadline``."""
    latency = Latency()
    errors: dict[str, int] = {}
    rows = 0
    cursor: str | None = None
    for i in range(-3, requests):
        if time.perf_counter() > deadline:
            break
        params = dict(scenario.params(max(i, 0)))
        if scenario.follow_cursor and cursor is not None:
            params["cursor"] = cursor
        started = time.perf_counter()
        response = await client.get(scenario.path(max(i, 0)), params=params)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            key = f"HTTP {response.status_code}"
            errors[key] = errors.get(key, 0) + 1
            continue
        body = response.json()
        if scenario.follow_cursor:
            cursor = body.get("nextCursor")
        if i >= 0:
            latency.record(elapsed)
            rows += len(body.get("tasks", []))
    summary = latency.summary()
    out = {
        "name": scenario.name,
        **{k: summary[k] for k in ("count", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
    }
    out["rows_per_answer"] = round(rows / summary["count"], 1) if summary["count"] else None
    if errors:
        out["errors"] = errors
    if time.perf_counter() > deadline:
        out["note"] = "time budget spent"
    return out


# -- the scratch database and the query service ------------------------------------------------------

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migration_files(repo: Path) -> list[Path]:
    """Ingest's migration files, in version order."""
    folder = repo / "services" / "ingest" / "src" / "loom_ingest" / "migrations"
    return sorted((f for f in folder.iterdir() if _MIGRATION.match(f.name)), key=lambda f: f.name)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def scratch_database(database_url: str, repo: Path) -> AsyncIterator[str]:
    """A new database on ``database_url``'s server with ingest's schema; dropped afterwards."""
    name = f"loombench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_with_database(database_url, "postgres"), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(database_url, name)
    try:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for path in migration_files(repo):
                sql = path.read_text(encoding="utf-8")
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        int(path.name[:4]),
                        path.name,
                        hashlib.sha256(sql.encode()).hexdigest(),
                    )
        finally:
            await conn.close()
        yield url
    finally:
        admin = await asyncpg.connect(_with_database(database_url, "postgres"), timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def fill(url: str, data: Dataset) -> dict[str, Any]:
    """COPY the data set in, then VACUUM ANALYZE (what autovacuum does to a live table)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("tasks", records=data.tasks, columns=TASK_COLUMNS)
        # the text search looks in, as ingest writes it
        await conn.execute(
            "INSERT INTO task_text (task_id, search_text) "
            "SELECT task_id, loom_task_text(parameters, result, error) FROM tasks"
        )
        tasks_s = time.perf_counter() - started
        await conn.copy_records_to_table("events", records=data.events, columns=EVENT_COLUMNS)
        for table in ("tasks", "task_text", "events"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        has_trgm = bool(
            await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'task_text_trgm_idx'")
        )
        size = await conn.fetchval(
            "SELECT pg_total_relation_size('tasks') + pg_total_relation_size('task_text')"
        )
    finally:
        await conn.close()
    return {
        "tasks": len(data.tasks),
        "llm_usage_events": len(data.events),
        "load_tasks_rows_per_s": round(len(data.tasks) / tasks_s) if tasks_s > 0 else None,
        "tasks_tables_bytes": size,
        "trigram_index": has_trgm,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_command(repo: Path, module: str) -> list[str]:
    """How to run a workspace service (``loom_query``, ``loom_ingest``): its venv's python, else
    through uv."""
    python = repo / ".venv" / "bin" / "python"
    if python.exists():
        return [str(python), "-m", module]
    uv = shutil.which("uv") or "uv"
    return [uv, "run", "--frozen", "--project", str(repo), "python", "-m", module]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """TERM, then KILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def service_process(
    module: str,
    repo: Path,
    database_url: str,
    nats_url: str,
    port: int,
    log: Path | None,
    api_key: str | None = None,
) -> Iterator[str]:
    """A workspace service process on 127.0.0.1:``port``; stopped (TERM, then KILL) on exit.
    With ``api_key``, the service requires that key (``LOOM_API_KEYS``: its one fixed key, every
    scope), so the harness's requests, which carry it, are accepted whatever keys ``.env`` or the
    broker hold."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "LOOM_DATABASE_URL": database_url,
            "LOOM_NATS_URL": nats_url,
            "LOOM_HTTP_HOST": "127.0.0.1",
            "LOOM_HTTP_PORT": str(port),
            "LOOM_LOG_LEVEL": "WARNING",
        }
    )
    if api_key:
        env["LOOM_API_KEYS"] = api_key
    log_file = log.open("ab") if log is not None else None
    proc = subprocess.Popen(
        service_command(repo, module),
        env=env,
        cwd=repo,
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        if log_file is not None:
            log_file.close()


async def wait_ready(client: httpx.AsyncClient, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    last = "no answer"
    while time.perf_counter() < deadline:
        try:
            response = await client.get("/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the query service was not ready within {timeout:g}s: {last}")


async def run_search_bench(
    database_url: str,
    nats_url: str,
    repo: Path,
    *,
    n_tasks: int,
    requests: int,
    max_seconds: float = 55.0,
    log: Path | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Fill a scratch database, serve it, time every scenario; the figures as a dict. With
    ``api_key``, the query service requires it and every request carries it."""
    started = time.perf_counter()
    deadline = started + max_seconds
    data = generate(n_tasks)
    out: dict[str, Any] = {"requests_per_scenario": requests, "concurrency": 1}
    async with scratch_database(database_url, repo) as url:
        out["dataset"] = await fill(url, data)
        with service_process("loom_query", repo, url, nats_url, free_port(), log, api_key) as base_url:
            async with httpx.AsyncClient(
                base_url=base_url, timeout=30, headers=auth_headers(api_key)
            ) as client:
                await wait_ready(client, 30)
                out["setup_s"] = round(time.perf_counter() - started, 1)
                out["scenarios"] = []
                for scenario in scenarios(data):
                    if time.perf_counter() > deadline:
                        out["scenarios"].append({"name": scenario.name, "note": "skipped: time budget spent"})
                        continue
                    out["scenarios"].append(await time_scenario(client, scenario, requests, deadline))
    out["duration_s"] = round(time.perf_counter() - started, 1)
    return out


def search_table(result: dict[str, Any]) -> Table:
    """The figures of one run, for the terminal."""
    dataset = result.get("dataset", {})
    title = (
        f"task search: {dataset.get('tasks', '?'):,} tasks, {result.get('requests_per_scenario')} "
        f"sequential requests per scenario (trigram index: {dataset.get('trigram_index')})"
    )
    table = Table(title=title)
    table.add_column("scenario")
    for column in ("p50 ms", "p95 ms", "p99 ms", "max ms", "rows", "n"):
        table.add_column(column, justify="right")
    table.add_column("note")
    for s in result.get("scenarios", []):
        note = s.get("note", "") + (f" errors {s['errors']}" if s.get("errors") else "")
        table.add_row(
            s["name"],
            *(_ms(s.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
            str(s.get("rows_per_answer", "")),
            str(s.get("count", "")),
            note,
        )
    return table


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    profile: Annotated[str, typer.Option(help=", ".join(SIZES))] = "short",
    tasks: Annotated[int | None, typer.Option(help="tasks in the scratch database")] = None,
    requests: Annotated[int | None, typer.Option(help="timed requests per scenario")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="the TimescaleDB server (a database on it)")
    ] = None,
    nats_url: Annotated[str | None, typer.Option(help="NATS the query service connects to")] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="time budget of the whole benchmark (default: the profile's)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the figures to this JSON file")] = None,
) -> None:
    """Benchmark GET /api/tasks and GET /api/sessions/{id} on a scratch database."""
    if profile not in SIZES:
        raise typer.BadParameter(f"unknown profile {profile!r}; known: {', '.join(SIZES)}")
    targets = resolve_targets({"database_url": database_url, "nats_url": nats_url})
    size = SIZES[profile]
    result = asyncio.run(
        run_search_bench(
            targets.database_url,
            targets.nats_url,
            repo_root(),
            n_tasks=tasks or size.tasks,
            requests=requests or size.requests,
            max_seconds=max_seconds or size.max_seconds,
            api_key=resolve_api_key(),
        )
    )
    Console().print(search_table(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2, default=str))


def repo_root() -> Path:
    """The repository whose query service and migrations are benchmarked: the one above this
    file (an editable install), else above the working directory."""
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for directory in (start, *start.parents):
            if (directory / "services" / "ingest" / "src").is_dir():
                return directory
    raise RuntimeError("no Loom repository (services/ingest) above this file or the working directory")


if __name__ == "__main__":
    app()
