"""API keys through the SDK and the ``loom`` command, against services that require them: every
service of the stack starts with a fixed admin key (``LOOM_API_KEYS``). Without a key every
call is :class:`Unauthorized`; the admin key creates a read-only key, which reads (tasks, the
answer stream, the live feed) but is :class:`Forbidden` to submit or manage keys; once revoked it
is refused by the dispatcher at once and by the other services within their refresh interval
(polled with a deadline). ``loom keys create|list|revoke`` end to end, and a refused key in the
command line: one line on stderr, exit 1 (in process and as the installed ``.venv/bin/loom``)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from click.testing import Result
from loom_client import (
    AsyncLoomClient,
    ClientSettings,
    CloudEvent,
    Forbidden,
    LoomClient,
    LoomError,
    NotFound,
    Scope,
    StreamEnd,
    TaskStatus,
    Unauthorized,
)
from loom_client.cli import app
from typer.testing import CliRunner

from tests.component.test_client_sdk import SIX_TIMES_SEVEN, stored
from tests.integration.events_support import (
    FAST_INGEST,
    database_url_fixture,  # noqa: F401 (fixture)
)
from tests.integration.harness import REPO, AnyService, Stack, wait_for

pytestmark = pytest.mark.component

ADMIN = "loom_" + secrets.token_urlsafe(32)
KEYS = {"LOOM_API_KEYS": ADMIN}  # every service: keys required, this one fixed admin key
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}
REVOKED_WITHIN_S = 15.0  # the services re-read the stored keys every 2 s (LOOM_API_KEYS_REFRESH_S)


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The clients of these tests get their key only from the test (not LOOM_API_KEY)."""
    monkeypatch.delenv("LOOM_API_KEY", raising=False)
    yield


def settings(stack: Stack, key: str | None, query: AnyService | None = None) -> ClientSettings:
    """Client settings for this stack with ``key`` (None: no key), never read from ``.env``."""
    return ClientSettings(
        _env_file=None,
        dispatcher_url=stack.api,
        registry_url=stack.registries[0].url,
        query_url=query.url if query is not None else "http://127.0.0.1:9",
        nats_url=stack.nats_url,
        api_key=key,
        client_retries=0,
    )


async def keyed_stack(stack: Stack, database_url: str | None = None) -> AnyService | None:
    """Registry, dispatcher, a worker (and with ``database_url`` ingest and query), all requiring
    API keys; returns query. Waits for the calculator with the admin key (the registry's agent
    list needs one too)."""
    services = [
        stack.registry_service(**KEYS),
        stack.dispatcher_service(**KEYS),
        stack.worker_service("w1", **KEYS),
    ]
    query = None
    if database_url is not None:
        services.append(
            stack.add("ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST, **KEYS})
        )
        query = stack.service("query-0", "loom_query", LOOM_DATABASE_URL=database_url, **KEYS)
        services.append(query)
    await asyncio.gather(*(svc.started(120) for svc in services))
    async with AsyncLoomClient(settings=settings(stack, ADMIN)) as admin:

        async def calculator_up() -> bool:
            return any(a.agent_id == "calculator" and a.instances for a in await admin.agents())

        await wait_for(calculator_up, 15, "a live calculator instance")
    return query


def every_service(loom: AsyncLoomClient) -> list[Callable[[], Awaitable[Any]]]:
    """A call to each service: the dispatcher (submit, get, the answer stream, keys), query (the
    search, the live feed) and the registry."""

    async def stream() -> None:
        async for _ in loom.stream("any-task", timeout=2):
            pass

    return [
        lambda: loom.submit("calculator", SIX_TIMES_SEVEN),
        lambda: loom.get("any-task"),
        stream,
        lambda: loom.list_keys(),
        lambda: loom.tasks(),
        lambda: loom.live(task_id="any-task").open(),
        lambda: loom.agents(),
    ]


async def refused(call: Callable[[], Awaitable[Any]]) -> LoomError:
    """The :class:`Unauthorized` or :class:`Forbidden` that ``call`` raises."""
    with pytest.raises((Unauthorized, Forbidden)) as caught:
        await call()
    return caught.value


async def test_keys_gate_every_sdk_call_scopes_and_revocation(database_url: str, stack: Stack) -> None:
    query = await keyed_stack(stack, database_url)
    assert query is not None

    # no key, or an unknown one: every service refuses it, each call raises Unauthorized
    async with (
        AsyncLoomClient(settings=settings(stack, None, query)) as anonymous,
        AsyncLoomClient(settings=settings(stack, "loom_" + "x" * 43, query)) as stranger,
    ):
        for loom in (anonymous, stranger):
            for call in every_service(loom):
                error = await refused(call)
                assert isinstance(error, Unauthorized) and error.status == 401, error
                assert "LOOM_API_KEY" in error.message
        error = await refused(lambda: stranger.get("any-task"))
        assert "unknown or revoked" in error.message and error.code == "unauthorized"

    async with AsyncLoomClient(settings=settings(stack, ADMIN, query)) as admin:
        # the admin key does everything: submit, the answer stream, the live feed
        task_id = uuid.uuid4().hex
        async with admin.live(task_id=task_id) as feed:
            done = await admin.submit("calculator", SIX_TIMES_SEVEN, task_id=task_id, wait=15)
            assert done.status == TaskStatus.COMPLETED and done.result["answer"] == "42"
            heard = await feed.receive(timeout=10)
            assert isinstance(heard, CloudEvent) and heard.taskid == task_id
        assert [i async for i in admin.stream(task_id, timeout=5)][-1] == StreamEnd(
            task_id=task_id, status="completed", result=done.result
        )
        await stored(admin, task_id)

        # a read-only key, made by the admin: shown once, listed without the key itself
        created = await admin.create_key("reader", [Scope.READ])
        assert created.key.startswith("loom_") and created.record.scopes == [Scope.READ]
        assert created.record.name == "reader" and len(created.record.id) == 16
        listed = await admin.list_keys()
        assert created.record.id in {r.id for r in listed}
        assert created.key not in json.dumps([r.to_wire() for r in listed])

        async with AsyncLoomClient(settings=settings(stack, created.key, query)) as reader:
            # the dispatcher knows it at once; query and the registry once they re-read the stored keys
            assert (await reader.get(task_id)).status == TaskStatus.COMPLETED

            async def accepted_everywhere() -> list[str] | None:
                try:
                    page = await reader.tasks(agent="calculator")
                    await reader.agents()
                except Unauthorized:
                    return None
                return [t.task_id for t in page.tasks]

            listed_ids = await wait_for(
                accepted_everywhere, REVOKED_WITHIN_S, "the new key at query and registry"
            )
            assert task_id in listed_ids
            assert "calculator" in {a.agent_id for a in await reader.agents()}  # read scope
            async with reader.live(task_id=task_id):  # the live feed needs read only
                pass
            assert [i async for i in reader.stream(task_id, timeout=5)][-1].status == "completed"

            # but it may not submit, cancel, approve nor manage keys
            expected = [
                (lambda: reader.submit("calculator", SIX_TIMES_SEVEN), "submit"),
                (lambda: reader.cancel(task_id), "submit"),
                (lambda: reader.approve(task_id), "approve"),
                (lambda: reader.list_keys(), "admin"),
                (lambda: reader.create_key("mine", [Scope.ADMIN]), "admin"),
            ]
            for call, scope in expected:
                error = await refused(call)
                assert isinstance(error, Forbidden) and error.status == 403 and error.scope == scope, error
                assert f"scope '{scope}'" in error.message

            # revoked: refused by the dispatcher at once, by every service within the refresh interval
            await admin.revoke_key(created.record.id)
            assert isinstance(await refused(lambda: reader.get(task_id)), Unauthorized)

            async def refused_everywhere() -> bool:
                for call in (reader.tasks, reader.agents):
                    try:
                        await call()
                    except Unauthorized:
                        continue
                    return False
                return True

            await wait_for(
                refused_everywhere, REVOKED_WITHIN_S, "the revoked key refused by query and registry"
            )
            error = await refused(lambda: reader.live(task_id=task_id).open())
            assert isinstance(error, Unauthorized)

        assert created.record.id not in {r.id for r in await admin.list_keys()}
        with pytest.raises(NotFound):
            await admin.revoke_key(created.record.id)

    # the blocking client: the same errors; a submit-only key submits but may not read
    def blocking() -> list[str]:
        with (
            LoomClient(settings=settings(stack, None, query)) as anonymous,
            LoomClient(settings=settings(stack, ADMIN, query)) as admin,
        ):
            submitter = admin.create_key("submitter", ["submit"])
            with LoomClient(settings=settings(stack, submitter.key, query)) as only_submit:
                accepted = only_submit.submit("echo", {"n": 1})  # the dispatcher knows it at once
                with pytest.raises(Forbidden) as forbidden:
                    only_submit.get(accepted.task_id)
                assert forbidden.value.scope == "read"
            with pytest.raises(Unauthorized):
                anonymous.get(accepted.task_id)
            with pytest.raises(Unauthorized):
                anonymous.tasks()
            names = [r.name for r in admin.list_keys()]
            admin.revoke_key(submitter.record.id)
            return names

    assert await asyncio.to_thread(blocking) == ["submitter"]


async def cli(*args: str, key: str) -> Result:
    """``loom ARGS`` in process (a worker thread) with ``LOOM_API_KEY=key``."""
    runner = CliRunner()
    env = {**WIDE, "LOOM_API_KEY": key}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def one_line(result: Result, *expected: str) -> None:
    """A refused key: exit 1, one line on stderr saying so, no traceback."""
    ok(result, 1)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


async def test_loom_keys_create_list_revoke_and_refusals_in_the_command_line(stack: Stack) -> None:
    await keyed_stack(stack)
    url = ("--url", stack.api)

    # create: --json has the key and the record; otherwise the key alone on stdout
    made = ok(
        await cli("keys", "create", "ci", "--scope", "read", "--scope", "submit", "--json", *url, key=ADMIN)
    )
    created = json.loads(made.stdout)
    assert created["key"].startswith("loom_") and created["record"]["scopes"] == ["read", "submit"]
    assert "not shown again" in made.stderr
    plain = ok(await cli("keys", "create", "dashboards", "-s", "read", *url, key=ADMIN))
    reader_key = plain.stdout.strip()
    assert reader_key.startswith("loom_") and plain.stdout == reader_key + "\n"
    assert "not shown again" in plain.stderr and "dashboards" in plain.stderr

    listed = json.loads(ok(await cli("keys", "list", "--json", *url, key=ADMIN)).stdout)
    assert [(k["name"], k["scopes"]) for k in listed] == [
        ("ci", ["read", "submit"]),
        ("dashboards", ["read"]),
    ]
    assert created["key"] not in json.dumps(listed)
    table = ok(await cli("keys", "list", *url, key=ADMIN)).stdout
    for shown in (created["record"]["id"], "ci", "dashboards", "read, submit", created["record"]["hint"]):
        assert shown in table

    # the new keys work at the dispatcher at once, each within its scopes
    accepted = json.loads(
        ok(
            await cli("submit", "echo", "-p", "n=1", "--wait", "10", "--json", *url, key=created["key"])
        ).stdout
    )
    assert accepted["status"] == "completed"
    ok(await cli("get", accepted["taskId"], *url, key=reader_key))
    one_line(await cli("submit", "echo", *url, key=reader_key), "HTTP 403 forbidden", "scope 'submit'")
    one_line(await cli("keys", "list", *url, key=created["key"]), "HTTP 403 forbidden", "scope 'admin'")
    refused_batch = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["submit", "echo", "--batch", "-", "--json", *url],
        input='{"parameters": {"n": 1}}\n{"parameters": {"n": 2}}\n',
        env={**WIDE, "LOOM_API_KEY": reader_key},
    )
    one_line(refused_batch, "HTTP 403 forbidden", "scope 'submit'")
    assert refused_batch.stdout == ""

    # revoke: refused at once by the dispatcher; revoking again is not found
    ok(await cli("keys", "revoke", created["record"]["id"], *url, key=ADMIN))
    one_line(
        await cli("get", accepted["taskId"], *url, key=created["key"]),
        "HTTP 401 unauthorized",
        "unknown or revoked",
        "set LOOM_API_KEY",
    )
    ok(await cli("keys", "revoke", created["record"]["id"], *url, key=ADMIN), 3)
    remaining = json.loads(ok(await cli("keys", "list", "--json", *url, key=ADMIN)).stdout)
    assert [k["name"] for k in remaining] == ["dashboards"]

    # the installed command, as a process: the same one line, exit 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env.update(
        {**WIDE, "LOOM_API_KEY": created["key"], "LOOM_DISPATCHER_URL": stack.api, "LOOM_CLIENT_RETRIES": "0"}
    )
    process = await asyncio.create_subprocess_exec(
        str(REPO / ".venv" / "bin" / "loom"),
        "keys",
        "list",
        env=env,
        cwd=str(REPO / "libs"),  # no .env there: the key is the environment's
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and stdout == b"", (process.returncode, stdout, stderr)
    text = stderr.decode()
    assert text.count("\n") == 1 and "HTTP 401 unauthorized" in text and "set LOOM_API_KEY" in text, text
