"""The start-up stream requests (``loom_protocol.stream_create_request``) against a real
nats-server: they create the streams, are idempotent, and leave a stream configured otherwise
as it is, with error 10058."""

from __future__ import annotations

from loom_protocol import ALL_STREAMS, TASKS_STREAM, stream_create_error, stream_create_request
from nats.aio.client import Client
from nats.js.api import StreamConfig


async def _create_all(nc: Client) -> list[str | None]:
    return [
        stream_create_error((await nc.request(*stream_create_request(s), timeout=5)).data)
        for s in ALL_STREAMS
    ]


async def test_streams_are_created_and_creating_them_again_is_idempotent(nc: Client) -> None:
    assert await _create_all(nc) == [None] * len(ALL_STREAMS)
    assert await _create_all(nc) == [None] * len(ALL_STREAMS)
    info = await nc.jetstream().stream_info(TASKS_STREAM.name)
    assert info.config.subjects == list(TASKS_STREAM.subjects)
    assert info.config.duplicate_window == TASKS_STREAM.duplicate_window_s


async def test_a_stream_configured_otherwise_is_left_as_it_is(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=TASKS_STREAM.name, subjects=list(TASKS_STREAM.subjects), max_msgs=7)
    )
    errors = await _create_all(nc)
    assert errors[0] == "stream name already in use with a different configuration (10058)"
    assert errors[1:] == [None] * (len(ALL_STREAMS) - 1)
    assert (await js.stream_info(TASKS_STREAM.name)).config.max_msgs == 7
