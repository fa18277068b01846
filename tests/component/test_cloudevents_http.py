"""``POST /api/events``: the official ``cloudevents`` SDK's HTTP binding (structured and binary
mode) and a batch of its JSON-format events reach TimescaleDB; bad events get the reasons
``/ws/ingest`` gives, each answered as the binding and the ack say."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    fetch,
    start_ingest,
    traceparent,
    wait_count,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.component

_BY_TASK = "SELECT count(*) FROM events WHERE task_id = $1"


def _event(task: str, kind: str = "agent.thought", **extensions: Any) -> SdkEvent:
    attributes = {
        "id": uuid.uuid4().hex,
        "source": "/tests/ce-sdk",
        "type": kind,
        "specversion": "1.0",
        "taskid": task,
        "agentid": "ce-producer",
        "traceparent": traceparent(),
        **extensions,
    }
    return SdkEvent(attributes, {"content": f"thought of {task}"})


async def test_cloudevents_sdk_structured_batched_and_binary(database_url: str, stack: Stack) -> None:
    await stack.nats()
    ingest = await start_ingest(stack, database_url)
    url = f"{ingest.url}/api/events"
    task = f"ce-{uuid.uuid4().hex[:8]}"
    fmt = JSONFormat()
    async with httpx.AsyncClient(timeout=10) as client:
        structured = to_structured(_event(task), fmt)
        resp = await client.post(url, headers=structured.headers, content=structured.body)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"type": "ack", "accepted": 1, "rejected": 0, "errors": []}

        binary_event = _event(task, "tool.call")
        binary = to_binary(binary_event, fmt)
        assert "ce-specversion" in {k.lower() for k in binary.headers}
        resp = await client.post(url, headers=binary.headers, content=binary.body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 1

        batch = [json.loads(fmt.write(_event(task))) for _ in range(3)]
        batch.insert(1, {"id": "x", "specversion": "1.0", "type": "agent.thought"})  # no source
        resp = await client.post(
            url, content=json.dumps(batch), headers={"content-type": "application/cloudevents-batch+json"}
        )
        assert resp.status_code == 200, resp.text
        ack = resp.json()
        assert (ack["accepted"], ack["rejected"]) == (3, 1), ack
        assert ack["errors"][0]["index"] == 1 and "source" in ack["errors"][0]["reason"]

        # the same structured event again: answered 200, stored once
        resp = await client.post(url, headers=structured.headers, content=structured.body)
        assert resp.status_code == 200, resp.text

        # refusals: a bad single event is 400 with the ack, unreadable bodies 400, others 415
        bad = {"id": "y", "source": "/s", "specversion": "0.3", "type": "agent.thought"}
        resp = await client.post(url, json=bad, headers={"content-type": "application/cloudevents+json"})
        assert resp.status_code == 400 and resp.json()["rejected"] == 1, resp.text
        assert "specversion" in resp.json()["errors"][0]["reason"]
        resp = await client.post(url, content=b"{", headers={"content-type": "application/cloudevents+json"})
        assert resp.status_code == 400 and "not valid JSON" in resp.json()["reason"]
        resp = await client.post(
            url, content=b"{}", headers={"content-type": "application/cloudevents-batch+json"}
        )
        assert resp.status_code == 400 and "JSON array" in resp.json()["reason"]
        resp = await client.post(url, json={"a": 1})
        assert resp.status_code == 415, resp.text
        resp = await client.post(
            url,
            content=b"{oops",
            headers={
                "ce-specversion": "1.0",
                "ce-id": "z",
                "ce-source": "/s",
                "ce-type": "t",
                "content-type": "application/json",
            },
        )
        assert resp.status_code == 400 and "not valid JSON" in resp.json()["reason"]

    await wait_count(database_url, _BY_TASK, 5, 20, task)
    rows = await fetch(database_url, "SELECT type, agent_id, data FROM events WHERE task_id = $1", task)
    assert sorted(r["type"] for r in rows) == ["agent.thought"] * 4 + ["tool.call"]
    assert {r["agent_id"] for r in rows} == {"ce-producer"}
    binary_row = next(r for r in rows if r["type"] == "tool.call")
    assert json.loads(binary_row["data"]) == {"content": f"thought of {task}"}
