"""NATS identity as `make up` configures it: a nats-server with the users and permissions of
loom_protocol.nats_auth (the files scripts/nats_auth.py writes, passwords from the server's
environment). Anonymous and wrong-password connections are refused; each role is refused what the
protocol does not give it, and its legitimate paths work."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from dotenv import dotenv_values
from loom_nats import flushed
from loom_protocol import subjects
from loom_protocol.jetstream import TASKS_STREAM, stream_create_request
from loom_protocol.nats_auth import inbox_prefix, password_variable
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from scripts.nats_auth import write_config, write_passwords
from tests.integration.harness import VENV_BIN, Process, free_port, port_open, wait_for

WORKERS = ["w-1", "w-2"]


@dataclass
class Secured:
    url: str
    passwords: dict[str, str]
    clients: list[Client] = field(default_factory=list)

    async def connect(self, user: str, password: str | None = None) -> User:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(
            self.url,
            user=user,
            password=self.passwords[password_variable(user)] if password is None else password,
            inbox_prefix=inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=2,
        )
        self.clients.append(nc)
        return User(user, nc, errors)


@dataclass
class User:
    name: str
    nc: Client
    errors: list[Exception]

    async def refused(self, what: str, subject: str) -> None:
        """Wait for the server's permissions violation for ``what`` ("publish"/"subscription") on
        ``subject``."""
        needle = f'permissions violation for {what} to "{subject}"'.lower()
        await wait_for(
            lambda: any(needle in str(e).lower() for e in self.errors),
            5,
            f"{self.name} refused {what} {subject}",
        )


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    write_config(tmp_path / "auth.conf", WORKERS)
    write_passwords(tmp_path / "passwords.env", WORKERS)
    passwords = {k: v for k, v in dotenv_values(tmp_path / "passwords.env").items() if v}
    port = free_port()
    (tmp_path / "server.conf").write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude "auth.conf"\n'
    )
    server = Process(
        f"nats-secured-{port}",
        [str(VENV_BIN / "nats-server"), "-c", str(tmp_path / "server.conf")],
        {**os.environ, **passwords},
        tmp_path,
    )
    server.start()
    secured = Secured(f"nats://127.0.0.1:{port}", passwords)
    try:
        await wait_for(lambda: port_open(port), 30, "the secured nats-server")
        yield secured
    finally:
        for nc in secured.clients:
            if not nc.is_closed:
                await nc.close()
        server.stop()


async def test_anonymous_and_wrong_password_connections_are_refused(secured: Secured) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(secured.url, allow_reconnect=False, connect_timeout=2)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await secured.connect("client", password="not-the-password")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await secured.connect("worker-99", password="anything")


async def _received(nc: Client, subject: str) -> list[Msg]:
    seen: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(subject, cb=on_msg)
    await flushed(nc)
    return seen


async def _delivered(sender: User, subject: str, data: bytes, seen: list[Msg]) -> None:
    """``sender`` publishes on ``subject`` until ``seen`` holds a message (core NATS delivers at
    most once: one publication may miss a subscription the server has just registered), with no
    permissions violation on the way."""

    async def arrived() -> bool:
        await sender.nc.publish(subject, data)
        await flushed(sender.nc)
        for _ in range(10):
            if seen:
                return True
            await asyncio.sleep(0.05)
        return False

    await wait_for(arrived, 15, f"{sender.name}'s message on {subject}")
    assert not sender.errors, sender.errors


# (user, subject): publications the protocol gives only to others
FORBIDDEN_PUBLISH = [
    ("client", "loom.task.assigned.w-1"),  # run a task bypassing the dispatcher
    ("client", "loom.task.status.t1"),  # overwrite a task's result
    ("client", "loom.task.cancel.t1"),  # stop a task without the dispatcher
    ("client", "loom.task.dead.echo"),
    ("client", "loom.rejected.dispatcher"),  # forge a dead letter
    ("client", "loom.registry.heartbeat.w-1"),  # register a fake worker / announce one draining
    ("client", "loom.registry.member.down"),
    ("client", "loom.registry.pick"),
    ("client", "loom.event.agent.answer"),
    ("client", "loom.event.worker.w-1.agent.answer"),
    ("w-1", "loom.event.worker.w-2.agent.answer"),  # an event in another instance's name
    ("w-1", "loom.event.dispatcher.task.completed"),  # or in the dispatcher's
    ("w-1", "loom.event.agent.answer"),  # or in nobody's
    ("worker", "loom.event.ingest.agent.answer"),
    ("ingest", "loom.event.worker.w-1.agent.answer"),
    ("dispatcher", "loom.event.worker.w-1.agent.answer"),
    ("client", "$JS.API.STREAM.DELETE.LOOM_TASKS"),
    ("w-1", "loom.task.assigned.w-2"),
    ("w-1", "loom.registry.heartbeat.w-2"),  # another instance's heartbeat
    ("w-1", "loom.task.cancel.t1"),
    ("w-1", "loom.task.status.t1"),  # a task's status is the dispatcher's word, not a worker's
    ("w-1", "loom.task.report.w-2.t1"),  # a report on an attempt of another instance
    ("worker", "loom.task.status.t1"),
    ("client", "loom.task.report.w-1.t1"),
    ("w-1", "loom.rejected.dispatcher"),
    ("w-1", "loom.registry.member.down"),
    ("w-1", "$JS.API.STREAM.PURGE.LOOM_TASKS"),
    ("w-1", "$JS.API.STREAM.MSG.GET.LOOM_TASKS"),  # any message of the stream, assignments included
    ("w-1", "$JS.API.DIRECT.GET.LOOM_TASKS.loom.task.assigned.w-2"),
    ("client", "$JS.API.DIRECT.GET.LOOM_TASKS.loom.task.submitted.echo"),
    ("worker", "loom.task.assigned.w-1"),
    ("registry", "loom.task.assigned.w-1"),
    ("ingest", "loom.task.status.t1"),
    ("query", "loom.task.submitted.echo"),
    ("replay", "loom.task.submitted.echo"),
    ("dispatcher", "loom.registry.member.down"),
    ("dispatcher", "loom.registry.heartbeat.w-1"),
    ("dispatcher", "$JS.API.STREAM.DELETE.LOOM_TASKS"),  # the JetStream admin API
]

FORBIDDEN_SUBSCRIBE = [
    ("client", ">"),  # read all traffic
    ("client", "loom.task.>"),
    ("client", "loom.task.assigned.w-1"),
    ("client", "_INBOX.>"),
    ("client", "_INBOX_dispatcher.>"),  # another user's replies
    ("w-1", "loom.task.assigned.w-2"),  # another instance's assignments
    ("w-1", "loom.task.assigned.*"),
    ("w-1", "loom.event.>"),
    ("query", "loom.task.assigned.*"),
    ("replay", "loom.>"),
]


async def test_each_role_is_refused_what_the_protocol_does_not_give_it(secured: Secured) -> None:
    admin = await secured.connect("admin")
    everything = await _received(admin.nc, ">")
    users: dict[str, User] = {}
    for name in {name for name, _ in FORBIDDEN_PUBLISH + FORBIDDEN_SUBSCRIBE}:
        users[name] = await secured.connect(name)
    for name, subject in FORBIDDEN_PUBLISH:
        await users[name].nc.publish(subject, b'{"forged": true}')
    for name, subject in FORBIDDEN_SUBSCRIBE:
        await users[name].nc.subscribe(subject)
    for user in users.values():
        await flushed(user.nc)
    for name, subject in FORBIDDEN_PUBLISH:
        await users[name].refused("publish", subject)
    for name, subject in FORBIDDEN_SUBSCRIBE:
        await users[name].refused("subscription", subject)
    await flushed(admin.nc)
    forged = [m.subject for m in everything if m.data == b'{"forged": true}']
    assert forged == [], f"refused publications were delivered: {forged}"


async def test_each_roles_legitimate_paths_work(secured: Secured) -> None:
    admin = await secured.connect("admin")
    reply = await admin.nc.request(*stream_create_request(TASKS_STREAM), timeout=5)
    assert "error" not in json.loads(reply.data)
    dispatcher, registry = await secured.connect("dispatcher"), await secured.connect("registry")
    w1, client = await secured.connect("w-1"), await secured.connect("client")

    # a client submits over JetStream (the ack comes back to its own inbox)
    ack = await client.nc.jetstream(timeout=5).publish(subjects.task_submitted("echo"), b"{}")
    assert ack.stream == TASKS_STREAM.name
    # only the dispatcher assigns, and only w-1 receives w-1's assignments
    assignments = await _received(w1.nc, subjects.task_assigned("w-1"))
    await _delivered(dispatcher, subjects.task_assigned("w-1"), b"task", assignments)
    # w-1 heartbeats as itself; the registry sees it and answers the dispatcher's pick
    heartbeats = await _received(registry.nc, subjects.REGISTRY_HEARTBEAT_ALL)
    await _delivered(w1, subjects.registry_heartbeat("w-1"), b"beat", heartbeats)

    async def answer(msg: Msg) -> None:
        await msg.respond(b"w-1")

    await registry.nc.subscribe(subjects.REGISTRY_PICK, cb=answer)
    await flushed(registry.nc)

    async def picked() -> bytes | None:  # a subscription just made may not have responders yet
        with contextlib.suppress(nats.errors.NoRespondersError):
            return (await dispatcher.nc.request(subjects.REGISTRY_PICK, b"echo", timeout=5)).data
        return None

    assert await wait_for(picked, 15, "the registry's answer to a pick") == b"w-1"
    # w-1 reports on its own attempts to the dispatcher, which announces the task's status to
    # the client that follows it
    reports = await _received(dispatcher.nc, subjects.TASK_REPORT_ALL)
    await _delivered(w1, subjects.task_report("w-1", "t1"), b"completed", reports)
    assert reports[0].subject == "loom.task.report.w-1.t1"
    statuses = await _received(client.nc, subjects.task_status("t1"))
    await _delivered(dispatcher, subjects.task_status("t1"), b"completed", statuses)
    # w-1's events go out in its own name, the dispatcher's in the dispatcher's
    w1_events = await _received(admin.nc, subjects.instance_events_of("w-1"))
    await _delivered(w1, subjects.instance_event("w-1", "agent.thought"), b"thought", w1_events)
    lifecycle = await _received(admin.nc, subjects.service_events_of("dispatcher"))
    await _delivered(dispatcher, subjects.service_event("dispatcher", "task.completed"), b"done", lifecycle)

    # and reads a task's last status from the stream (a direct get names the status subject)
    async def last_status() -> bytes | None:
        with contextlib.suppress(NotFoundError):
            return (
                await w1.nc.jetstream().get_last_msg(
                    TASKS_STREAM.name, subjects.task_status("t1"), direct=True
                )
            ).data
        return None

    assert await wait_for(last_status, 10, "t1's last status read by w-1") == b"completed"
    everyone = [admin, dispatcher, registry, w1, client]
    assert all(not u.errors for u in everyone), {u.name: u.errors for u in everyone if u.errors}
