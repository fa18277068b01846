"""Where replay reads the API keys stored at run time: the ``LOOM_API_KEYS`` bucket, over a NATS
connection of its own (replay uses NATS for nothing else), connected on first use and again
after a failure, so a broker that is away at start does not keep replay from serving."""

from __future__ import annotations

from collections.abc import Mapping

import nats
from loom_nats import latest_values
from loom_protocol.auth import API_KEYS_BUCKET
from loom_protocol.settings import NatsConnection
from nats.aio.client import Client

_TIMEOUT_S = 5.0


class KeySource:
    def __init__(self, connection: NatsConnection) -> None:
        self._connection = connection
        self._nc: Client | None = None

    async def values(self) -> Mapping[str, bytes]:
        """What the bucket holds now (SHA-256 → record)."""
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self._connection.servers,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                **self._connection.options,
            )
        return await latest_values(self._nc.jetstream(), API_KEYS_BUCKET, timeout_s=_TIMEOUT_S)

    async def aclose(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
