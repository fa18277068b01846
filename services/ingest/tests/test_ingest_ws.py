"""/ws/ingest frame handling with a fake JetStream publisher."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from loom_ingest.ws import handle_frame
from loom_protocol import MSG_ID_HEADER, new_event


class FakeJetStream:
    def __init__(self, outcome: str = "ack") -> None:
        self.outcome = outcome
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish_async(
        self, subject: str, payload: bytes = b"", wait_stall: float | None = None, **kw: Any
    ) -> Any:
        self.published.append((subject, payload, kw["headers"]))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.outcome == "ack":
            future.set_result(object())
        elif self.outcome == "error":
            future.set_exception(RuntimeError("no stream"))
        return future  # "hang": never resolved


async def ask(frame: Any, js: FakeJetStream | None = None, **kw: Any) -> dict[str, Any]:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    options = {"max_event_bytes": 4096, "max_events": 5, "timeout_s": 0.2, **kw}
    return await handle_frame(text, js or FakeJetStream(), **options)


def good(**kw: Any) -> dict[str, Any]:
    return new_event("agent.thought", "/p", data={"x": 1}, **kw).model_dump(mode="json", exclude_none=True)


async def test_valid_events_are_published_on_their_subject_with_their_id() -> None:
    js = FakeJetStream()
    events = [good(), good()]
    assert await ask({"type": "event_batch", "events": events}, js) == {
        "type": "ack",
        "accepted": 2,
        "rejected": 0,
        "errors": [],
    }
    assert [(s, h[MSG_ID_HEADER]) for s, _, h in js.published] == [
        ("loom.event.ingest.agent.thought", e["id"]) for e in events
    ]
    assert json.loads(js.published[0][1]) == events[0]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("nope", "frame is not valid JSON"),
        ("3", "frame must be a JSON object, got a number"),
        ({"type": "batch", "events": []}, "frame type must be 'event_batch'"),
        ({"type": "event_batch", "events": "x"}, "'events' must be an array of events, got a string"),
        ({"type": "event_batch", "events": [{}] * 6}, "a batch holds at most 5 events, this one has 6"),
    ],
)
async def test_bad_frames_get_an_error(frame: Any, reason: str) -> None:
    answer = await ask(frame)
    assert answer["type"] == "error" and answer["reason"].startswith(reason), answer


async def test_each_bad_event_is_reported_by_index() -> None:
    events = [good(), 5, {**good(), "type": "a b"}, {**good(), "data": {"x": "y" * 5000}}, good()]
    answer = await ask({"type": "event_batch", "events": events})
    assert (answer["accepted"], answer["rejected"]) == (2, 3)
    assert [e["index"] for e in answer["errors"]] == [1, 2, 3]
    assert answer["errors"][0]["reason"] == "an event must be a JSON object, got a number"
    assert "cannot be a subject" in answer["errors"][1]["reason"]
    assert "over the limit of 4096 bytes" in answer["errors"][2]["reason"]


async def test_unacknowledged_publishes_are_rejected_not_counted() -> None:
    failed = await ask({"type": "event_batch", "events": [good()]}, FakeJetStream("error"))
    assert failed["accepted"] == 0 and "not stored" in failed["errors"][0]["reason"]
    hung = await ask({"type": "event_batch", "events": [good()]}, FakeJetStream("hang"))
    assert hung["accepted"] == 0 and "did not acknowledge within 0.2s" in hung["errors"][0]["reason"]
