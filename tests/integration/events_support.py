"""Helpers and fixtures for the event-pipeline tests of both tiers (ingest, query): a fresh
TimescaleDB database per test, the two services on the test's stack, publishers and listeners.

Import the fixture into a test module with ``from .events_support import database_url_fixture  # noqa: F401``:
it is registered under the name ``database_url`` (so test parameters do not shadow the import).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from loom_nats import flushed
from loom_protocol import MSG_ID_HEADER, CloudEvent, new_event, subjects

from .harness import DATABASE_URL, AnyService, Stack, wait_for


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


ADMIN_URL = _with_database(DATABASE_URL, "postgres")


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database on the TimescaleDB server (ingest migrates it), dropped afterwards."""
    name = f"loomtest_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"TimescaleDB not reachable at {ADMIN_URL} ({exc!r}); run scripts/timescaledb.sh up")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(DATABASE_URL, name)
    finally:
        admin = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(name="database_url")
async def database_url_fixture() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        yield conn
    finally:
        await conn.close()


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    async with connect(url) as conn:
        return await conn.fetchval(sql, *args)


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with connect(url) as conn:
        return list(await conn.fetch(sql, *args))


async def wait_count(url: str, sql: str, expected: int, timeout: float, *args: Any) -> None:
    """Wait until ``sql`` (a count) reaches ``expected``; fail if it goes past it."""
    last: list[int] = [-1]

    async def reached() -> bool:
        try:
            last[0] = int(await fetchval(url, sql, *args))
        except (OSError, asyncpg.PostgresError):
            return False
        assert last[0] <= expected, f"{sql}: {last[0]} rows, more than the {expected} expected"
        return last[0] == expected

    await wait_for(reached, timeout, f"{expected} rows from {sql!r} (last count {last[0]})")


# -- services -----------------------------------------------------------------------------------

FAST_INGEST = {
    "LOOM_ACK_WAIT_S": "3",
    "LOOM_DB_RETRY_MAX_S": "0.5",
    "LOOM_FETCH_WAIT_S": "0.5",
    "LOOM_BATCH_LINGER_S": "0.02",
}


async def start_ingest(
    stack: Stack, url: str, name: str = "ingest-0", *, process: bool = False, **env: str
) -> AnyService:
    svc = stack.add(name, "loom_ingest", {"LOOM_DATABASE_URL": url, **FAST_INGEST, **env}, process=process)
    return await svc.started()


async def start_query(stack: Stack, url: str, name: str = "query-0", **env: str) -> AnyService:
    return await stack.add(name, "loom_query", {"LOOM_DATABASE_URL": url, **env}).started()


async def start_pipeline(
    stack: Stack, url: str, *, process: bool = False, **query_env: str
) -> tuple[AnyService, AnyService]:
    """Ingest and query, started together (query is ready once ingest has migrated)."""
    ingest = stack.service("ingest-0", "loom_ingest", process=process, LOOM_DATABASE_URL=url, **FAST_INGEST)
    query = stack.service("query-0", "loom_query", process=process, LOOM_DATABASE_URL=url, **query_env)
    await asyncio.gather(ingest.started(), query.started())
    return ingest, query


async def is_ready(svc: AnyService) -> int:
    async with httpx.AsyncClient(timeout=3) as client:
        try:
            return (await client.get(f"{svc.url}/readyz")).status_code
        except httpx.HTTPError:
            return 0


async def metric_value(svc: AnyService, name: str, labels: str = "") -> float:
    """A sample of the service's /metrics (0 when absent), e.g. ``name='x_total', labels='{a="b"}'``."""
    async with httpx.AsyncClient(timeout=3) as client:
        text = (await client.get(f"{svc.url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def ws_url(svc: AnyService, path: str) -> str:
    return svc.url.replace("http://", "ws://") + path


# -- events -------------------------------------------------------------------------------------

TRACEPARENT = "00-{trace}-{span}-01"


def traceparent(trace_id: str | None = None) -> str:
    return TRACEPARENT.format(trace=trace_id or uuid.uuid4().hex, span=uuid.uuid4().hex[:16])


def event(event_type: str = "agent.thought", **kwargs: Any) -> CloudEvent:
    kwargs.setdefault("source", "/tests/producer")
    source = kwargs.pop("source")
    return new_event(event_type, source, **kwargs)


def subject_of(e: CloudEvent) -> str:
    """The subject Loom publishes ``e`` on: its instance's when it names one (a worker's event),
    else ingest's (an event from outside NATS)."""
    if e.instanceid is not None:
        return subjects.instance_event(e.instanceid, e.type)
    return subjects.service_event("ingest", e.type)


async def publish(js: Any, events: Iterable[CloudEvent]) -> int:
    """Publish events to JetStream as Loom does (``Nats-Msg-Id`` = the event id); returns how many."""
    futures = [
        await js.publish_async(subject_of(e), e.to_json(), headers={MSG_ID_HEADER: e.id}) for e in events
    ]
    acks = await asyncio.gather(*futures)
    return len(acks)


async def publish_raw(js: Any, subject: str, payload: bytes, msg_id: str | None = None) -> None:
    headers = {MSG_ID_HEADER: msg_id} if msg_id else None
    await js.publish(subject, payload, headers=headers)


class EventListener:
    """Counts every event published on ``loom.event.>`` (a core NATS subscription)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.by_id: dict[str, dict[str, Any]] = {}

    async def attach(self, nc: Any) -> None:
        async def on_msg(msg: Any) -> None:
            body = json.loads(msg.data)
            self.ids.append(body["id"])
            self.by_id[body["id"]] = body

        await nc.subscribe(subjects.EVENT_ALL, cb=on_msg)
        await flushed(nc)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
