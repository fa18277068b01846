"""NATS handlers: heartbeats in, picks answered, membership changes out."""

from __future__ import annotations

import logging
from typing import Literal

from faststream.nats import NatsBroker, NatsRouter
from faststream.nats.annotations import NatsMessage
from loom_protocol import (
    MSG_ID_HEADER,
    REGISTRY_STREAM,
    Heartbeat,
    MemberChanged,
    MembershipChange,
    PickReply,
    PickRequest,
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


async def reject(broker: NatsBroker, subject: str, raw: bytes, reason: str) -> None:
    REJECTED.labels(subject.rsplit(".", 1)[0]).inc()
    record = RejectedMessage(subject=subject, reason=reason, raw=raw.decode("utf-8", errors="replace"))
    await broker.publish(record.to_json(), subjects.rejected("registry"), headers=_JSON)


def build_router(
    broker: NatsBroker,
    membership: Membership,
    strategy: Literal["round_robin", "least_loaded"],
    mirror: ConsulMirror | None = None,
) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(subjects.REGISTRY_HEARTBEAT_ALL, queue="registry", max_workers=16)
    async def on_heartbeat(msg: NatsMessage) -> None:
        try:
            hb = Heartbeat.from_json(msg.body)
        except ValidationError as exc:
            await reject(broker, msg.raw_message.subject, msg.body, validation_reason(exc))
            return
        HEARTBEATS.inc()
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

    @router.subscriber(subjects.REGISTRY_PICK, queue="registry", max_workers=32)
    async def on_pick(msg: NatsMessage) -> None:
        try:
            request = PickRequest.from_json(msg.body)
        except ValidationError as exc:
            reason = validation_reason(exc)
            await reject(broker, msg.raw_message.subject, msg.body, reason)
            reply = PickReply(agent_id="", reason=f"invalid pick request: {reason}")
        else:
            reply = await membership.pick(request, strategy)
            PICKS.labels(request.agent_id, "picked" if reply.instance_id else "none").inc()
        if msg.raw_message.reply:
            await broker.connection.publish(msg.raw_message.reply, reply.to_json())

    return router
