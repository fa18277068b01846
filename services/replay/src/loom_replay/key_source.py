"""Where replay reads the API keys stored at run time: the ``LOOM_API_KEYS`` bucket, over a NATS
connection of its own (replay uses NATS for nothing else), connected on first use and again
after a failure, so a broker that is away at start does not keep replay from serving."""

from __future__ import annotations

import asyncio

import nats
from loom_protocol.auth import API_KEYS_BUCKET
from loom_protocol.settings import NatsConnection
from nats.aio.client import Client
from nats.js.kv import KeyValue

_TIMEOUT_S = 5.0


class KeySource:
    def __init__(self, connection: NatsConnection) -> None:
        self._connection = connection
        self._nc: Client | None = None

    async def bucket(self) -> KeyValue:
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self._connection.servers,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                **self._connection.options,
            )
        return await asyncio.wait_for(self._nc.jetstream().key_value(API_KEYS_BUCKET), _TIMEOUT_S)

    async def aclose(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
