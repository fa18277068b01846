"""The JetStream key-value bucket the API keys created at run time are stored in."""

from __future__ import annotations

import asyncio

from loom_protocol.auth import API_KEYS_BUCKET
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

_TIMEOUT_S = 5.0


async def open_key_bucket(js: JetStreamContext, replicas: int) -> KeyValue:
    """The ``LOOM_API_KEYS`` bucket, created where missing (one that exists stays as it is)."""
    config = KeyValueConfig(
        bucket=API_KEYS_BUCKET,
        description="Loom API keys: SHA-256 of the key -> its record (name, scopes)",
        history=1,
        storage=StorageType.FILE,
        replicas=replicas,
    )
    try:
        return await asyncio.wait_for(js.create_key_value(config), _TIMEOUT_S)
    except BadRequestError:
        return await asyncio.wait_for(js.key_value(API_KEYS_BUCKET), _TIMEOUT_S)
