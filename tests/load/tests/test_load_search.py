"""The pure parts of the task search benchmark: the data set, the scenarios, the timing loop
(against a fake query service) and the table."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from loom_load.search import (
    EVENT_COLUMNS,
    RARE_WORD,
    SIZES,
    STATUSES,
    TASK_COLUMNS,
    TERMINAL,
    Scenario,
    generate,
    migration_files,
    repo_root,
    scenarios,
    search_table,
    time_scenario,
)

NOW = datetime(2030, 1, 8, tzinfo=UTC)
KNOWN = {s for s, _ in STATUSES}


def column(row: tuple[object, ...], name: str) -> object:
    return row[TASK_COLUMNS.index(name)]


def test_the_data_set_is_deterministic_and_shaped_like_the_projection() -> None:
    data = generate(3000, seed=3, now=NOW)
    assert data.tasks == generate(3000, seed=3, now=NOW).tasks
    assert data.tasks != generate(3000, seed=4, now=NOW).tasks
    assert len(data.tasks) == 3000 and all(len(r) == len(TASK_COLUMNS) for r in data.tasks)
    assert all(len(r) == len(EVENT_COLUMNS) for r in data.events)
    assert len({column(r, "task_id") for r in data.tasks}) == 3000
    created = [column(r, "created_at") for r in data.tasks]
    assert created == sorted(created)  # type: ignore[type-var]
    assert NOW - timedelta(days=7) <= data.oldest <= data.newest <= NOW
    statuses = Counter(column(r, "status") for r in data.tasks)
    assert set(statuses) == KNOWN
    assert 0.6 < statuses["completed"] / 3000 < 0.8
    for row in data.tasks:
        terminal = column(row, "status") in TERMINAL
        assert (column(row, "finished_at") is not None) == terminal
        assert (column(row, "pending_approval") is not None) == (column(row, "status") == "input_required")
        assert (column(row, "result") is not None) == (column(row, "status") == "completed")
    # sessions and parents offered to the scenarios are ones that exist
    sessions = {column(r, "session_id") for r in data.tasks} - {None}
    assert set(data.sessions) == sessions
    ids = {column(r, "task_id") for r in data.tasks}
    assert data.parents and set(data.parents) <= ids
    assert {e[EVENT_COLUMNS.index("session_id")] for e in data.events} <= sessions


def test_the_rare_word_is_rare() -> None:
    data = generate(10_000, now=NOW)
    rare = sum(RARE_WORD in str(column(r, "parameters")) for r in data.tasks)
    assert 0 < rare < 40


def test_every_scenario_asks_something_the_api_accepts() -> None:
    data = generate(500, now=NOW)
    for scenario in scenarios(data):
        for i in range(5):
            params = scenario.params(i)
            path = scenario.path(i)
            assert path == "/api/tasks" or path.startswith("/api/sessions/sess-")
            for status in str(params.get("status", "")).split(","):
                assert not status or status in KNOWN
            assert "q" not in params or len(params["q"]) >= 3
            if "since" in params:
                assert datetime.fromisoformat(params["since"]).timestamp() < params["until"]
            assert params.get("limit", 50) <= 200


def test_migrations_are_read_from_the_repository_in_order() -> None:
    files = migration_files(repo_root())
    assert [f.name[:4] for f in files] == [f"{i:04d}" for i in range(1, len(files) + 1)]
    assert files[0].name == "0001_events.sql" and any("task_search" in f.name for f in files)


def fake_query(pages: int, fail_every: int = 0) -> httpx.MockTransport:
    """Answers task pages: ``pages`` of them in a chain of cursors, a 503 every ``fail_every``."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params.get("cursor"))
        if fail_every and len(seen) % fail_every == 0:
            return httpx.Response(503, json={"error": {"code": "x", "message": "busy"}})
        at = int(request.url.params.get("cursor") or 0)
        after = str(at + 1) if at + 1 < pages else None
        return httpx.Response(200, json={"tasks": [{"taskId": f"t{at}"}] * 2, "nextCursor": after})

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


def test_a_paging_scenario_follows_the_cursors_and_counts_errors() -> None:
    transport = fake_query(pages=4, fail_every=5)

    async def go() -> dict[str, object]:
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            pages = Scenario("pages", lambda i: {"status": "completed"}, follow_cursor=True)
            return await time_scenario(client, pages, 20, time.perf_counter() + 30)

    out = asyncio.run(go())
    seen = transport.seen  # type: ignore[attr-defined]
    assert len(seen) == 23  # 3 untimed, then 20
    assert seen[:5] == [None, "1", "2", "3", None]  # the chain, then from the first page again
    assert out["errors"] == {"HTTP 503": 4}
    assert out["count"] == 16 and out["rows_per_answer"] == 2.0  # failed requests are not timed
    assert out["p50_ms"] is not None and "note" not in out


def test_a_scenario_stops_at_the_deadline() -> None:
    async def go() -> dict[str, object]:
        transport = fake_query(pages=1)
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            return await time_scenario(client, Scenario("x", lambda i: {}), 1000, time.perf_counter() - 1)

    out = asyncio.run(go())
    assert out["count"] == 0 and out["note"] == "time budget spent"


@pytest.mark.parametrize("profile", sorted(SIZES))
def test_every_profile_benchmarks_at_least_10k_tasks_in_bounded_time(profile: str) -> None:
    size = SIZES[profile]
    assert size.tasks >= 10_000 and size.requests > 0 and size.max_seconds <= 240


def test_the_table_shows_every_scenario() -> None:
    result = {
        "requests_per_scenario": 10,
        "dataset": {"tasks": 10_000, "trigram_index": True},
        "scenarios": [
            {"name": "a", "count": 10, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0},
            {"name": "b", "note": "skipped: time budget spent"},
        ],
    }
    table = search_table(result)
    assert table.row_count == 2
    assert "10,000 tasks" in str(table.title)


def test_the_repository_is_found_from_the_harness() -> None:
    assert (repo_root() / "services" / "query").is_dir()
