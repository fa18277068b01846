"""Answer chunks of streaming tasks on the live feed, without a server."""

from __future__ import annotations

import json

from loom_protocol import TaskStreamChunk
from loom_query.live import Client, LiveFeed, LiveFilters


def test_chunks_go_to_clients_whose_filters_take_task_stream_of_their_task() -> None:
    feed = LiveFeed(queue_size=10)
    by_task, by_type, other_type, everything = (Client(None, 10) for _ in range(4))  # type: ignore[arg-type]
    by_task.filters = LiveFilters.model_validate({"task_id": "t1"})
    by_type.filters = LiveFilters.model_validate({"event_type": "task.*"})
    other_type.filters = LiveFilters.model_validate({"event_type": "agent.*"})
    feed.clients |= {by_task, by_type, other_type, everything}
    feed.publish_chunk(TaskStreamChunk(task_id="t1", index=0, delta="Hel").to_json())
    feed.publish_chunk(TaskStreamChunk(task_id="t2", index=0, delta="other").to_json())
    feed.publish_chunk(b"not json")
    feed.publish_chunk(b'{"no": "task id"}')

    def deltas(client: Client) -> list[str]:
        frames = [json.loads(frame) for frame in client.queue]
        assert {frame["type"] for frame in frames} <= {"chunk"}
        return [frame["data"]["delta"] for frame in frames]

    assert deltas(by_task) == ["Hel"]
    assert deltas(by_type) == deltas(everything) == ["Hel", "other"]
    assert deltas(other_type) == []
