"""The live feed: emit → WebSocket client latency on the query service's ``/ws/events``.

The client connects, sends ``{"filters": {}}`` and takes every CloudEvent it is sent; the
latency of one event is its receipt time minus its ``time``. The message shape is not fixed
yet, so events are found wherever they sit: a bare event, a list, or an object holding
``event`` / ``events`` / ``data`` / ``batch`` (the query service sends
``{"type": "event", "data": <event>}``, and ``{"type": "dropped", "count": n}`` when it had to
drop events for a slow client: counted). An absent endpoint gives ``n/a`` and why. The API key,
when one is set, goes in the handshake's ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import websockets

from .observe import parse_time, phase_of
from .stats import Latency

_CONTAINERS = ("events", "event", "data", "batch", "items", "payload")


def find_events(message: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """CloudEvent-looking objects (an ``id``, a ``type`` and a ``time``) anywhere in ``message``."""
    if depth > 4:
        return
    if isinstance(message, list):
        for item in message:
            yield from find_events(item, depth + 1)
    elif isinstance(message, dict):
        if isinstance(message.get("id"), str) and "type" in message and isinstance(message.get("time"), str):
            yield message
            return
        for key in _CONTAINERS:
            if key in message:
                yield from find_events(message[key], depth + 1)


class LiveFeed:
    def __init__(
        self, url: str, prefix: str, burst_source: str, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})  # the API key, if any (Authorization: Bearer)
        self.prefix = prefix
        self.burst_source = burst_source
        self.latency = Latency()  # this run's task events
        self.burst_latency = Latency()  # the ingest burst's synthetic events
        self.by_phase: dict[str, Latency] = {}  # this run's task events by the phase of their task
        self.messages = 0
        self.events = 0
        self.ours = 0
        self.dropped = 0  # events the server said it dropped for this client ({"type": "dropped"})
        self.connected = False
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.listened_to: list[str] = []  # what each connection listened to

    @property
    def listening(self) -> bool:
        return self._task is not None

    async def start(self, connect_timeout: float = 5.0, during: str = "the run") -> None:
        """Connect (again, after :meth:`stop`): the figures add up over every connection, and
        ``during`` names what this connection listens to (``summary()["listened_to"]``)."""
        if self._task is not None:
            return
        self.listened_to.append(during)
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(connect_timeout))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=connect_timeout + 1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, connect_timeout: float) -> None:
        try:
            async with websockets.connect(
                self.url, additional_headers=self.headers, open_timeout=connect_timeout, max_size=None
            ) as ws:
                await ws.send(json.dumps({"filters": {}}))
                self.connected = True
                self._ready.set()
                async for raw in ws:
                    received = time.time()
                    self.messages += 1
                    try:
                        message = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(message, dict) and message.get("type") == "dropped":
                        count = message.get("count")
                        self.dropped += count if isinstance(count, int) else 0
                        continue
                    for event in find_events(message):
                        self._take(event, received)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any failure to connect or read means n/a
            if not self.connected:
                self.error = f"cannot connect to {self.url}: {type(exc).__name__}: {str(exc)[:160]}"
            else:
                self.error = f"connection to {self.url} ended: {type(exc).__name__}: {str(exc)[:160]}"
        finally:
            self._ready.set()

    def _take(self, event: dict[str, Any], received: float) -> None:
        self.events += 1
        at = parse_time(event.get("time"))
        if at is None:
            return
        if event.get("source") == self.burst_source:
            self.burst_latency.record(received - at)
            return
        ids = [i for i in (event.get("taskid"), event.get("parenttaskid")) if isinstance(i, str)]
        ours = [i for i in ids if i.startswith(self.prefix)]
        if ours:
            self.ours += 1
            self.latency.record(received - at)
            phase = phase_of(ours[0], self.prefix)
            self.by_phase.setdefault(phase, Latency()).record(received - at)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url,
            "connected": self.connected,
            "messages": self.messages,
            "events": self.events,
            "events_of_this_run": self.ours,
            "dropped_by_server": self.dropped,
            "listened_to": list(self.listened_to),
            "latency": self.latency.summary(),
            "cdf": self.latency.cdf(),
        }
        if self.burst_latency.count:
            out["burst_latency"] = self.burst_latency.summary()
        out["by_phase"] = {phase: latency.summary() for phase, latency in sorted(self.by_phase.items())}
        if self.error:
            out["error"] = self.error
        if self.latency.count == 0:
            out["na"] = self.error or "connected, but no event of this run arrived on the feed"
        return out
