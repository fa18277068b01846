"""``WS /api/replay/{id}/play``: the session's events with their original spacing / speed.

Server -> client (JSON):

- ``{"type": "started", "sessionId", "index", "total", "speed", "breakpoints"}``
- ``{"type": "event", "index", "total", "event"}`` for each event, in order
- ``{"type": "paused" | "resumed", "index"}``, ``{"type": "seeked", "index"}``,
  ``{"type": "speed", "speed"}``, ``{"type": "breakpoints", "breakpoints"}``
- ``{"type": "breakpoint", "index", "event", "breakpoint", "state"}``: an event matched a
  breakpoint; play pauses after sending it (``state`` is the reconstructed state there)
- ``{"type": "end", "index", "total"}``: no more events; the socket stays open for ``seek``
- ``{"type": "error", "status", "reason"}``: a command was refused (play goes on)

Client -> server: ``{"action": "pause"}``, ``{"action": "resume"}``, ``{"action": "seek",
"index": N}``, ``{"action": "speed", "speed": x}``, ``{"action": "breakpoint", "type": ...,
"node": ..., "error": true}`` (adds one), ``{"action": "breakpoint", "clear": true}``.

Breakpoints (query parameters ``type``, ``node``, ``error``, or the message above): ``type``
is an event type or a glob (``tool.*``), ``node`` matches the event's agent, source or
subject (``tool:calculator``), ``error=true`` matches failures (``error`` events, failed or
dead tasks, tool results with ``is_error``). A breakpoint matches when all its conditions do.

The delay between two events is their original gap divided by ``speed``, capped at
``play_max_gap_s``. A bad session answers the handshake with HTTP 404, bad parameters with
HTTP 422 (each with a reason), when the server supports denial responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import AsyncIterator
from dataclasses import KW_ONLY, InitVar, asdict, dataclass, field
from typing import Any

import asyncpg
import orjson
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from loom_protocol.limits import bad_text
from loom_protocol.logconfig import mark_websocket_denied
from prometheus_client import Counter, Gauge

from . import fold
from .engine import ReplayEngine
from .errors import Invalid, ReplayError
from .sessions import Session
from .store import event_of

log = logging.getLogger(__name__)

PLAYERS = Gauge("loom_replay_players", "Open play WebSockets")
PLAYED = Counter("loom_replay_events_played_total", "Events sent over play WebSockets")
MAX_SPEED = 1_000_000.0
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Breakpoint:
    type: str | None = None
    node: str | None = None
    error: bool | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        if self.type is not None and not fnmatch.fnmatchcase(str(event.get("type") or ""), self.type):
            return False
        if self.node is not None and self.node not in {
            event.get("agentid"),
            event.get("source"),
            event.get("subject"),
        }:
            return False
        return self.error is None or fold.is_error(event) == self.error

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_breakpoint(type_: Any = None, node: Any = None, error: Any = None) -> Breakpoint | None:
    """A breakpoint from query parameters or a message; None when no condition is given."""
    for name, value in (("type", type_), ("node", node)):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 256):
            raise Invalid(f"breakpoint {name} must be a non-empty string of at most 256 characters")
        if isinstance(value, str) and (what := bad_text(value)) is not None:
            raise Invalid(f"breakpoint {name} must not contain {what}")
    flag: bool | None
    if error is None or isinstance(error, bool):
        flag = error
    elif isinstance(error, str) and error.lower() in _TRUE | _FALSE:
        flag = error.lower() in _TRUE
    else:
        raise Invalid(f"breakpoint error must be true or false, not {error!r}")
    if type_ is None and node is None and flag is None:
        return None
    return Breakpoint(type_, node, flag)


def parse_speed(value: Any) -> float:
    try:
        speed = float(value)
    except (TypeError, ValueError):
        raise Invalid(f"speed must be a number > 0, not {value!r}") from None
    if not 0 < speed <= MAX_SPEED:
        raise Invalid(f"speed must be > 0 and <= {MAX_SPEED:g}, not {value!r}")
    return speed


async def refuse(websocket: WebSocket, error: ReplayError) -> None:
    """Answer the handshake with the error's HTTP status, or accept and close with 4000+status."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        mark_websocket_denied()
        await websocket.send_denial_response(JSONResponse(error.body().to_wire(), status_code=error.status))
        return
    await websocket.accept()
    await websocket.send_json({"type": "error", "status": error.status, "reason": error.reason})
    await websocket.close(code=4000 + error.status, reason=error.reason[:120])


@dataclass(eq=False)
class Player:
    websocket: WebSocket
    engine: ReplayEngine
    session: Session
    _: KW_ONLY
    speed: float
    start: InitVar[int]
    breakpoints: list[Breakpoint]
    max_gap_s: float
    paused: bool = field(default=False, init=False)
    sent: int = field(init=False)  # index of the last event sent
    _events: AsyncIterator[tuple[int, asyncpg.Record]] = field(init=False)
    _pending: tuple[int, asyncpg.Record] | None = field(default=None, init=False)
    _gap_s: float = field(default=0.0, init=False)
    _last_time: Any = field(default=None, init=False)
    _last_sent_at: float = field(default=0.0, init=False)
    _commands: asyncio.Queue[Any] = field(default_factory=asyncio.Queue, init=False)

    def __post_init__(self, start: int) -> None:
        self.sent = start - 1
        self._events = self.engine.events_from(self.session, start)

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        loop = asyncio.get_running_loop()
        try:
            await self._send(
                {
                    "type": "started",
                    "sessionId": self.session.session_id,
                    "index": self.sent + 1,
                    "total": self.session.total,
                    "speed": self.speed,
                    "breakpoints": [b.as_dict() for b in self.breakpoints],
                }
            )
            self._last_sent_at = loop.time()
            ended = False
            while True:
                if not self.paused and self._pending is None and not ended:
                    self._pending = await anext(self._events, None)
                    if self._pending is None:
                        ended = True
                        await self._remember_cursor()
                        await self._send({"type": "end", "index": self.sent, "total": self.session.total})
                    else:
                        time = self._pending[1]["time"]
                        self._gap_s = (
                            0.0 if self._last_time is None else (time - self._last_time).total_seconds()
                        )
                if self.paused or ended:
                    command = await self._commands.get()
                    if command is None:
                        return
                    ended = await self._handle(command, ended)
                    continue
                wait = self._last_sent_at + self._delay() - loop.time()
                if wait > 0 or not self._commands.empty():
                    try:
                        command = await asyncio.wait_for(self._commands.get(), max(wait, 0))
                    except TimeoutError:
                        command = ...
                    if command is None:
                        return
                    if command is not ...:
                        ended = await self._handle(command, ended)
                        continue
                await self._send_pending()
        except WebSocketDisconnect:
            return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(orjson.dumps(message, default=str).decode())

    def _delay(self) -> float:
        return min(max(self._gap_s, 0.0) / self.speed, self.max_gap_s)

    async def _send_pending(self) -> None:
        assert self._pending is not None
        index, row = self._pending
        self._pending = None
        event = event_of(row)
        await self._send({"type": "event", "index": index, "total": self.session.total, "event": event})
        PLAYED.inc()
        self.sent = index
        self._last_time = row["time"]
        self._last_sent_at = asyncio.get_running_loop().time()
        hit = next((b for b in self.breakpoints if b.matches(event)), None)
        if hit is not None:
            self.paused = True
            state, _, _ = await self.engine.state_at(self.session, index)
            await self._remember_cursor()
            await self._send(
                {
                    "type": "breakpoint",
                    "index": index,
                    "event": event,
                    "breakpoint": hit.as_dict(),
                    "state": state,
                }
            )

    async def _handle(self, command: Any, ended: bool) -> bool:
        """Apply one client command; returns whether play is (still) at the end."""
        try:
            if not isinstance(command, dict):
                raise Invalid("a command must be a JSON object with an 'action'")
            action = command.get("action")
            if action == "pause":
                self.paused = True
                await self._remember_cursor()
                await self._send({"type": "paused", "index": self.sent})
            elif action == "resume":
                self.paused = False
                self._last_sent_at = asyncio.get_running_loop().time()
                await self._send({"type": "resumed", "index": self.sent})
            elif action == "seek":
                index = command.get("index")
                if (
                    not isinstance(index, int)
                    or isinstance(index, bool)
                    or not 0 <= index < self.session.total
                ):
                    raise Invalid(
                        f"seek index must be an integer in 0..{self.session.total - 1}, not {index!r}"
                    )
                self._events = self.engine.events_from(self.session, index)
                self._pending = None
                self._last_time = None
                self.sent = index - 1
                self._last_sent_at = asyncio.get_running_loop().time()
                await self._send({"type": "seeked", "index": index})
                return False
            elif action == "speed":
                self.speed = parse_speed(command.get("speed"))
                await self._send({"type": "speed", "speed": self.speed})
            elif action == "breakpoint":
                if command.get("clear"):
                    self.breakpoints = []
                else:
                    added = parse_breakpoint(command.get("type"), command.get("node"), command.get("error"))
                    if added is None:
                        raise Invalid("a breakpoint needs at least one of type, node, error (or clear: true)")
                    self.breakpoints.append(added)
                await self._send(
                    {"type": "breakpoints", "breakpoints": [b.as_dict() for b in self.breakpoints]}
                )
            else:
                raise Invalid(f"unknown action {action!r} (known: pause, resume, seek, speed, breakpoint)")
        except ReplayError as exc:
            await self._send({"type": "error", "status": exc.status, "reason": exc.reason})
        return ended

    async def _remember_cursor(self) -> None:
        if self.sent >= 0:
            await self.engine.sessions.save_position(self.session.session_id, self.sent)

    async def _read(self) -> None:
        try:
            while True:
                try:
                    message = await self.websocket.receive_json()
                except (ValueError, KeyError):
                    message = "not JSON"
                await self._commands.put(message)
        except (WebSocketDisconnect, RuntimeError):
            await self._commands.put(None)


async def play(
    websocket: WebSocket,
    engine: ReplayEngine,
    session_id: str,
    *,
    speed: Any,
    start: Any,
    type_: Any,
    node: Any,
    error: Any,
    max_gap_s: float,
    unknown: list[str] | None = None,
) -> None:
    try:
        if unknown:
            raise Invalid(f"unknown query parameter(s) {unknown}; known: speed, from, type, node, error")
        playback = parse_speed(speed if speed is not None else 1.0)
        breakpoint_ = parse_breakpoint(type_, node, error)
        first = 0 if start is None else start
        if not isinstance(first, int) and not (isinstance(first, str) and first.lstrip("-").isdigit()):
            raise Invalid(f"from must be an integer, not {start!r}")
        first = int(first)
        session = await engine.get(session_id)
        if not 0 <= first < session.total:
            raise Invalid(f"from must be in 0..{session.total - 1}, not {first}")
    except ReplayError as exc:
        await refuse(websocket, exc)
        return
    await websocket.accept()
    PLAYERS.inc()
    try:
        await Player(
            websocket,
            engine,
            session,
            speed=playback,
            start=first,
            breakpoints=[breakpoint_] if breakpoint_ is not None else [],
            max_gap_s=max_gap_s,
        ).run()
    finally:
        PLAYERS.dec()
        with contextlib.suppress(Exception):
            await websocket.close()
