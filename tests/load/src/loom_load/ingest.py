"""Ingest, seen from the outside: event time → row visible in TimescaleDB's ``events`` table.

* :class:`LagTracker` is fed (id, time) of every CloudEvent of this run the harness hears on
  NATS, and polls ``events`` for the ids not yet visible. When the server keeps commit
  timestamps (``track_commit_timestamp = on``, as the local stack's TimescaleDB does), the lag
  is exact: the commit time of the transaction that inserted the row (the moment it became
  visible, ``pg_xact_commit_timestamp(xmin)``) − event time. Otherwise a row is visible at the
  latest at the poll that found it (lag = poll start − event time, resolution: the poll
  interval and the poll's own duration); that figure is reported either way as ``poll_lag``.
  When the table has an ``ingested_at`` column, ``ingested_at − time`` is reported as well
  (the insert's transaction start: a lower bound).
* :func:`ingest_burst` publishes a burst of synthetic events (type ``bench.synthetic``, a
  source unique to the run) and follows their count in ``events``: sustained rows/s.

Both tolerate the table being absent (ingest not deployed yet): they report ``n/a`` and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from loom_nats import flushed
from loom_protocol import MSG_ID_HEADER, new_event, subjects

from .stats import Latency, Timeline, sustained_rate

log = logging.getLogger(__name__)

BURST_TYPE = "bench.synthetic"


async def probe_events_table(database_url: str) -> tuple[set[str] | None, str | None]:
    """The ``events`` table's column names, or (None, why not)."""
    try:
        conn = await asyncpg.connect(database_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return None, f"cannot connect to the database: {exc}"
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'events'"
        )
    finally:
        await conn.close()
    columns = {r["column_name"] for r in rows}
    if not columns:
        return None, "table events does not exist (ingest not deployed yet?)"
    missing = {"id", "time"} - columns
    if missing:
        return None, f"table events has no column(s) {sorted(missing)}"
    return columns, None


class LagTracker:
    def __init__(
        self,
        database_url: str,
        columns: set[str],
        interval_s: float = 0.1,
        batch: int = 4000,
        exact_interval_s: float = 1.0,
    ) -> None:
        self._url = database_url
        self._has_ingested_at = "ingested_at" in columns
        self.interval_s = interval_s
        # with commit timestamps the lag is exact whenever the row is read: poll that seldom
        # while the run goes on (each poll is a query the stack's database answers on the same
        # cores; every 0.1 s it cost the harness 0.1 ms and PostgreSQL 0.05 ms of CPU per echo
        # task), and every interval_s once the run is over (drain)
        self.exact_interval_s = exact_interval_s
        self._draining = False
        self._batch = batch
        # event id -> (event time (epoch s), the phase of this run's task it belongs to or None)
        self._pending: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self.commit_lag = Latency()  # exact: commit time − event time
        self.poll_lag = Latency()  # an upper bound: poll start − event time
        self.insert_lag = Latency()  # a lower bound: transaction start − event time
        self.commit_timestamps: bool | None = None  # known once the poller connected
        # per phase: (commit lag, poll lag) of the events of its tasks
        self.by_phase: dict[str, tuple[Latency, Latency]] = {}
        self.timeline = Timeline(time.perf_counter(), bucket_s=1.0)
        self.heard = 0
        self.visible = 0
        self.first_visible: float | None = None
        self.last_visible: float | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.sources_excluded: set[str] = set()
        self._has_kind = "kind" in columns
        # phases whose events are read from the table instead of heard: phase -> (task-id
        # prefixes, event time from, to), read at the drain; their rows found per phase once read
        self._read: dict[str, tuple[list[str], float, float]] = {}
        self.read_rows: dict[str, int] = {}
        self.read_na: str | None = None  # why the phases to read could not be

    def add(self, event_id: str, at: float, source: str, phase: str | None = None) -> None:
        if source in self.sources_excluded:
            return
        if phase in self._read:
            return  # a straggler of a phase read from the table: counted there
        if event_id not in self._pending:
            self._pending[event_id] = (at, phase)
            self.heard += 1

    def read_after(self, phase: str, task_id_prefixes: list[str], since: float, until: float) -> None:
        """Take the lag of ``phase``'s events from the table at the drain, not from what was heard.

        For the phases the harness does not listen to (:meth:`Observer.hush`): the rows of the
        tasks whose ids start with one of ``task_id_prefixes``, CloudEvents only (not the task
        messages ingest stores beside them), with an event time from ``since`` to ``until``
        (epoch seconds). Their lag needs the commit times: each row's
        ``pg_xact_commit_timestamp(xmin)`` − its ``time``, read whenever the drain comes."""
        self._read[phase] = (task_id_prefixes, since, until)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever())

    async def drain(self, grace_s: float) -> None:
        """Keep polling until every heard event is visible or ``grace_s`` passed, then stop."""
        deadline = time.perf_counter() + grace_s
        self._draining = True
        if self.error is None:
            await self._read_phases(deadline)
        while self._pending and time.perf_counter() < deadline and self.error is None:
            await asyncio.sleep(self.interval_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll_forever(self) -> None:
        try:
            conn = await asyncpg.connect(self._url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self.error = f"cannot connect to the database: {exc}"
            return
        try:
            self.commit_timestamps = await conn.fetchval("SHOW track_commit_timestamp") == "on"
        except asyncpg.PostgresError:
            self.commit_timestamps = False
        select = "id, time" + (", ingested_at" if self._has_ingested_at else "")
        if self.commit_timestamps:
            select += ", pg_xact_commit_timestamp(xmin) AS committed_at"
        query = (
            f"SELECT {select} FROM events "  # noqa: S608 -- fixed column names, values are parameters
            "WHERE time >= $2 AND time <= $3 AND id = ANY($1::text[])"
        )
        try:
            while True:
                await self._next_poll()
                if not self._pending:
                    continue
                ids = list(itertools.islice(self._pending, self._batch))  # oldest first
                times = [self._pending[i][0] for i in ids]
                lo, hi = min(times) - 1.0, max(times) + 1.0
                snapshot = time.time()
                try:
                    rows = await conn.fetch(query, ids, _ts(lo), _ts(hi))
                except asyncpg.PostgresError as exc:
                    self.error = f"query failed: {exc}"
                    return
                now = time.perf_counter()
                for row in rows:
                    pending = self._pending.pop(row["id"], None)
                    if pending is None:
                        continue
                    at, phase = pending
                    committed = row["committed_at"] if self.commit_timestamps else None
                    self._record(row, at, phase, polled=snapshot, committed=committed)
                    self.timeline.add(now)
                    self.first_visible = snapshot if self.first_visible is None else self.first_visible
                    self.last_visible = snapshot
        finally:
            await conn.close()

    def _record(
        self, row: Any, at: float, phase: str | None, *, polled: float, committed: datetime | None
    ) -> None:
        """A row of an event sent at ``at`` is visible: by ``polled`` (epoch s) at the latest,
        exactly at ``committed`` when the database keeps commit times."""
        self.visible += 1
        figures = [(self.commit_lag, self.poll_lag)]  # the whole run's, and its phase's
        if phase is not None:
            figures.append(self.by_phase.setdefault(phase, (Latency(), Latency())))
        for commit, poll in figures:
            poll.record(polled - at)
            if committed is not None:
                commit.record(committed.timestamp() - at)
        if self._has_ingested_at and row["ingested_at"] is not None:
            self.insert_lag.record(row["ingested_at"].timestamp() - at)

    async def _read_phases(self, deadline: float, settled_s: float = 1.0) -> None:
        """Record the lag of every event row of the phases given to :meth:`read_after`, once
        their number stopped growing for ``settled_s`` (ingest caught up) or at ``deadline``."""
        reads = {phase: read for phase, read in self._read.items() if phase not in self.read_rows}
        if not reads:
            return
        if self.commit_timestamps is False:
            self.read_na = "read from the table's commit times: needs track_commit_timestamp = on"
            return
        try:
            conn = await asyncpg.connect(self._url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self.read_na = f"cannot connect to the database: {exc}"
            return
        where = "FROM events WHERE time >= $1 AND time <= $2 AND task_id LIKE ANY($3::text[])" + (
            " AND kind = 'event'" if self._has_kind else ""
        )
        select = "SELECT time, pg_xact_commit_timestamp(xmin) AS committed_at" + (
            ", ingested_at" if self._has_ingested_at else ""
        )
        try:
            for phase, (prefixes, since, until) in reads.items():
                args = (_ts(since), _ts(until), [like_prefix(p) for p in prefixes])
                count, counted = -1, time.perf_counter()
                while time.perf_counter() < deadline:
                    now = await conn.fetchval(f"SELECT count(*) {where}", *args)  # noqa: S608 -- fixed text
                    if now != count:
                        count, counted = now, time.perf_counter()
                    elif time.perf_counter() - counted >= settled_s:
                        break
                    await asyncio.sleep(self.interval_s)
                rows = await conn.fetch(f"{select} {where}", *args)  # noqa: S608 -- fixed text
                self.read_rows[phase] = len(rows)
                for row in rows:
                    committed = row["committed_at"]
                    if committed is None:
                        continue  # committed before track_commit_timestamp was on: not this run's
                    # exact, so the poll's upper bound for these rows is the same figure
                    at = row["time"].timestamp()
                    self._record(row, at, phase, polled=committed.timestamp(), committed=committed)
        except asyncpg.PostgresError as exc:
            self.read_na = f"reading them failed: {exc}"
        finally:
            await conn.close()

    async def _next_poll(self) -> None:
        """Wait ``interval_s``, or ``exact_interval_s`` while the run goes on with commit times."""
        waited = 0.0
        while waited < (self.exact_interval_s if self.commit_timestamps else self.interval_s):
            await asyncio.sleep(self.interval_s)
            waited += self.interval_s
            if self._draining:
                return

    @property
    def lag(self) -> Latency:
        """The exact figure when every visible row had a commit time, else the poll's."""
        exact = self.commit_lag.count and self.commit_lag.count == self.poll_lag.count
        return self.commit_lag if exact else self.poll_lag

    def summary(self) -> dict[str, Any]:
        lag = self.lag
        method = (
            "commit time (exact)"
            if lag is self.commit_lag
            else f"polled every {round(self.interval_s * 1000)} ms (upper bound)"
        )
        out: dict[str, Any] = {
            "events_heard_on_nats": self.heard,
            "rows_visible": self.visible,
            "rows_read_by_phase": dict(sorted(self.read_rows.items())),
            "rows_not_visible": len(self._pending),
            "poll_interval_ms": round(self.interval_s * 1000),
            "lag": lag.summary(),
            "lag_method": method,
            "cdf": lag.cdf(),
            "poll_lag": self.poll_lag.summary(),
            "by_phase": {
                phase: (commit if lag is self.commit_lag else poll).summary()
                for phase, (commit, poll) in sorted(self.by_phase.items())
            },
            "timeline": self.timeline.series(),
        }
        if self.read_na:
            out["read_na"] = self.read_na
        if self.insert_lag.count:
            out["insert_lag"] = self.insert_lag.summary()
        if self.error:
            out["error"] = self.error
        if self.visible == 0:
            out["na"] = self.error or "no row of this run became visible in events (is ingest running?)"
        return out


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with ``prefix``."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


KEPT_UP_BACKLOG = 0.05
"""A burst whose largest backlog (published, not yet visible) stayed under this share of its
events was written as fast as the harness published it: its rate is then the publisher's."""


async def ingest_burst(
    nc: Any, database_url: str, source: str, n: int, timeout_s: float, poll_s: float = 0.1
) -> dict[str, Any]:
    """Publish ``n`` synthetic events at full speed; follow their count in ``events`` meanwhile.

    The events go out as plain publishes on the events stream's subject, as the services send
    theirs: the stream stores them without an ack for the harness to wait for and process (with
    ``publish_async`` the publisher took more CPU per event than ingest, on the same cores), and
    a message the stream did not store shows as a row missing at the end. The messages are
    encoded before the clock starts, and the table is polled every ``poll_s``
    from the first publish on (``samples``: seconds, rows visible), through the index on
    ``(node_id, time)`` (the burst's events have no agentid: their node is their source), so that
    a poll reads the burst's rows only: counted over the whole chunk, every 20 ms, the polls took
    PostgreSQL more CPU than ingest's writes (a parallel scan of every row of the run, up to
    ~120 ms each). The sustained rate (the
    slope between 10% and 90% of the rows) covers the burst itself, the harness's publisher
    running beside ingest. Rows become visible a committed batch at a time (up to
    ``LOOM_BATCH_SIZE``): the burst must span many batches for the slope to mean anything.
    When ingest kept up with the publisher (its largest backlog under :data:`KEPT_UP_BACKLOG`
    of the burst) the result says so: the rate is then the publisher's, a lower bound of ingest's.
    """
    messages = []
    for i in range(n):
        data = {"i": i, "text": "synthetic event of the load test " * 3}
        event = new_event(BURST_TYPE, source, data=data, subject="bench")
        headers = {MSG_ID_HEADER: event.id, "content-type": "application/cloudevents+json"}
        messages.append((subjects.service_event("ingest", event.type), event.to_json(), headers, event.time))
    lo = min(m[3] for m in messages if m[3] is not None)
    hi = max(m[3] for m in messages if m[3] is not None)
    conn = await asyncpg.connect(database_url, timeout=5)
    samples: list[tuple[float, int]] = []
    backlog = 0
    published = 0
    count = 0
    start = time.perf_counter()
    deadline = start + timeout_s

    async def poll() -> None:
        nonlocal backlog, count
        while count < n and time.perf_counter() < deadline:
            sent = published
            count = await conn.fetchval(
                "SELECT count(*) FROM events WHERE node_id = $3 AND time >= $1 AND time <= $2", lo, hi, source
            )
            samples.append((time.perf_counter() - start, count))
            backlog = max(backlog, sent - count)
            await asyncio.sleep(poll_s)

    poller = asyncio.create_task(poll())
    try:
        for subject, body, headers, _ in messages:
            await nc.publish(subject, body, headers=headers)
            published += 1
            if published % 500 == 0:
                await flushed(nc, 60)  # bounded: the server read what was sent so far
        await flushed(nc, 60)
        publish_s = time.perf_counter() - start
        await poller
    finally:
        if not poller.done():
            poller.cancel()
        await conn.close()
    out: dict[str, Any] = {
        "events": n,
        "publish_seconds": round(publish_s, 3),
        "publish_rate": round(n / publish_s, 1) if publish_s > 0 else None,
        "rows_visible": count,
        "max_backlog": backlog,
        "samples": samples,
    }
    if count == 0:
        out["na"] = (
            f"none of {n} synthetic events became visible within {timeout_s:.0f} s (is ingest running?)"
        )
        return out
    all_visible_s = samples[-1][0]
    out["seconds_to_last_row"] = round(all_visible_s, 3)
    out["end_to_end_rate"] = round(count / all_visible_s, 1) if all_visible_s > 0 else None
    sustained = sustained_rate(samples, n)
    out["sustained_rate"] = round(sustained, 1) if sustained else out["end_to_end_rate"]
    if count < n:
        out["note"] = f"only {count} of {n} rows visible after {timeout_s:.0f} s"
    elif backlog < KEPT_UP_BACKLOG * n:
        out["note"] = (
            f"ingest kept up with the harness's publisher (largest backlog {backlog} rows): "
            "the rate is the publisher's, a lower bound of ingest's"
        )
    return out
