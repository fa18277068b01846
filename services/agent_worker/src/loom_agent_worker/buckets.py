"""The worker's JetStream key-value buckets (session memory, task journals): created where
missing, bound to as they are otherwise."""

from __future__ import annotations

import asyncio
import logging

from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 1024 * 1024  # NATS' default max_payload


async def open_bucket(
    js: JetStreamContext,
    bucket: str,
    *,
    description: str,
    ttl_s: float,
    timeout_s: float,
    replicas: int = 1,
) -> KeyValue:
    """The bucket ``bucket``: history 1, file storage, keys expiring ``ttl_s`` after their last
    write (0 keeps them), ``replicas`` copies on a cluster. One that exists with another
    configuration is used as it is (logged), never changed."""
    config = KeyValueConfig(
        bucket=bucket,
        description=description,
        history=1,
        ttl=ttl_s or None,
        storage=StorageType.FILE,
        max_value_size=MAX_VALUE_BYTES,
        replicas=replicas,
    )
    try:
        return await asyncio.wait_for(js.create_key_value(config), timeout_s)
    except BadRequestError as exc:
        log.warning("bucket %s left as it is: %s", bucket, exc)
        return await asyncio.wait_for(js.key_value(bucket), timeout_s)
