"""The live feed: emit → WebSocket client latency on the query service's ``/ws/events``.

Its figure comes from :func:`paced_events`: synthetic events published at a steady rate (1,000/s
by default), each timestamped as it is sent, while the client listens; the events of the run's
tasks it hears (the open loop's) are reported beside it.

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
from collections.abc import Callable, Iterator
from typing import Any

import websockets
from loom_protocol import MSG_ID_HEADER, new_event, subjects

from .observe import parse_time, phase_of
from .stats import Latency

PACED_TYPE = "bench.live"
"""The type of :func:`paced_events`' synthetic events."""


def paced_source(burst_source: str) -> str:
    """The source of :func:`paced_events`' events: the run's synthetic source, ``/live`` added."""
    return f"{burst_source}/live"


async def paced_events(nc: Any, source: str, rate: float, seconds: float) -> dict[str, Any]:
    """Publish ``rate × seconds`` synthetic CloudEvents at ``rate``/s (core NATS, on ingest's event
    subject, which the events stream stores like any other), each one's ``time`` taken as it is
    built; the sending keeps to the schedule every 5 ms. Returns what was sent and how fast."""
    n = max(int(rate * seconds), 1)
    subject = subjects.service_event("ingest", PACED_TYPE)
    sent = 0
    start = time.perf_counter()
    while sent < n:
        due = min(n, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            event = new_event(PACED_TYPE, source, data={"i": sent}, subject="bench")
            await nc.publish(subject, event.to_json(), headers={MSG_ID_HEADER: event.id})
            sent += 1
        await asyncio.sleep(0.005)
    await nc.flush(timeout=10)
    elapsed = time.perf_counter() - start
    return {"events": n, "target_rate": rate, "seconds": round(elapsed, 3), "rate": round(n / elapsed, 1)}


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
        self.paced_source = paced_source(burst_source)
        self.latency = Latency()  # this run's task events
        self.paced_latency = Latency()  # paced_events' synthetic events: the figure's
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

    async def paced_heard(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` of :func:`paced_events`' events arrived (False after ``timeout_s``:
        the rest were dropped or late, and the figures say how many arrived)."""
        return await self._until(lambda: self.paced_latency.count >= count, timeout_s)

    def heard_of(self, phase: str) -> int:
        """How many events of ``phase``'s tasks the feed brought so far."""
        heard = self.by_phase.get(phase)
        return 0 if heard is None else heard.count

    async def phase_heard(self, phase: str, expected: Callable[[], int], timeout_s: float) -> bool:
        """Wait until the feed brought as many events of ``phase``'s tasks as ``expected()`` says
        were sent (what the harness heard of them on NATS, read again at every check); False
        after ``timeout_s`` (the rest were dropped or late, and the figures say how many came)."""
        return await self._until(lambda: self.heard_of(phase) >= expected(), timeout_s)

    async def _until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``done()``, checked every 20 ms; False at ``timeout_s`` or without a connection."""
        deadline = time.perf_counter() + timeout_s
        while not done():
            if time.perf_counter() >= deadline or self._task is None or self._task.done():
                return False
            await asyncio.sleep(0.02)
        return True

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
        source = event.get("source")
        if source == self.paced_source:
            self.paced_latency.record(received - at)
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
        if self.paced_latency.count:
            out["paced_latency"] = self.paced_latency.summary()
            out["paced_cdf"] = self.paced_latency.cdf()
        out["by_phase"] = {phase: latency.summary() for phase, latency in sorted(self.by_phase.items())}
        if self.error:
            out["error"] = self.error
        if self.latency.count == 0 and self.paced_latency.count == 0:
            out["na"] = self.error or "connected, but no event of this run arrived on the feed"
        return out
