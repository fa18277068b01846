"""Bad input never crashes ingest and is never silently dropped (invariant 4): bad frames and
events on ``WS /ws/ingest`` get reasons, malformed messages on the subjects become
``dead_letters`` rows with their reason and raw bytes, and the consumer keeps going."""

from __future__ import annotations

import json
from typing import Any

import pytest
from loom_protocol import RejectedMessage, subjects
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    event,
    fetch,
    fetchval,
    metric_value,
    publish,
    publish_raw,
    start_ingest,
    traceparent,
    wait_count,
    ws_url,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.component

SMALL_LIMIT = 4096


async def _ask(ws: ClientConnection, frame: str | bytes) -> dict[str, Any]:
    await ws.send(frame)
    return dict(json.loads(await ws.recv()))


def _wire(**kwargs: Any) -> dict[str, Any]:
    return event(**kwargs).model_dump(mode="json", exclude_none=True)


async def test_ws_ingest_answers_every_frame_and_stays_open(database_url: str, stack: Stack) -> None:
    ingest = await start_ingest(stack, database_url, LOOM_MAX_EVENT_BYTES=str(SMALL_LIMIT))
    # the process's metrics registry is shared by every in-process ingest: count from here
    rejected = await metric_value(ingest, "loom_ingest_ws_events_total", '{outcome="rejected"}')
    good = [_wire(data={"n": i}, task_id="ws-task", agent_id="ws-producer") for i in range(3)]
    async with connect(ws_url(ingest, "/ws/ingest")) as ws:
        bad_frames: list[tuple[str | bytes, str]] = [
            ("{not json", "frame is not valid JSON"),
            ("[1, 2]", "frame must be a JSON object, got an array"),
            ('"event_batch"', "frame must be a JSON object, got a string"),
            ('{"type": "events", "events": []}', "frame type must be 'event_batch', got 'events'"),
            ('{"events": []}', "frame type must be 'event_batch', got None"),
            (
                '{"type": "event_batch", "events": {"id": "x"}}',
                "'events' must be an array of events, got an object",
            ),
            ('{"type": "event_batch"}', "'events' must be an array of events, got null"),
            (b"\xff\xfe\x00", "binary frame is not UTF-8 JSON"),
        ]
        for frame, reason in bad_frames:
            answer = await _ask(ws, frame)
            assert answer == {"type": "error", "reason": answer["reason"]}, answer
            assert answer["reason"].startswith(reason), (frame, answer)

        assert await _ask(ws, json.dumps({"type": "event_batch", "events": []})) == {
            "type": "ack",
            "accepted": 0,
            "rejected": 0,
            "errors": [],
        }
        mixed = [
            good[0],
            "not an event",
            {"source": "/x", "specversion": "1.0", "type": "t"},
            {**_wire(), "traceparent": "00-zz-zz-01"},
            good[1],
            _wire(data={"blob": "x" * SMALL_LIMIT}),
            {**_wire(), "type": "bad*type"},
            {**_wire(), "specversion": "0.3"},
            {**_wire(), "Bad-Extension": 1},
            good[2],
        ]
        ack = await _ask(ws, json.dumps({"type": "event_batch", "events": mixed}))
        assert ack["type"] == "ack" and ack["accepted"] == 3 and ack["rejected"] == 7, ack
        reasons = {e["index"]: e["reason"] for e in ack["errors"]}
        assert sorted(reasons) == [1, 2, 3, 5, 6, 7, 8]
        assert reasons[1] == "an event must be a JSON object, got a string"
        assert "field 'id': Field required" in reasons[2]
        assert "traceparent" in reasons[3]
        assert f"over the limit of {SMALL_LIMIT} bytes" in reasons[5]
        assert "cannot be a subject" in reasons[6]
        assert "specversion" in reasons[7]
        assert "Bad-Extension" in reasons[8]

        # the same events again: accepted (JetStream deduplicates on Nats-Msg-Id), stored once
        again = await _ask(ws, json.dumps({"type": "event_batch", "events": good}))
        assert again == {"type": "ack", "accepted": 3, "rejected": 0, "errors": []}

    await wait_count(database_url, "SELECT count(*) FROM events", 3, 20)
    stored = await fetch(database_url, "SELECT id, (data->>'n')::int AS n, node_id FROM events ORDER BY n")
    assert [(r["id"], r["n"], r["node_id"]) for r in stored] == [
        (e["id"], i, "ws-producer") for i, e in enumerate(good)
    ]
    assert await metric_value(ingest, "loom_ingest_ws_events_total", '{outcome="rejected"}') == rejected + 7
    assert await fetchval(database_url, "SELECT count(*) FROM dead_letters") == 0


async def test_malformed_messages_become_dead_letters_and_the_consumer_goes_on(
    database_url: str, stack: Stack
) -> None:
    ingest = await start_ingest(stack, database_url, LOOM_MAX_EVENT_BYTES=str(SMALL_LIMIT))
    dead_letters = await metric_value(ingest, "loom_ingest_dead_letters_total", '{rejected_by="ingest"}')
    nc = await stack.nats()
    js = nc.jetstream()
    oversize = event(data={"blob": "y" * SMALL_LIMIT}).to_json()
    nul = event(data={"text": "a\u0000b"})  # valid JSON and CloudEvent; PostgreSQL refuses \u0000 in jsonb
    long_source = event(source="/" + "s" * 2000)
    forged = event(data={"text": "from w-2"}, instance_id="w-1", task_id="t-1")  # w-2 speaking as w-1
    corpus: list[tuple[str, bytes, str]] = [
        ("loom.event.garbage", b"\x00\xff\xfe garbage", "not valid JSON"),
        ("loom.event.array", b"[1, 2, 3]", "not a valid CloudEvent"),
        ("loom.event.hello", b'{"hello": "world"}', "not a valid CloudEvent: field 'id': Field required"),
        ("loom.event.v03", json.dumps({**_wire(), "specversion": "0.3"}).encode(), "specversion"),
        (
            "loom.event.big",
            oversize,
            f"message is {len(oversize)} bytes, over the limit of {SMALL_LIMIT} bytes",
        ),
        (subjects.instance_event("w-1", nul.type), nul.to_json(), "the database refused it"),
        ("loom.event.long", long_source.to_json(), "attribute 'source' is 2001 characters"),
        (f"loom.event.{forged.type}", forged.to_json(), "is not an event subject"),  # no sender named
        (
            subjects.instance_event("w-2", forged.type),
            forged.to_json(),
            "must name instance 'w-2', its sender, not 'w-1'",
        ),
        (subjects.task_status("t-1"), b"not a status", "not valid JSON"),
        (subjects.task_status("t-2"), b'{"taskId": "t-2"}', "not a valid task status message"),
        ("loom.task.unknown.x", b"{}", "unknown task subject"),
        (
            subjects.registry_member("up"),
            b'{"instanceId": "bad id!", "change": "up"}',
            "not a valid MemberChanged",
        ),
        (subjects.rejected("worker"), b"\x01\x02", "not valid JSON"),
        (subjects.rejected("worker"), b'{"reason": 1}', "not a valid RejectedMessage: field 'subject'"),
    ]
    # valid events around the poison so a batch holds both
    before = [event(data={"i": i}, agent_id="neighbour") for i in range(50)]
    after = [event(data={"i": i}, agent_id="neighbour") for i in range(50, 100)]
    await publish(js, before)
    for subject, payload, _ in corpus:
        await publish_raw(js, subject, payload)
    record = RejectedMessage(
        subject="loom.task.submitted.echo", reason="field 'targetAgent': required", raw=b"{}"
    )
    await publish_raw(js, subjects.rejected("dispatcher"), record.to_json())
    await publish(js, after)

    await wait_count(database_url, "SELECT count(*) FROM events WHERE node_id = 'neighbour'", 100, 30)
    await wait_count(database_url, "SELECT count(*) FROM dead_letters", len(corpus) + 1, 30)
    rows = await fetch(
        database_url, "SELECT subject, reason, raw, rejected_by, stream FROM dead_letters ORDER BY stream_seq"
    )
    by_rejector = {r["rejected_by"] for r in rows}
    assert by_rejector == {"ingest", "dispatcher"}
    ours = [r for r in rows if r["rejected_by"] == "ingest"]
    assert len(ours) == len(corpus)
    for subject, payload, reason in corpus:
        matches = [r for r in ours if r["subject"] == subject and bytes(r["raw"]) == payload]
        assert len(matches) == 1, (subject, [r["subject"] for r in ours])
        assert reason in matches[0]["reason"], (subject, matches[0]["reason"])
    theirs = next(r for r in rows if r["rejected_by"] == "dispatcher")
    assert theirs["subject"] == "loom.task.submitted.echo"
    assert theirs["reason"] == "field 'targetAgent': required"
    assert bytes(theirs["raw"]) == b"{}"
    assert await metric_value(
        ingest, "loom_ingest_dead_letters_total", '{rejected_by="ingest"}'
    ) == dead_letters + len(corpus)

    # nothing good was lost and ingest is still consuming
    assert await fetchval(database_url, "SELECT count(*) FROM events WHERE kind = 'event'") == 100
    late = event(data={"late": True}, traceparent=traceparent())
    await publish(js, [late])
    await wait_count(database_url, "SELECT count(*) FROM events WHERE id = $1", 1, 20, late.id)
