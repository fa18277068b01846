"""OTLP ingest benchmark: spans/s that ``POST /v1/traces`` accepts, and the time until all are rows.

Standalone and bounded (default 24 s of budget): a nats-server of its own (JetStream in a
temporary directory, a free loopback port), an empty scratch database on the TimescaleDB server
(``loombench_<hex>``, migrated by ingest at start-up, dropped after) and an ingest service of the
workspace as a process against both. GenAI-convention traces (an ``invoke_agent`` span with a
``chat`` span and an ``execute_tool`` span inside: 5 event rows per 3 spans) are sent as
protobuf ``ExportTraceServiceRequest`` bodies in batches, by a few concurrent clients; 429/503
answers are sent again after their ``Retry-After``. Reported: spans/s accepted (first send to
last 200), then the time until every row is visible in ``events`` (polled), from the first send
and after the last answer.

The request bodies are encoded here (the protobuf wire format of the few fields used), so the
harness needs no protobuf package. With an API key (``LOOM_API_KEY``) ingest requires it (its
``LOOM_API_KEYS``) and every request carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import typer
from rich.console import Console
from rich.table import Table

from .search import free_port, repo_root, service_process, stop_process
from .settings import auth_headers, resolve_api_key, resolve_targets

ROWS_PER_TRACE = 5  # agent.answer + llm.request + llm.usage + tool.call + tool.result
SPANS_PER_TRACE = 3

# -- the protobuf wire format of an ExportTraceServiceRequest (opentelemetry-proto field numbers) --


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _fixed64_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<Q", value)


def any_value(value: str | int | bool) -> bytes:
    """An ``AnyValue``: string_value = 1, bool_value = 2, int_value = 3."""
    if isinstance(value, bool):
        return _varint_field(2, int(value))
    if isinstance(value, int):
        return _varint_field(3, value)
    return _bytes_field(1, value.encode())


def key_value(key: str, value: str | int | bool) -> bytes:
    """A ``KeyValue``: key = 1, value = 2."""
    return _bytes_field(1, key.encode()) + _bytes_field(2, any_value(value))


@dataclass(frozen=True)
class SpanSpec:
    """One span to encode (ids as bytes: 16 for the trace, 8 for spans)."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, str | int | bool]


def encode_span(span: SpanSpec) -> bytes:
    """A ``Span``: trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6, start 7, end 8, attributes 9."""
    out = _bytes_field(1, span.trace_id) + _bytes_field(2, span.span_id)
    if span.parent_span_id:
        out += _bytes_field(4, span.parent_span_id)
    out += _bytes_field(5, span.name.encode()) + _varint_field(6, span.kind)
    out += _fixed64_field(7, span.start_ns) + _fixed64_field(8, span.end_ns)
    for key, value in span.attributes.items():
        out += _bytes_field(9, key_value(key, value))
    return out


def encode_request(service: str, spans: list[SpanSpec]) -> bytes:
    """An ``ExportTraceServiceRequest`` (resource_spans 1) with one ``ResourceSpans`` (resource 1,
    scope_spans 2) holding one ``ScopeSpans`` (scope 1, spans 2)."""
    resource = _bytes_field(1, key_value("service.name", service))
    scope = _bytes_field(1, b"loom-load")
    scope_spans = _bytes_field(1, scope) + b"".join(_bytes_field(2, encode_span(s)) for s in spans)
    resource_spans = _bytes_field(1, resource) + _bytes_field(2, scope_spans)
    return _bytes_field(1, resource_spans)


def trace_spans(run: str, index: int, now_ns: int) -> list[SpanSpec]:
    """The three spans of trace ``index`` of run ``run``: an agent with a chat and a tool call inside."""
    trace_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{index}").bytes
    root, chat, tool = (trace_id[:7] + bytes([n]) for n in (1, 2, 3))
    agent = f"agent-{index % 8}"
    start = now_ns + index * 1000
    return [
        SpanSpec(
            trace_id,
            root,
            b"",
            f"invoke_agent {agent}",
            1,
            start,
            start + 3_000_000,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent},
        ),
        SpanSpec(
            trace_id,
            chat,
            root,
            "chat gpt-4o-mini",
            3,
            start + 100_000,
            start + 1_500_000,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100 + index % 50,
                "gen_ai.usage.output_tokens": 20 + index % 10,
            },
        ),
        SpanSpec(
            trace_id,
            tool,
            root,
            "execute_tool calculator",
            1,
            start + 1_600_000,
            start + 2_000_000,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "calculator",
                "gen_ai.tool.call.id": f"call-{index}",
                "gen_ai.tool.call.arguments": '{"expression": "6*7"}',
                "gen_ai.tool.call.result": "42",
            },
        ),
    ]


def bodies(run: str, traces: int, traces_per_batch: int, now_ns: int) -> list[bytes]:
    """The request bodies of a run: ``traces`` traces, ``traces_per_batch`` per request."""
    out = []
    for first in range(0, traces, traces_per_batch):
        spans = [
            s
            for i in range(first, min(first + traces_per_batch, traces))
            for s in trace_spans(run, i, now_ns)
        ]
        out.append(encode_request(f"bench-{run}", spans))
    return out


# -- the services -------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def nats_server(work: Path, log: Path | None) -> Iterator[str]:
    """A nats-server with JetStream on a free loopback port, storing in ``work``; stopped on exit."""
    binary = shutil.which("nats-server")
    if binary is None:
        raise RuntimeError("nats-server is not on PATH")
    port = free_port()
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(work / "jetstream")]
    log_file = log.open("ab") if log is not None else None
    proc = subprocess.Popen(argv, stdout=log_file or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not listen on {port}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        if log_file is not None:
            log_file.close()


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on ``database_url``'s server (ingest migrates it); dropped afterwards."""
    name = f"loombench_{uuid.uuid4().hex[:12]}"
    admin_url = _with_database(database_url, "postgres")
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(database_url, name)
    finally:
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def wait_ready(client: httpx.AsyncClient, deadline: float) -> None:
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = await client.get("/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.1)
    raise RuntimeError(f"ingest was not ready in time: {last}")


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Sent:
    accepted_spans: int = 0
    retries: int = 0
    errors: int = 0


async def send_all(
    client: httpx.AsyncClient,
    payloads: list[bytes],
    spans_per_body: list[int],
    concurrency: int,
    deadline: float,
) -> Sent:
    """POST every body to ``/v1/traces`` with ``concurrency`` clients; a 429/503 is sent again later."""
    sent = Sent()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(payloads)):
        queue.put_nowait(index)
    headers = {"content-type": "application/x-protobuf"}

    async def sender() -> None:
        while not queue.empty() and time.monotonic() < deadline:
            index = queue.get_nowait()
            try:
                response = await client.post("/v1/traces", content=payloads[index], headers=headers)
            except httpx.HTTPError:
                sent.errors += 1
                queue.put_nowait(index)
                continue
            if response.status_code == 200:
                sent.accepted_spans += spans_per_body[index]
            elif response.status_code in (429, 503):
                sent.retries += 1
                await asyncio.sleep(min(float(response.headers.get("retry-after") or 1), 1.0))
                queue.put_nowait(index)
            else:
                sent.errors += 1

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return sent


async def wait_rows(url: str, expected: int, deadline: float) -> int:
    """Poll ``events`` until ``expected`` rows are there (or the deadline); the last count."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        count = 0
        while time.monotonic() < deadline:
            count = int(await conn.fetchval("SELECT count(*) FROM events WHERE kind = 'event'"))
            if count >= expected:
                return count
            await asyncio.sleep(0.05)
        return count
    finally:
        await conn.close()


async def run_otlp_bench(
    database_url: str,
    repo: Path,
    *,
    spans: int,
    spans_per_request: int,
    concurrency: int,
    max_seconds: float,
    log: Path | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Start nats-server, a scratch database and ingest; send; wait for the rows; the figures.
    With ``api_key``, ingest requires it and every request carries it."""
    started = time.monotonic()
    deadline = started + max_seconds
    traces = max(spans // SPANS_PER_TRACE, 1)
    per_batch = max(spans_per_request // SPANS_PER_TRACE, 1)
    run = uuid.uuid4().hex[:8]
    payloads = bodies(run, traces, per_batch, time.time_ns())
    spans_per_body = [
        SPANS_PER_TRACE * (min(first + per_batch, traces) - first) for first in range(0, traces, per_batch)
    ]
    out: dict[str, Any] = {
        "spans": traces * SPANS_PER_TRACE,
        "spans_per_request": per_batch * SPANS_PER_TRACE,
        "requests": len(payloads),
        "concurrency": concurrency,
        "body_bytes_mean": round(sum(map(len, payloads)) / len(payloads)),
        "encoding": "application/x-protobuf",
    }
    expected_rows = traces * ROWS_PER_TRACE
    with tempfile.TemporaryDirectory(prefix="loom-otlp-bench-") as work:
        with nats_server(Path(work), log) as nats_url:
            async with empty_database(database_url) as url:
                port = free_port()
                with service_process("loom_ingest", repo, url, nats_url, port, log, api_key) as base_url:
                    headers = auth_headers(api_key)
                    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
                        await wait_ready(client, deadline)
                        out["setup_s"] = round(time.monotonic() - started, 1)
                        sending = time.monotonic()
                        sent = await send_all(client, payloads, spans_per_body, concurrency, deadline)
                        answered = time.monotonic()
                        rows = await wait_rows(url, expected_rows, deadline)
                        visible = time.monotonic()
    send_s = answered - sending
    out.update(
        accepted_spans=sent.accepted_spans,
        retries=sent.retries,
        errors=sent.errors,
        send_s=round(send_s, 3),
        spans_per_s=round(sent.accepted_spans / send_s) if send_s > 0 else None,
        expected_rows=expected_rows,
        rows=rows,
        all_rows_visible_s=round(visible - sending, 3) if rows >= expected_rows else None,
        visible_after_last_answer_s=round(visible - answered, 3) if rows >= expected_rows else None,
        rows_per_s=round(rows / (visible - sending)) if visible > sending else None,
        duration_s=round(time.monotonic() - started, 1),
    )
    if rows < expected_rows or sent.accepted_spans < out["spans"]:
        out["note"] = "time budget spent before every span was accepted and stored"
    return out


def otlp_table(result: dict[str, Any]) -> Table:
    """The figures of one run, for the terminal."""
    table = Table(title="OTLP/HTTP ingest (POST /v1/traces, protobuf)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    return table


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    spans: Annotated[int, typer.Option(help="spans sent (3 per trace)")] = 30_000,
    spans_per_request: Annotated[int, typer.Option(help="spans per export request")] = 600,
    concurrency: Annotated[int, typer.Option(help="concurrent senders")] = 4,
    database_url: Annotated[
        str | None, typer.Option(help="the TimescaleDB server (a database on it)")
    ] = None,
    max_seconds: Annotated[float, typer.Option(help="time budget of the whole benchmark")] = 24.0,
    out: Annotated[Path | None, typer.Option(help="write the figures to this JSON file")] = None,
) -> None:
    """Benchmark OTLP/HTTP trace ingest on an ingest service of its own."""
    targets = resolve_targets({"database_url": database_url})
    result = asyncio.run(
        run_otlp_bench(
            targets.database_url,
            repo_root(),
            spans=spans,
            spans_per_request=spans_per_request,
            concurrency=concurrency,
            max_seconds=max_seconds,
            api_key=resolve_api_key(),
        )
    )
    Console().print(otlp_table(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    app()
