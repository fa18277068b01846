"""Reading the ``events`` hypertable (written by ingest; replay never writes to it).

Events of a selection (a trace, a task or a session, optionally a time window) are ordered
by ``(time, coalesce(seq, -1), id)`` and read in pages with keyset pagination on that key,
never with OFFSET and never whole: a 100k-event trace costs one page of memory at a time.
A selection is pinned to the rows ingested before the session was created (``as_of``), so
late events do not shift the indexes of an open session.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

# (time, coalesce(seq, -1), id): the total order of a selection's events
Key = tuple[datetime, int, str]

_ORDER = "time, coalesce(seq, -1), id"
# what the fold reads, under the CloudEvent attribute names: the fold takes these rows as they are
_FOLD_COLUMNS = (
    "time, coalesce(seq, -1) AS s, id, type, task_id AS taskid, session_id AS sessionid, "
    "agent_id AS agentid, parent_task_id AS parenttaskid, data"
)
_FULL_COLUMNS = (
    "time, coalesce(seq, -1) AS s, id, type, task_id, session_id, agent_id, parent_task_id, data, attributes"
)


@dataclass(frozen=True)
class Selection:
    """Which events a replay session covers."""

    trace_id: str | None = None
    task_id: str | None = None
    session_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    as_of: datetime | None = None

    def where(self, first_arg: int = 1) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${first_arg + len(args) - 1}"

        for column, value in (
            ("trace_id", self.trace_id),
            ("task_id", self.task_id),
            ("session_id", self.session_id),
        ):
            if value is not None:
                clauses.append(f"{column} = {arg(value)}")
        if self.start is not None:
            clauses.append(f"time >= {arg(self.start)}")
        if self.end is not None:
            clauses.append(f"time <= {arg(self.end)}")
        if self.as_of is not None:
            clauses.append(f"ingested_at <= {arg(self.as_of)}")
        return " AND ".join(clauses) or "TRUE", args

    def to_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Selection:
        def when(value: Any) -> datetime | None:
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        return cls(
            trace_id=raw.get("trace_id"),
            task_id=raw.get("task_id"),
            session_id=raw.get("session_id"),
            start=when(raw.get("start")),
            end=when(raw.get("end")),
            as_of=when(raw.get("as_of")),
        )


def key_to_json(key: Key) -> list[Any]:
    return [key[0].isoformat(), key[1], key[2]]


def key_from_json(raw: list[Any]) -> Key:
    return (datetime.fromisoformat(raw[0]), int(raw[1]), str(raw[2]))


def event_of(row: asyncpg.Record) -> dict[str, Any]:
    """The CloudEvent of a row: its attributes plus ``data`` (what ingest split apart).

    Rows read for folding only have the attributes the fold needs.
    """
    if "attributes" in row.keys() and isinstance(row["attributes"], dict):
        event = dict(row["attributes"])
    else:
        event = {name: row[name] for name in ("id", "type", "taskid", "sessionid", "agentid", "parenttaskid")}
    if row["data"] is not None:
        event["data"] = row["data"]
    return event


def key_of(row: asyncpg.Record) -> Key:
    return (row["time"], row["s"], row["id"])


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson: decoding the data of every event is most of the cost of folding a deep trace
    await conn.set_type_codec("jsonb", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog")


def _loopback_without_sslmode(url: str) -> bool:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return "sslmode" not in query and "ssl" not in query and parts.hostname in _LOOPBACK


async def open_pool(url: str, size: int) -> asyncpg.Pool:
    # TLS on loopback protects nothing and costs a third of reading a deep trace: off there
    # unless the URL asks for an sslmode
    options: dict[str, Any] = {"ssl": False} if _loopback_without_sslmode(url) else {}
    # min_size=0: the service starts (and /readyz says why it is not ready) while the database is down
    pool = await asyncpg.create_pool(
        url, min_size=0, max_size=size, init=_init_connection, command_timeout=60, **options
    )
    assert pool is not None
    return pool


class EventReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ready(self) -> str | None:
        """None when the events table can be read, else why not."""
        try:
            async with self._pool.acquire(timeout=2) as conn:
                found = await conn.fetchval("SELECT to_regclass('events') IS NOT NULL", timeout=2)
        except Exception as exc:
            return f"database: {type(exc).__name__}: {exc}"
        return None if found else "database: the events table does not exist yet (ingest creates it)"

    async def now(self) -> datetime:
        async with self._pool.acquire() as conn:
            value: datetime = await conn.fetchval("SELECT now()")
            return value

    async def count(self, selection: Selection) -> int:
        where, args = selection.where(1)
        async with self._pool.acquire() as conn:
            sql = f"SELECT count(*) FROM events WHERE {where}"  # noqa: S608 (placeholders only)
            value: int = await conn.fetchval(sql, *args)
            return value

    async def anchors(self, selection: Selection, every: int) -> tuple[int, list[Key]]:
        """The number of events of a selection and the keys of events 0, every, 2*every, ...

        One server-side pass (a window over the selection, only every ``every``-th key comes
        back), so the client never holds the selection.
        """
        where, args = selection.where(2)
        sql = f"""
            SELECT n, total, time, s, id FROM (
                SELECT time, coalesce(seq, -1) AS s, id,
                       row_number() OVER (ORDER BY {_ORDER}) - 1 AS n,
                       count(*) OVER () AS total
                FROM events WHERE {where}
            ) numbered
            WHERE n % $1 = 0 ORDER BY n
        """  # noqa: S608 (constants and placeholders only)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, every, *args)
        if not rows:
            return 0, []
        return int(rows[0]["total"]), [key_of(row) for row in rows]

    async def page(
        self,
        selection: Selection,
        start: Key | None,
        *,
        inclusive: bool,
        limit: int,
        full: bool = False,
        until: datetime | None = None,
    ) -> list[asyncpg.Record]:
        """Up to ``limit`` events of the selection from ``start`` on (keyset pagination).

        ``until`` (a time the page cannot go past, e.g. the next anchor's) bounds the scan
        even where the planner has no statistics yet (a freshly loaded chunk).
        """
        where, args = selection.where(1)
        after = ""
        if start is not None:
            n = len(args)
            op = ">=" if inclusive else ">"
            # split so that the (trace_id, time) index bounds the scan by time
            after = (
                f" AND time >= ${n + 1}"
                f" AND (time > ${n + 1} OR (coalesce(seq, -1), id) {op} (${n + 2}, ${n + 3}))"
            )
            args.extend(start)
        if until is not None:
            args.append(until)
            after += f" AND time <= ${len(args)}"
        columns = _FULL_COLUMNS if full else _FOLD_COLUMNS
        sql = f"SELECT {columns} FROM events WHERE {where}{after} ORDER BY {_ORDER} LIMIT {int(limit)}"  # noqa: S608
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def task_rows(self, task_id: str, limit: int) -> list[asyncpg.Record]:
        """A task's own rows (its events and its bus rows), in order; at most ``limit``."""
        sql = f"SELECT {_FULL_COLUMNS}, kind FROM events WHERE task_id = $1 ORDER BY {_ORDER} LIMIT $2"  # noqa: S608
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, task_id, limit))

    async def child_rows(self, trace_id: str, parent_task_id: str, limit: int) -> list[asyncpg.Record]:
        """The bus rows (submitted, status, dead) of a task's children, in order. Children share
        their parent's trace, which bounds the scan by the trace index."""
        sql = (
            f"SELECT {_FULL_COLUMNS}, kind FROM events "  # noqa: S608 (constants only)
            f"WHERE trace_id = $1 AND parent_task_id = $2 AND kind = 'task' ORDER BY {_ORDER} LIMIT $3"
        )
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, trace_id, parent_task_id, limit))

    async def count_task_rows(self, task_id: str) -> int:
        async with self._pool.acquire() as conn:
            value: int = await conn.fetchval("SELECT count(*) FROM events WHERE task_id = $1", task_id)
            return value
