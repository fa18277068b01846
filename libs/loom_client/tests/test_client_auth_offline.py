"""API keys in the client without services: every call of both clients carries the bearer token,
401 and 403 become :class:`Unauthorized` and :class:`Forbidden` (the HTTP calls, the answer stream
and the live feed's handshake), the key management calls, and ``loom keys`` / a refused key in
the command line (through an httpx mock transport)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from loom_client import (
    AsyncLoomClient,
    ClientSettings,
    CreatedApiKey,
    Forbidden,
    LoomClient,
    LoomError,
    Scope,
    Unauthorized,
    cli_common,
)
from loom_client.cli import app
from loom_protocol import ApiKeyRecord, ErrorBody
from typer.testing import CliRunner
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

Handler = Callable[[httpx.Request], httpx.Response]
KEY = "loom_test-key"


def refusal(status: int, message: str, **details: Any) -> httpx.Response:
    headers = {"www-authenticate": 'Bearer realm="loom"'} if status == 401 else {}
    return httpx.Response(status, json=ErrorBody.of(status, message, **details).to_wire(), headers=headers)


def every_call(loom: LoomClient) -> dict[str, Callable[[], Any]]:
    """One call of each kind the blocking client makes over HTTP."""
    return {
        "submit": lambda: loom.submit("echo", {}),
        "get": lambda: loom.get("t1"),
        "wait": lambda: loom.wait("t1", timeout=1),
        "stream": lambda: list(loom.stream("t1", timeout=1)),
        "cancel": lambda: loom.cancel("t1"),
        "approve": lambda: loom.approve("t1"),
        "reject": lambda: loom.reject("t1"),
        "tasks": lambda: loom.tasks(),
        "iter_tasks": lambda: list(loom.iter_tasks()),
        "session": lambda: loom.session("s1"),
        "task_detail": lambda: loom.task_detail("t1"),
        "trace": lambda: loom.trace("t1"),
        "agents": lambda: loom.agents(),
        "create_replay": lambda: loom.create_replay(task_id="t1"),
        "replay_session": lambda: loom.replay_session("r1"),
        "replay_step": lambda: loom.replay_step("r1"),
        "replay_jump": lambda: loom.replay_jump("r1", 0),
        "delete_replay": lambda: loom.delete_replay("r1"),
        "create_key": lambda: loom.create_key("ci", [Scope.READ]),
        "list_keys": lambda: loom.list_keys(),
        "revoke_key": lambda: loom.revoke_key("0123456789abcdef"),
    }


def test_every_call_sends_the_key_and_a_401_is_unauthorized() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return refusal(401, "unknown or revoked API key")

    transport = httpx.MockTransport(handler)
    urls = {"query_url": "http://q", "registry_url": "http://r", "replay_url": "http://p"}
    with LoomClient("http://d", api_key=KEY, transport=transport, **urls) as loom:
        for name, call in every_call(loom).items():
            before = len(seen)
            with pytest.raises(Unauthorized) as refused:
                call()
            assert len(seen) == before + 1, f"{name}: sent {len(seen) - before} requests (no retry of a 401)"
            assert refused.value.status == 401 and refused.value.code == "unauthorized", name
            assert "LOOM_API_KEY" in refused.value.message and "revoked" in refused.value.message, name
    assert {r.headers.get("authorization") for r in seen} == {f"Bearer {KEY}"}
    assert {r.url.host for r in seen} == {"d", "q", "r", "p"}


async def test_the_async_client_sends_the_key_and_a_403_is_forbidden_with_the_scope() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return refusal(403, "the API key 0123 lacks the 'submit' scope this request needs", scope="submit")

    async with AsyncLoomClient("http://d", api_key=KEY, transport=httpx.MockTransport(handler)) as loom:
        calls = {
            "submit": lambda: loom.submit("echo", {}),
            "cancel": lambda: loom.cancel("t1"),
            "create_key": lambda: loom.create_key("ci", ["read"]),
            "list_keys": lambda: loom.list_keys(),
            "revoke_key": lambda: loom.revoke_key("0123456789abcdef"),
            "tasks": lambda: loom.tasks(),
            "agents": lambda: loom.agents(),
        }
        for name, call in calls.items():
            with pytest.raises(Forbidden) as forbidden:
                await call()
            assert forbidden.value.scope == "submit" and forbidden.value.status == 403, name
            assert "scope 'submit'" in str(forbidden.value), name
        with pytest.raises(Forbidden):
            async for _ in loom.stream("t1", timeout=1):
                pass
    assert len(seen) == len(calls) + 1
    assert {r.headers.get("authorization") for r in seen} == {f"Bearer {KEY}"}
    assert isinstance(forbidden.value, LoomError)


def test_a_403_without_a_scope_still_says_it_is_the_key() -> None:
    with LoomClient("http://d", transport=httpx.MockTransport(lambda r: httpx.Response(403))) as loom:
        with pytest.raises(Forbidden) as forbidden:
            loom.get("t1")
    assert forbidden.value.scope is None and "lacks the scope" in forbidden.value.message


def record(key_id: str = "0123456789abcdef", name: str = "ci") -> dict[str, Any]:
    return ApiKeyRecord(id=key_id, name=name, scopes=[Scope.READ, Scope.SUBMIT], hint="loom_abcd…").to_wire()


def key_service(seen: list[httpx.Request]) -> Handler:
    """The dispatcher's /api/keys, as far as the client sees it."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST" and request.url.path == "/api/keys":
            return httpx.Response(201, json={"key": "loom_new-secret", "record": record()})
        if request.method == "GET" and request.url.path == "/api/keys":
            return httpx.Response(200, json={"keys": [record(), record("fedcba9876543210", "grafana")]})
        if request.method == "DELETE" and request.url.path == "/api/keys/0123456789abcdef":
            return httpx.Response(204)
        return refusal(404, "no stored API key with id 'ffff'")

    return handler


def test_key_management_calls() -> None:
    seen: list[httpx.Request] = []
    with LoomClient("http://d", api_key=KEY, transport=httpx.MockTransport(key_service(seen))) as loom:
        created = loom.create_key("ci", [Scope.READ, "submit"])
        listed = loom.list_keys()
        loom.revoke_key("0123456789abcdef")
    assert isinstance(created, CreatedApiKey) and created.key == "loom_new-secret"
    assert created.record.scopes == [Scope.READ, Scope.SUBMIT] and created.record.id == "0123456789abcdef"
    assert [r.name for r in listed] == ["ci", "grafana"] and all(isinstance(r, ApiKeyRecord) for r in listed)
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/keys"),
        ("GET", "/api/keys"),
        ("DELETE", "/api/keys/0123456789abcdef"),
    ]
    assert json.loads(seen[0].content) == {"name": "ci", "scopes": ["read", "submit"]}


@pytest.fixture
def mocked_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[httpx.Request]]:
    """``loom`` commands whose client answers through :func:`key_service` (401 without the key)."""
    seen: list[httpx.Request] = []
    service = key_service(seen)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            seen.append(request)
            return refusal(401, "an API key is required")
        if request.url.path.startswith("/api/tasks"):
            seen.append(request)
            return refusal(
                403, "the API key 0123 lacks the 'submit' scope this request needs", scope="submit"
            )
        return service(request)

    def client(url: str | None = None, **urls: str | None) -> LoomClient:
        return LoomClient(url or "http://d", transport=httpx.MockTransport(handler), **urls)

    for module in ("cli_common", "cli_keys", "cli_tasks", "cli_agents"):
        monkeypatch.setattr(f"loom_client.{module}.client", client)
    yield seen


def run(*args: str, key: str | None = KEY) -> Any:
    env = {"COLUMNS": "200", "NO_COLOR": "1", "LOOM_API_KEY": key or ""}
    return CliRunner().invoke(app, list(args), env=env)


def test_loom_keys_create_list_revoke(mocked_cli: list[httpx.Request]) -> None:
    created = run("keys", "create", "ci", "--scope", "read", "--scope", "submit")
    assert created.exit_code == 0, (created.stdout, created.stderr)
    assert created.stdout == "loom_new-secret\n"  # the key alone: KEY=$(loom keys create ...)
    assert "not shown again" in created.stderr and "0123456789abcdef" in created.stderr
    assert json.loads(mocked_cli[0].content) == {"name": "ci", "scopes": ["read", "submit"]}

    as_json = run("keys", "create", "ci", "-s", "read", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["key"] == "loom_new-secret"
    assert json.loads(as_json.stdout)["record"]["scopes"] == ["read", "submit"]
    assert "not shown again" in as_json.stderr

    table = run("keys", "list")
    assert table.exit_code == 0, table.stderr
    for shown in ("0123456789abcdef", "ci", "grafana", "read, submit", "loom_abcd…"):
        assert shown in table.stdout
    listed = json.loads(run("keys", "list", "--json").stdout)
    assert [k["name"] for k in listed] == ["ci", "grafana"] and "createdAt" in listed[0]

    revoked = run("keys", "revoke", "0123456789abcdef")
    assert revoked.exit_code == 0 and "revoked" in revoked.stderr
    unknown = run("keys", "revoke", "ffffffffffffffff")
    assert unknown.exit_code == cli_common.EXIT_NOT_FOUND and "no stored API key" in unknown.stderr

    bad_scope = run("keys", "create", "ci", "--scope", "everything")
    assert bad_scope.exit_code == cli_common.EXIT_USAGE


def test_a_refused_key_is_one_line_and_exit_1(mocked_cli: list[httpx.Request]) -> None:
    for args in (("keys", "list"), ("get", "t1"), ("submit", "echo"), ("agents",)):
        result = run(*args, key=None)
        assert result.exit_code == 1, (args, result.stdout, result.stderr, result.exception)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert "HTTP 401 unauthorized" in result.stderr and "set LOOM_API_KEY" in result.stderr
    forbidden = run("get", "t1")
    assert forbidden.exit_code == 1 and forbidden.stderr.count("\n") == 1
    assert "HTTP 403 forbidden" in forbidden.stderr and "scope 'submit'" in forbidden.stderr


def test_the_live_feed_handshake_refused_is_unauthorized_or_forbidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOOM_API_KEY", raising=False)
    seen: list[str | None] = []

    def process_request(connection: ServerConnection, request: Any) -> Response:
        authorization = request.headers.get("Authorization")
        seen.append(authorization)
        if authorization is None:
            body = ErrorBody.of(401, "an API key is required").to_wire()
            status, reason = 401, "Unauthorized"
        else:
            body = ErrorBody.of(403, "the API key 0123 lacks the 'read' scope", scope="read").to_wire()
            status, reason = 403, "Forbidden"
        content = json.dumps(body).encode()
        headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(content))})
        return Response(status, reason, headers, content)

    with serve(lambda ws: None, "127.0.0.1", 0, process_request=process_request) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        with LoomClient(settings=ClientSettings(_env_file=None, query_url=url)) as anonymous:  # no key
            with pytest.raises(Unauthorized) as unauthorized, anonymous.live(task_id="t1"):
                pass
        with LoomClient(query_url=url, api_key=KEY, timeout=5) as reader:
            with pytest.raises(Forbidden) as forbidden, reader.live(task_id="t1"):
                pass
    assert seen == [None, f"Bearer {KEY}"]
    assert "LOOM_API_KEY" in unauthorized.value.message and forbidden.value.scope == "read"
