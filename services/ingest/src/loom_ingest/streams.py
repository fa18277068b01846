"""Declare the JetStream streams of loom_protocol (idempotent: create, or update to match)."""

from __future__ import annotations

from loom_protocol import ALL_STREAMS, StreamSpec
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError


def _config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy(spec.retention),
        storage=StorageType(spec.storage),
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=spec.max_msg_size,
    )


async def ensure_streams(js: JetStreamContext) -> None:
    for spec in ALL_STREAMS:
        config = _config(spec)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
