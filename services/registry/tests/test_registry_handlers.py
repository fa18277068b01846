"""The heartbeat handler without a server (FastStream's in-memory broker); the pick endpoint's
error answers (nats.py micro's code and description headers)."""

from __future__ import annotations

from typing import Any, cast

from faststream.nats import JStream, NatsBroker, TestNatsBroker
from loom_protocol import (
    REGISTRY_STREAM,
    AgentCard,
    Heartbeat,
    InstanceLoad,
    KnownAgents,
    MemberChanged,
    PickReply,
    PickRequest,
    RejectedMessage,
    subjects,
)
from loom_registry.handlers import build_router
from loom_registry.membership import Membership
from loom_registry.picks import PickServer
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER


class FakeMembership:
    def __init__(self) -> None:
        self.recorded: list[Heartbeat] = []
        self.forgotten: list[str] = []

    async def record(self, hb: Heartbeat) -> bool:
        self.recorded.append(hb)
        return len(self.recorded) == 1

    async def forget(self, instance_id: str) -> bool:
        self.forgotten.append(instance_id)
        return True


def _broker() -> tuple[NatsBroker, FakeMembership, list[Any]]:
    broker = NatsBroker()
    membership = FakeMembership()
    broker.include_router(build_router(broker, cast(Membership, membership)))
    out: list[Any] = []

    @broker.subscriber(subjects.rejected("registry"))
    async def on_rejected(record: RejectedMessage) -> None:
        out.append(record)

    @broker.subscriber(subjects.registry_member("up"), stream=JStream(REGISTRY_STREAM.name, declare=False))
    async def on_up(change: MemberChanged) -> None:
        out.append(change)

    return broker, membership, out


def _heartbeat(instance_id: str, *, draining: bool = False) -> Heartbeat:
    return Heartbeat(
        instance_id=instance_id,
        agents=[AgentCard(agent_id="echo", name="echo")],
        host="h",
        pid=1,
        load=InstanceLoad(in_flight=0, capacity=4),
        draining=draining,
    )


async def test_a_heartbeat_records_the_instance_and_announces_it_once() -> None:
    broker, membership, out = _broker()
    hb = _heartbeat("w1")
    async with TestNatsBroker(broker) as br:
        await br.publish(hb.to_json(), subjects.registry_heartbeat("w1"))
        await br.publish(hb.to_json(), subjects.registry_heartbeat("w1"))
    assert [h.instance_id for h in membership.recorded] == ["w1", "w1"]
    assert [(c.instance_id, c.change, c.agents) for c in out] == [("w1", "up", ["echo"])]


async def test_a_malformed_heartbeat_becomes_a_dead_letter() -> None:
    broker, membership, out = _broker()
    async with TestNatsBroker(broker) as br:
        await br.publish(b'{"instanceId": "w1"}', subjects.registry_heartbeat("w1"))
        await br.publish(b"not json", subjects.registry_heartbeat("w2"))
    assert membership.recorded == []
    assert [type(r) for r in out] == [RejectedMessage, RejectedMessage]
    first, second = out
    assert first.subject == subjects.registry_heartbeat("w1") and first.raw == '{"instanceId": "w1"}'
    assert "'heartbeat.host': Field required" in first.reason
    assert second.subject == subjects.registry_heartbeat("w2") and second.raw == "not json"


async def test_a_heartbeat_about_another_instance_than_its_subject_is_a_dead_letter() -> None:
    """A worker bound to w1 may publish only w1's heartbeat subject: a body naming w2 there (a
    forged draining goodbye, a fake registration) is refused, and w2 stays as it was."""
    broker, membership, out = _broker()
    forged = _heartbeat("w2", draining=True)
    async with TestNatsBroker(broker) as br:
        await br.publish(forged.to_json(), subjects.registry_heartbeat("w1"))
    assert membership.recorded == [] and membership.forgotten == []
    assert [type(r) for r in out] == [RejectedMessage]
    assert out[0].subject == subjects.registry_heartbeat("w1")
    assert (
        out[0].reason == "a heartbeat on loom.registry.heartbeat.w1 must be about its own instance, not 'w2'"
    )


class Published:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str] | None]] = []

    async def publish(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.sent.append((subject, payload, headers))


class Request:
    def __init__(self, data: bytes) -> None:
        self.subject, self.data, self.reply, self.headers = subjects.REGISTRY_PICK, data, "_INBOX.1", None


class FailingMembership:
    async def pick(self, request: PickRequest) -> PickReply:
        raise ConnectionError("redis down")


async def _answer(data: bytes) -> tuple[list[tuple[str, bytes, dict[str, str] | None]], list[str]]:
    conn, rejected = Published(), []

    async def reject(subject: str, raw: bytes, reason: str) -> None:
        rejected.append(reason)

    server = PickServer(
        lambda: cast(Client, conn),
        cast(Membership, FailingMembership()),
        reject=reject,
        count=lambda agent, outcome: None,
    )
    await server._on_msg(cast(Msg, Request(data)))
    await server.stop()
    return conn.sent, rejected


async def test_a_malformed_pick_request_gets_a_400_error_answer() -> None:
    sent, rejected = await _answer(b'{"taskId": "t1"}')
    assert len(rejected) == 1 and "agentId" in rejected[0]
    [(subject, payload, headers)] = sent
    assert subject == "_INBOX.1" and payload == b""
    assert headers is not None and headers[ERROR_CODE_HEADER] == "400"
    assert headers[ERROR_HEADER].startswith("invalid pick request: ")


async def test_a_failed_pick_gets_a_500_error_answer_not_silence() -> None:
    sent, rejected = await _answer(PickRequest(agent_id="echo").to_json())
    assert rejected == []
    [(_, payload, headers)] = sent
    assert payload == b"" and headers is not None and headers[ERROR_CODE_HEADER] == "500"
    assert "redis down" in headers[ERROR_HEADER]


class KnownMembership:
    async def known_agents(self) -> list[str]:
        return ["calculator", "echo"]

    async def is_known(self, agent_id: str) -> bool:
        return agent_id in ("calculator", "echo")

    async def pick(self, request: PickRequest) -> PickReply:
        return PickReply(agent_id=request.agent_id, reason="none")


async def test_known_agents_are_answered_and_unknown_agents_never_become_metric_labels() -> None:
    conn, counted = Published(), []

    async def reject(subject: str, raw: bytes, reason: str) -> None:
        raise AssertionError(reason)

    server = PickServer(
        lambda: cast(Client, conn),
        cast(Membership, KnownMembership()),
        reject=reject,
        count=lambda agent, outcome: counted.append((agent, outcome)),
    )
    request = Request(b"")
    request.subject = subjects.REGISTRY_AGENTS
    await server._on_agents(cast(Msg, request))
    await server._on_msg(cast(Msg, Request(PickRequest(agent_id="echo").to_json())))
    await server._on_msg(cast(Msg, Request(PickRequest(agent_id="calculater").to_json())))
    await server.stop()
    assert KnownAgents.from_json(conn.sent[0][1]).agent_ids == ["calculator", "echo"]
    assert counted == [("echo", "none"), ("(unknown)", "none")]
