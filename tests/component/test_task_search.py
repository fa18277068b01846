"""Task search (GET /api/tasks) and the session view (GET /api/sessions/{id}) against a known set
of tasks. The tasks travel the real path: task messages (submitted, assigned, status) and
``llm.usage`` events are published on JetStream, ingest folds them into the ``tasks`` table and
the events hypertable, and the query service reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from loom_protocol import (
    MSG_ID_HEADER,
    ApprovalRequest,
    CloudEvent,
    Task,
    TaskStatus,
    TaskStatusChanged,
    assigned_msg_id,
    status_msg_id,
    subjects,
    submitted_msg_id,
)

from tests.integration.events_support import event, fresh_database, publish, start_pipeline, wait_count
from tests.integration.harness import AnyService, NatsServer, stack_of

pytestmark = pytest.mark.component

BASE = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
AGENTS = ("alpha", "beta", "gamma")
S = TaskStatus
STATUS_CYCLE = (
    S.COMPLETED,
    S.FAILED,
    S.RUNNING,
    S.PENDING,
    S.INPUT_REQUIRED,
    S.CANCELLED,
    S.DEAD,
    S.DISPATCHED,
    S.COMPLETED,
    S.COMPLETED,
)
TOPICS = ("Weather in PARIS", "stock prices", "100%_sure", "cooking")
TERMINAL = {S.COMPLETED, S.FAILED, S.CANCELLED, S.DEAD}
LONG_ANSWER = "long answer " + "x" * 500


@dataclass
class Spec:
    """One task of the data set and what the API must say about it."""

    task_id: str
    agent: str
    status: TaskStatus
    created: datetime
    session: str | None
    parent: str | None
    parameters: dict[str, Any]
    result: Any = None
    error: str | None = None
    usage: list[tuple[int, int, float]] = field(default_factory=list)  # (input, output, cost) per call

    @property
    def finished(self) -> datetime | None:
        return self.created + timedelta(seconds=3) if self.status in TERMINAL else None


def build() -> list[Spec]:
    specs = []
    for i in range(40):
        status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
        spec = Spec(
            task_id=f"ts-{i:03d}",
            agent=AGENTS[i % len(AGENTS)],
            status=status,
            # two tasks per second: the task id breaks the ties
            created=BASE + timedelta(seconds=i - i % 2),
            session=f"sess-{i % 4}" if i % 5 else None,
            parent="ts-000" if i in (5, 6, 7) else None,
            parameters={"prompt": f"question {i}", "topic": TOPICS[i % len(TOPICS)]},
            result={"answer": LONG_ANSWER if i == 0 else f"answer {i}"} if status == S.COMPLETED else None,
            error={S.FAILED: f"Timeout calling tool {i}", S.DEAD: "no instance", S.CANCELLED: "by user"}.get(
                status
            ),
        )
        if spec.session == "sess-1":
            spec.usage = [(10 * i, i, 0.01 * i), (5, 1, 0.5)]
        specs.append(spec)
    # a session whose tasks all finished
    for j in range(2):
        specs.append(
            Spec(
                task_id=f"done-{j}",
                agent="alpha",
                status=S.COMPLETED,
                created=BASE + timedelta(minutes=5, seconds=10 * j),
                session="sess-done",
                parent=None,
                parameters={"prompt": f"done {j}"},
                result="ok",
                usage=[(100, 10, 1.0)],
            )
        )
    return specs


SPECS = build()
BY_ID = {s.task_id: s for s in SPECS}
APPROVAL = ApprovalRequest(key="1.0", tool="shell", arguments={"cmd": "ls"}, requested_at=BASE)
SESSION_ONLY_USAGE = (7, 3, 0.25)  # an llm.usage event of sess-1 that belongs to no task


def newest_first(specs: list[Spec]) -> list[str]:
    return [s.task_id for s in sorted(specs, key=lambda s: (s.created, s.task_id), reverse=True)]


def messages(spec: Spec) -> list[tuple[str, bytes, str]]:
    """(subject, body, msg id) of what the dispatcher and a worker would publish for the task."""
    task = Task(
        task_id=spec.task_id,
        target_agent=spec.agent,
        parameters=spec.parameters,
        session_id=spec.session,
        parent_task_id=spec.parent,
        created_at=spec.created,
        updated_at=spec.created,
    )
    out = [(subjects.task_submitted(spec.agent), task.to_json(), submitted_msg_id(spec.task_id))]
    if spec.status == S.PENDING:
        return out
    assigned = task.model_copy(
        update={
            "status": S.DISPATCHED,
            "attempt": 1,
            "instance_id": "w-1",
            "updated_at": spec.created + timedelta(seconds=1),
        }
    )
    out.append((subjects.task_assigned("w-1"), assigned.to_json(), assigned_msg_id(spec.task_id, 1)))
    if spec.status == S.DISPATCHED:
        return out
    at = spec.created + timedelta(seconds=3 if spec.status in TERMINAL else 2)
    change = TaskStatusChanged.from_task(
        assigned,
        at=at,
        status=spec.status,
        result=spec.result,
        error=spec.error,
        final=spec.status in TERMINAL,
        approval=APPROVAL if spec.status == S.INPUT_REQUIRED else None,
    )
    out.append(
        (subjects.task_status(spec.task_id), change.to_json(), status_msg_id(spec.task_id, 1, spec.status))
    )
    return out


def usage_events() -> list[CloudEvent]:
    def usage(
        n: int, session: str | None, task_id: str | None, figures: tuple[int, int, float]
    ) -> CloudEvent:
        return event(
            "llm.usage",
            source="/workers/w-1/agents/alpha",
            agent_id="alpha",
            task_id=task_id,
            session_id=session,
            subject="llm:p/m",
            time=BASE + timedelta(seconds=n),
            data={
                "input_tokens": figures[0],
                "output_tokens": figures[1],
                "cost_usd": figures[2],
                "model": "m",
            },
        )

    events = [
        usage(n, s.session, s.task_id, figures)
        for n, (s, figures) in enumerate((s, f) for s in SPECS for f in s.usage)
    ]
    events.append(usage(0, "sess-1", None, SESSION_ONLY_USAGE))
    return events


@pytest.fixture(scope="module")
async def api(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AnyService]:
    """One stack for the module: the tests only read the data set."""
    async with (
        fresh_database() as database_url,
        stack_of(nats_server, tmp_path_factory.mktemp("task-search")) as stack,
    ):
        _, query = await start_pipeline(stack, database_url)
        nc = await stack.nats()
        js = nc.jetstream()
        sent = 0
        for spec in SPECS:
            for subject, body, msg_id in messages(spec):
                await js.publish(subject, body, headers={MSG_ID_HEADER: msg_id})
                sent += 1
        sent += await publish(js, usage_events())
        await wait_count(database_url, "SELECT count(*) FROM events", sent, 30)
        yield query


async def search(http: httpx.AsyncClient, api: AnyService, **params: Any) -> dict[str, Any]:
    resp = await http.get(f"{api.url}/api/tasks", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def walk(http: httpx.AsyncClient, api: AnyService, **params: Any) -> list[str]:
    """Every task id of a search, page after page."""
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        page = await search(http, api, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["tasks"]) <= int(params.get("limit", 50))
        ids += [t["taskId"] for t in page["tasks"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return ids
    raise AssertionError("more than 100 pages")


def where(predicate: Any) -> list[str]:
    return newest_first([s for s in SPECS if predicate(s)])


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({}, lambda s: True),
    ({"status": "completed"}, lambda s: s.status == S.COMPLETED),
    ({"status": "failed,dead"}, lambda s: s.status in (S.FAILED, S.DEAD)),
    ({"status": ["running", "input_required"]}, lambda s: s.status in (S.RUNNING, S.INPUT_REQUIRED)),
    ({"agent": "beta"}, lambda s: s.agent == "beta"),
    ({"agent": "agent:gamma"}, lambda s: s.agent == "gamma"),
    ({"session": "sess-2"}, lambda s: s.session == "sess-2"),
    ({"parent": "ts-000"}, lambda s: s.parent == "ts-000"),
    (
        {
            "since": (BASE + timedelta(seconds=10)).isoformat(),
            "until": (BASE + timedelta(seconds=20)).timestamp(),
        },
        lambda s: BASE + timedelta(seconds=10) <= s.created <= BASE + timedelta(seconds=20),
    ),
    (
        {"agent": "alpha", "status": "completed,failed", "session": "sess-1"},
        lambda s: s.agent == "alpha" and s.status in (S.COMPLETED, S.FAILED) and s.session == "sess-1",
    ),
    (
        {"agent": "alpha", "status": "completed"},
        lambda s: s.agent == "alpha" and s.status == S.COMPLETED,
    ),
    ({"q": "paris"}, lambda s: "paris" in str(s.parameters).lower()),
    ({"q": "TIMEOUT CALLING"}, lambda s: s.error is not None and "timeout calling" in s.error.lower()),
    ({"q": "answer 9"}, lambda s: s.result is not None and "answer 9" in str(s.result)),
    ({"q": "100%_"}, lambda s: "100%_" in str(s.parameters)),  # wildcards are taken literally
    ({"q": "0%_"}, lambda s: "0%_" in str(s.parameters)),
    ({"q": "no such words"}, lambda s: False),
]


@pytest.mark.parametrize(
    ("params", "predicate"), FILTERS, ids=[f"{i}-{'+'.join(p) or 'none'}" for i, (p, _) in enumerate(FILTERS)]
)
async def test_filters_return_exactly_the_matching_tasks_newest_first(
    api: AnyService, http: httpx.AsyncClient, params: dict[str, Any], predicate: Any
) -> None:
    expected = where(predicate)
    body = await search(http, api, limit=200, **params)
    assert [t["taskId"] for t in body["tasks"]] == expected
    assert body["total"] == len(expected) and body["nextCursor"] is None
    for t in body["tasks"]:
        spec = BY_ID[t["taskId"]]
        assert (t["targetAgent"], t["status"], t["sessionId"], t["parentTaskId"]) == (
            spec.agent,
            spec.status.value,
            spec.session,
            spec.parent,
        )


async def test_counts_are_per_status_under_every_filter_but_status(
    api: AnyService, http: httpx.AsyncClient
) -> None:
    body = await search(http, api, agent="alpha", status="completed", limit=1)
    alpha = [s for s in SPECS if s.agent == "alpha"]
    assert body["counts"] == {st.value: sum(1 for s in alpha if s.status == st) for st in TaskStatus}
    assert body["total"] == body["counts"]["completed"] == sum(s.status == S.COMPLETED for s in alpha)
    everything = await search(http, api, limit=1)
    assert everything["total"] == len(SPECS) == sum(everything["counts"].values())
    assert everything["counts"]["input_required"] == sum(1 for s in SPECS if s.status == S.INPUT_REQUIRED) > 0
    none = await search(http, api, q="no such words")
    assert none["tasks"] == [] and none["total"] == 0 and set(none["counts"].values()) == {0}


@pytest.mark.parametrize("limit", [1, 7, 40])
async def test_pages_follow_each_other_without_gaps_or_duplicates(
    api: AnyService, http: httpx.AsyncClient, limit: int
) -> None:
    assert await walk(http, api, limit=limit) == newest_first(SPECS)
    assert await walk(http, api, limit=limit, status="completed,failed", q="question") == where(
        lambda s: s.status in (S.COMPLETED, S.FAILED) and "question" in s.parameters["prompt"]
    )
    first = await search(http, api, limit=limit)
    assert first["total"] == len(SPECS)  # every page says how many there are in all


async def test_a_summary_has_previews_and_the_state(api: AnyService, http: httpx.AsyncClient) -> None:
    body = await search(http, api, q="long answer")
    (task,) = body["tasks"]
    assert task["taskId"] == "ts-000" and task["final"] is True and task["attempt"] == 1
    assert len(task["resultPreview"]) == 201 and task["resultPreview"].endswith("…")
    assert task["resultPreview"].startswith('{"answer": "long answer xxx')
    assert task["parametersPreview"] == '{"topic": "Weather in PARIS", "prompt": "question 0"}'
    assert task["durationS"] == 3.0 and task["finishedAt"] is not None
    full = (await http.get(f"{api.url}/api/tasks/ts-000")).json()["task"]
    assert full["result"] == {"answer": LONG_ANSWER}

    waiting = (await search(http, api, status="input_required"))["tasks"]
    assert waiting and all(t["pendingApproval"]["tool"] == "shell" for t in waiting)
    assert all(t["pendingApproval"] is None for t in (await search(http, api, status="running"))["tasks"])
    running = (await search(http, api, status="running", limit=1))["tasks"][0]
    assert running["durationS"] is None and running["finishedAt"] is None


async def test_a_session_lists_its_tasks_with_their_usage_and_totals(
    api: AnyService, http: httpx.AsyncClient
) -> None:
    resp = await http.get(f"{api.url}/api/sessions/sess-1")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    specs = sorted((s for s in SPECS if s.session == "sess-1"), key=lambda s: (s.created, s.task_id))
    assert [t["taskId"] for t in body["tasks"]] == [s.task_id for s in specs]
    assert body["sessionId"] == "sess-1" and body["truncated"] is False
    for t, s in zip(body["tasks"], specs, strict=True):
        usage = t["usage"]
        assert usage["llmCalls"] == len(s.usage)
        assert usage["inputTokens"] == sum(u[0] for u in s.usage)
        assert usage["outputTokens"] == sum(u[1] for u in s.usage)
        assert usage["costUsd"] == pytest.approx(sum(u[2] for u in s.usage))
        assert t["durationS"] == (3.0 if s.finished else None)
    totals = body["totals"]
    every = [u for s in specs for u in s.usage] + [SESSION_ONLY_USAGE]
    assert totals["tasks"] == len(specs)
    assert totals["counts"] == {st.value: n for st in TaskStatus if (n := sum(s.status == st for s in specs))}
    assert (totals["llmCalls"], totals["inputTokens"], totals["outputTokens"]) == (
        len(every),
        sum(u[0] for u in every),
        sum(u[1] for u in every),
    )
    assert totals["costUsd"] == pytest.approx(sum(u[2] for u in every))
    assert totals["endedAt"] is None and totals["durationS"] is None  # some tasks are still open
    assert datetime.fromisoformat(totals["startedAt"]) == specs[0].created

    done = (await http.get(f"{api.url}/api/sessions/sess-done")).json()
    assert [t["usage"]["costUsd"] for t in done["tasks"]] == [1.0, 1.0]
    assert done["totals"]["durationS"] == 10.0 + 3.0  # first created to last finished
    assert done["totals"]["counts"] == {"completed": 2}

    missing = await http.get(f"{api.url}/api/sessions/no-such-session")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found" and "no-such-session" in missing.text


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"status": "finished"}, "query.status", "unknown status 'finished'"),
        ({"status": "completed,bogus"}, "query.status", "unknown status 'bogus'"),
        ({"cursor": "not-a-cursor"}, "query.cursor", "cursor is not valid"),
        ({"cursor": "eyJ0IjoxfQ"}, "query.cursor", "cursor is not valid"),
        ({"limit": 0}, "query.limit", "greater than or equal to 1"),
        ({"limit": 10000}, "query.limit", "less than or equal to 200"),
        ({"limit": "many"}, "query.limit", "integer"),
        ({"since": "yesterday"}, "query.since", "datetime"),
        ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "query.since", "after until"),
        ({"q": "ab"}, "query.q", "at least 3 characters"),
        ({"q": "x" * 257}, "query.q", "at most 256 characters"),
        ({"q": "a\x00b"}, "query.q", "NUL"),
    ],
    ids=[
        "unknown-status",
        "unknown-status-in-list",
        "bad-cursor",
        "cursor-without-id",
        "limit-zero",
        "limit-10000",
        "limit-not-a-number",
        "bad-since",
        "since-after-until",
        "short-q",
        "long-q",
        "nul-in-q",
    ],
)
async def test_bad_parameters_get_422_with_the_error_body(
    api: AnyService, http: httpx.AsyncClient, params: dict[str, Any], field: str, reason: str
) -> None:
    resp = await http.get(f"{api.url}/api/tasks", params=params)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == [field]
    assert reason in error["message"], error


async def test_openapi_documents_the_endpoints(api: AnyService, http: httpx.AsyncClient) -> None:
    spec = (await http.get(f"{api.url}/openapi.json")).json()
    listing = spec["paths"]["/api/tasks"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "status",
        "agent",
        "session",
        "parent",
        "since",
        "until",
        "q",
        "limit",
        "cursor",
    }
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskPage")
    assert "/api/sessions/{session_id}" in spec["paths"]
