"""Answering ``loom.registry.pick`` (and ``loom.registry.agents``, the known agents): plain nats-py
queue subscriptions, one task per request.

Every dispatch waits for a pick, so this is on the task path. FastStream's per-message
machinery (message object, middlewares, log context, and with ``max_workers`` an anyio memory
stream and two semaphores per message) cost more CPU than the pick itself, a single Lua script
(membership.py). Here each request runs in its own task and the reply goes straight back on
the request's reply subject. When tracing is on, each request gets a consumer span continuing
the trace in its headers.

A request that cannot be answered (malformed, or the pick itself failed) gets an error answer
the way nats.py's micro services give one: an empty body with ``Nats-Service-Error-Code``
(400: the request is wrong; 500: the registry failed) and ``Nats-Service-Error`` headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field

from loom_protocol import UNKNOWN_AGENT_LABEL, KnownAgents, PickRequest, subjects, validation_reason
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from .membership import Membership
from .telemetry import tracer

log = logging.getLogger(__name__)

Reject = Callable[[str, bytes, str], Awaitable[None]]
Count = Callable[[str, str], None]


@dataclass(eq=False)
class PickServer:
    connection: Callable[[], Client]  # the broker's client, known once it has connected
    membership: Membership
    _: KW_ONLY
    reject: Reject
    count: Count
    traced: bool = False
    _sub: Subscription | None = field(default=None, init=False)
    _agents_sub: Subscription | None = field(default=None, init=False)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    @property
    def serving(self) -> bool:
        return self._sub is not None

    async def start(self) -> None:
        self._sub = await self.connection().subscribe(
            subjects.REGISTRY_PICK, queue="registry", cb=self._on_msg
        )
        self._agents_sub = await self.connection().subscribe(
            subjects.REGISTRY_AGENTS, queue="registry", cb=self._on_agents
        )

    async def stop(self, timeout_s: float = 5.0) -> None:
        for sub in (self._sub, self._agents_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=timeout_s)

    async def _on_msg(self, msg: Msg) -> None:
        # nats-py awaits this callback before the next message: answer in a task of its own
        task = asyncio.create_task(self._answer(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _on_agents(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer_agents(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer_agents(self, msg: Msg) -> None:
        """Every agent ever seen (the request body is ignored); an error answer if Redis fails."""
        try:
            reply = KnownAgents(agent_ids=await self.membership.known_agents())
            if msg.reply:
                await self.connection().publish(msg.reply, reply.to_json())
        except Exception as exc:
            log.exception("known agents not answered")
            with contextlib.suppress(Exception):
                await self._error(msg, 500, f"known agents failed: {exc!r}")

    async def _answer(self, msg: Msg) -> None:
        try:
            if self.traced:
                parent = propagate.extract(msg.headers or {})
                name = f"{msg.subject} process"
                with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER):
                    await self._pick(msg)
            else:
                await self._pick(msg)
        except Exception as exc:
            log.exception("pick failed; the dispatcher retries")
            with contextlib.suppress(Exception):
                await self._error(msg, 500, f"pick failed: {exc!r}")

    async def _error(self, msg: Msg, code: int, description: str) -> None:
        """An error answer as nats.py's micro services give it: code and description headers."""
        if msg.reply:
            headers = {ERROR_CODE_HEADER: str(code), ERROR_HEADER: description[:500]}
            await self.connection().publish(msg.reply, b"", headers=headers)

    async def _pick(self, msg: Msg) -> None:
        try:
            request = PickRequest.from_json(msg.data)
        except ValidationError as exc:
            reason = validation_reason(exc)
            await self.reject(msg.subject, msg.data, reason)
            await self._error(msg, 400, f"invalid pick request: {reason}")
            return
        reply = await self.membership.pick(request)
        if reply.instance_id:
            self.count(request.agent_id, "picked")
        else:  # rare (a task waiting for an instance): worth one more lookup to keep labels bounded
            known = await self.membership.is_known(request.agent_id)
            self.count(request.agent_id if known else UNKNOWN_AGENT_LABEL, "none")
        if msg.reply:
            await self.connection().publish(msg.reply, reply.to_json())
