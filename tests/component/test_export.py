"""Data leaves Loom as easily as it enters: a calculator task's trace exported from the query API as
OTLP/JSON and ingested by a fresh Loom (its own NATS account and database) gives the same LLM and
tool events; the same trace as CloudEvents JSON lines; bad requests are 4xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.component.test_llm_path import MODEL, TOKENS, run_calculator
from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    fetch,
    fresh_database,
    start_ingest,
    wait_count,
)
from tests.integration.harness import NatsServer, Stack, stack_of

pytestmark = pytest.mark.component

_GENAI = ("llm.request", "llm.usage", "tool.call", "tool.result")
_ROWS = (
    "SELECT type, subject, agent_id, input_tokens, output_tokens, data FROM events "
    "WHERE kind = 'event' AND type = ANY($1::text[]) ORDER BY time, type"
)


def _facts(rows: list[Any]) -> list[tuple[Any, ...]]:
    """What must survive the round trip: type, model, tokens, tool name, agent, in order."""
    out = []
    for r in rows:
        data = r["data"] if isinstance(r["data"], dict) else json.loads(r["data"])
        out.append(
            (
                r["type"],
                data.get("model"),
                r["input_tokens"],
                r["output_tokens"],
                data.get("name"),
                r["agent_id"],
            )
        )
    return out


async def test_a_trace_exported_as_otlp_json_ingests_into_a_fresh_loom_as_the_same_events(
    database_url: str, stack: Stack, http: httpx.AsyncClient, nats_server: NatsServer, tmp_path: Path
) -> None:
    task, events, query, _ = await run_calculator(stack, http, database_url, capture=True)
    trace_id = events[0]["traceid"]
    assert {e["traceid"] for e in events} == {trace_id}

    resp = await http.get(f"{query.url}/api/export/otlp", params={"trace_id": trace_id})
    assert resp.status_code == 200, resp.text
    assert "loom-export-truncated" not in resp.headers
    export = resp.json()
    spans = [s for r in export["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
    names = sorted(s["name"] for s in spans)
    assert names == sorted(
        ["invoke_agent calculator", "execute_tool calculator"] + [f"chat {MODEL}"] * len(TOKENS)
    ), names
    assert {s["traceId"] for s in spans} == {trace_id}
    agent = next(s for s in spans if s["name"] == "invoke_agent calculator")
    assert all(s["parentSpanId"] == agent["spanId"] for s in spans if s is not agent)
    chat = next(s for s in spans if s["name"].startswith("chat "))
    attributes = {a["key"]: a["value"] for a in chat["attributes"]}
    assert attributes["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert attributes["gen_ai.request.model"] == {"stringValue": MODEL}
    assert {"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.input.messages"} <= set(
        attributes
    )

    original = _facts(await fetch(database_url, _ROWS, list(_GENAI)))
    assert len(original) == 2 * len(TOKENS) + 2
    assert [(f[1], f[2], f[3]) for f in original if f[0] == "llm.usage"] == [(MODEL, i, o) for i, o in TOKENS]
    async with fresh_database() as other_url, stack_of(nats_server, tmp_path / "other") as other:
        ingest = await start_ingest(other, other_url, "ingest-other")
        for _ in range(2):  # the same export twice: the span ids make the copy harmless
            sent = await http.post(f"{ingest.url}/v1/traces", json=export)
            assert sent.status_code == 200, sent.text
            assert sent.json() == {}, sent.text  # no span rejected
        await wait_count(
            other_url, "SELECT count(*) FROM events WHERE trace_id = $1", len(original) + 1, 20, trace_id
        )
        copied = _facts(await fetch(other_url, _ROWS, list(_GENAI)))
        answers = await fetch(other_url, "SELECT agent_id FROM events WHERE type = 'agent.answer'")
        await other.stop()
    assert copied == original
    assert [r["agent_id"] for r in answers] == ["calculator"]
    assert sorted(e["type"] for e in events if e["type"] in _GENAI) == sorted(f[0] for f in copied)


async def test_cloudevents_lines_of_a_trace_and_of_a_time_range(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    task, events, query, _ = await run_calculator(stack, http, database_url, capture=False)
    trace_id = events[0]["traceid"]
    resp = await http.get(f"{query.url}/api/export/cloudevents", params={"trace_id": trace_id.upper()})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert sorted(e["id"] for e in lines) == sorted(e["id"] for e in events)
    assert [e["time"] for e in lines] == sorted(e["time"] for e in lines)
    assert all(e["specversion"] == "1.0" for e in lines)

    # a time range, bounded by limit
    times = sorted(e["time"] for e in events)
    bounded = await http.get(
        f"{query.url}/api/export/cloudevents", params={"since": times[0], "until": times[-1], "limit": 5}
    )
    assert bounded.status_code == 200, bounded.text
    assert len(bounded.text.splitlines()) == 5
    whole = await http.get(f"{query.url}/api/export/otlp", params={"since": times[0], "limit": 3})
    assert whole.status_code == 200 and whole.headers["loom-export-truncated"] == "true"

    for params in (
        {},
        {"trace_id": "xyz"},
        {"trace_id": "0" * 31},
        {"since": "not a time"},
        {"since": times[-1], "until": times[0]},
        {"trace_id": trace_id, "limit": 0},
        {"trace_id": trace_id, "limit": 10**9},
        {"trace_id": trace_id + "\x00"},
    ):
        for kind in ("otlp", "cloudevents"):
            bad = await http.get(f"{query.url}/api/export/{kind}", params=params)
            assert bad.status_code == 422, (kind, params, bad.text)
            assert bad.json()["error"]["code"], bad.text
    empty = await http.get(f"{query.url}/api/export/otlp", params={"trace_id": "1" * 32})
    assert empty.status_code == 200 and empty.json() == {"resourceSpans": []}
