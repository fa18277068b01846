"""NATS in and out of the registry: heartbeats in, membership changes out (picks: picks.py).

Heartbeats are a typed FastStream handler (its parameter is the model, FastStream validates);
the router's exception middleware turns a heartbeat the model refuses into a dead-letter record.
A heartbeat speaks only for the instance its subject names (a worker user bound to an instance may
publish only that subject): one naming another instance is dead-lettered, never recorded.
"""

from __future__ import annotations

import logging

from faststream import ExceptionMiddleware
from faststream.nats import NatsBroker, NatsRouter
from faststream.nats.annotations import NatsMessage
from loom_protocol import (
    MSG_ID_HEADER,
    REGISTRY_STREAM,
    Heartbeat,
    MemberChanged,
    MembershipChange,
    RejectedMessage,
    member_msg_id,
    subjects,
    validation_reason,
)
from prometheus_client import Counter
from pydantic import ValidationError

from .consul_mirror import ConsulMirror
from .membership import Membership

log = logging.getLogger(__name__)

HEARTBEATS = Counter("loom_registry_heartbeats_total", "Heartbeats received")
PICKS = Counter("loom_registry_picks_total", "Picks answered", ["agent", "outcome"])
REJECTED = Counter("loom_registry_rejected_total", "Malformed messages dead-lettered", ["subject"])
_JSON = {"content-type": "application/json"}


async def announce(broker: NatsBroker, change: MemberChanged) -> None:
    await broker.publish(
        change.to_json(),
        subjects.registry_member(change.change),
        headers={**_JSON, MSG_ID_HEADER: member_msg_id(change.instance_id, change.change, change.at)},
        stream=REGISTRY_STREAM.name,
    )


def count_pick(agent_id: str, outcome: str) -> None:
    PICKS.labels(agent_id, outcome).inc()


async def reject(broker: NatsBroker, subject: str, raw: bytes, reason: str) -> None:
    REJECTED.labels(subject.rsplit(".", 1)[0]).inc()
    record = RejectedMessage(subject=subject, reason=reason, raw=raw)
    await broker.publish(record.to_json(), subjects.rejected("registry"), headers=_JSON)


def build_router(
    broker: NatsBroker,
    membership: Membership,
    mirror: ConsulMirror | None = None,
) -> NatsRouter:
    # a heartbeat its model refuses: a RejectedMessage on loom.rejected.registry; the message is
    # then handled, never redelivered or crashed on
    dead_letters = ExceptionMiddleware()

    async def refuse(message: NatsMessage, reason: str) -> None:
        log.warning("message on %s refused: %s", message.raw_message.subject, reason)
        await reject(broker, message.raw_message.subject, message.body, reason)

    @dead_letters.add_handler(ValidationError)
    async def dead_letter(exc: ValidationError, message: NatsMessage) -> None:
        await refuse(message, validation_reason(exc))

    router = NatsRouter(middlewares=[dead_letters])

    # no_reply: a heartbeat needs no answer. Picks are answered by picks.PickServer.
    @router.subscriber(subjects.REGISTRY_HEARTBEAT_ALL, queue="registry", max_workers=16, no_reply=True)
    async def on_heartbeat(heartbeat: Heartbeat, message: NatsMessage) -> None:
        HEARTBEATS.inc()
        hb = heartbeat
        subject = message.raw_message.subject
        if subject != subjects.registry_heartbeat(hb.instance_id):
            await refuse(
                message, f"a heartbeat on {subject} must be about its own instance, not {hb.instance_id!r}"
            )
            return
        if hb.draining and hb.load.in_flight == 0:  # a drained worker's goodbye: deregister it now
            if await membership.forget(hb.instance_id):
                log.info("instance deregistered", extra={"instance_id": hb.instance_id})
                if mirror is not None:
                    await mirror.down(hb.instance_id)
                await announce(
                    broker,
                    MemberChanged(
                        instance_id=hb.instance_id,
                        change=MembershipChange.DOWN,
                        agents=hb.agent_ids,
                        reason="deregistered",
                    ),
                )
            return
        if mirror is not None:
            await mirror.heartbeat(hb)
        if await membership.record(hb):
            log.info("instance up", extra={"instance_id": hb.instance_id, "agents": hb.agent_ids})
            await announce(
                broker,
                MemberChanged(instance_id=hb.instance_id, change=MembershipChange.UP, agents=hb.agent_ids),
            )

    return router
