"""The harness's API key: read like its other settings (environment over the repository's
``.env``), sent as a bearer token on HTTP and on the live feed's WebSocket handshake, checked at
start (a refused key fails fast, saying what to set)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from loom_load.cli import key_refusal, query_http_url
from loom_load.live import LiveFeed
from loom_load.search import service_process
from loom_load.settings import Targets, auth_headers, resolve_api_key
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

KEY = "loom_harness-key"


def test_the_key_comes_from_the_environment_over_the_repositorys_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".env").write_text("LOOM_NATS_URL=nats://127.0.0.1:4222\nLOOM_API_KEY=loom_from-dotenv\n")
    (tmp_path / "deep").mkdir()
    monkeypatch.chdir(tmp_path / "deep")  # make bench runs at the root; found walking up
    assert resolve_api_key({}) == "loom_from-dotenv"
    assert resolve_api_key({"LOOM_API_KEY": KEY}) == KEY
    assert resolve_api_key({"LOOM_API_KEY": ""}) is None  # set empty: no key sent
    (tmp_path / ".env").write_text("LOOM_NATS_URL=nats://127.0.0.1:4222\n")
    assert resolve_api_key({}) is None
    assert auth_headers(None) == {} and auth_headers(KEY) == {"Authorization": f"Bearer {KEY}"}


def refusing(status: int, message: str, **details: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": "x", "message": message, **details}})


def check(handler: Any, key: str | None, live: bool = True) -> tuple[str | None, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    targets = Targets()
    refusal = asyncio.run(key_refusal(targets, key, live=live, transport=httpx.MockTransport(record)))
    return refusal, seen


def test_a_key_the_services_accept_passes_the_check_and_is_sent_everywhere() -> None:
    def accept(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return refusing(422, "targetAgent: field required")  # past the key: nothing submitted
        return httpx.Response(404 if "key-check" in request.url.path else 200, json={})

    refusal, seen = check(accept, KEY)
    assert refusal is None
    assert [(r.method, r.url.port, r.url.path) for r in seen] == [
        ("GET", 8001, "/api/tasks/loom-load-key-check"),
        ("POST", 8001, "/api/tasks"),
        ("GET", 8002, "/api/agents"),
        ("GET", 8004, "/api/tasks"),
    ]
    assert {r.headers.get("authorization") for r in seen} == {f"Bearer {KEY}"}
    assert json.loads(seen[1].content) == {}
    assert [r.url.path for r in check(accept, KEY, live=False)[1]][-1] == "/api/agents"


def test_a_refused_key_fails_fast_saying_what_to_set() -> None:
    def no_key(request: httpx.Request) -> httpx.Response:
        return refusing(401, "an API key is required")

    refusal, seen = check(no_key, None)
    assert refusal is not None and len(seen) == 1 and "authorization" not in seen[0].headers
    assert "dispatcher at http://127.0.0.1:8001" in refusal and "HTTP 401 an API key is required" in refusal
    assert "set LOOM_API_KEY" in refusal and "read and submit" in refusal

    refusal, _ = check(lambda r: refusing(401, "unknown or revoked API key"), KEY)
    assert refusal is not None and "unknown or revoked" in refusal and "LOOM_API_KEY" in refusal

    def read_only(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return refusing(403, "the API key 01 lacks the 'submit' scope this request needs", scope="submit")
        return httpx.Response(200, json={})

    refusal, seen = check(read_only, KEY)
    assert refusal is not None and "HTTP 403" in refusal and "lacks the 'submit' scope" in refusal
    assert len(seen) == 2

    def registry_only(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8002:
            return refusing(401, "unknown or revoked API key")
        return httpx.Response(422 if request.method == "POST" else 404, json={})

    refusal, _ = check(registry_only, KEY)
    assert refusal is not None and refusal.startswith("registry at http://127.0.0.1:8002 (GET /api/agents)")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert check(down, KEY)[0] is None  # no answer: reported by the preflight, not here


def test_the_query_url_of_the_live_feed() -> None:
    assert query_http_url("ws://127.0.0.1:8004/ws/events") == "http://127.0.0.1:8004"
    assert query_http_url("wss://localhost:9/ws/events?x=1") == "https://localhost:9"


def test_the_live_feed_sends_the_key_in_its_handshake() -> None:
    async def go() -> tuple[list[str | None], LiveFeed, LiveFeed]:
        seen: list[str | None] = []

        def process_request(connection: ServerConnection, request: Request) -> Response | None:
            authorization = request.headers.get("Authorization")
            seen.append(authorization)
            if authorization != f"Bearer {KEY}":
                body = json.dumps({"error": {"code": "unauthorized", "message": "an API key is required"}})
                return Response(
                    401, "Unauthorized", Headers({"Content-Length": str(len(body))}), body.encode()
                )
            return None

        async def handler(ws: ServerConnection) -> None:
            await ws.recv()  # the filters
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/ws/events"
            keyed = LiveFeed(url, "lt-", "/tests/load/x", auth_headers(KEY))
            anonymous = LiveFeed(url, "lt-", "/tests/load/x")
            for feed in (keyed, anonymous):
                await feed.start(connect_timeout=5)
            for feed in (keyed, anonymous):
                await feed.stop()
        return seen, keyed, anonymous

    seen, keyed, anonymous = asyncio.run(go())
    assert seen == [f"Bearer {KEY}", None]
    assert keyed.connected and keyed.error is None
    assert not anonymous.connected and anonymous.error is not None and "401" in anonymous.error


def test_a_benchmarks_own_service_requires_the_harness_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, str]] = []

    class Popen:
        def __init__(self, argv: list[str], env: dict[str, str], **kwargs: Any) -> None:
            started.append(env)

        def terminate(self) -> None: ...

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr("loom_load.search.subprocess.Popen", Popen)
    monkeypatch.delenv("LOOM_API_KEYS", raising=False)
    for key in (KEY, None):
        with service_process("loom_query", tmp_path, "postgresql://db", "nats://n", 1, None, key):
            pass
    assert started[0]["LOOM_API_KEYS"] == KEY and "LOOM_API_KEYS" not in started[1]


def test_the_live_feed_listens_again_after_a_stop_and_its_figures_add_up() -> None:
    async def go() -> tuple[int, LiveFeed]:
        connections = 0

        async def handler(ws: ServerConnection) -> None:
            nonlocal connections
            connections += 1
            await ws.recv()  # the filters
            at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            event = {"id": f"e{connections}", "type": "task.submitted", "time": at, "taskid": "lt-echo-1"}
            await ws.send(json.dumps({"type": "event", "data": event}))
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            feed = LiveFeed(f"ws://127.0.0.1:{port}/ws/events", "lt-", "/tests/load/x")
            for expected in (1, 2):
                await feed.start(connect_timeout=5, during=f"phase {expected}")
                await feed.start(connect_timeout=5, during="again")  # listening: no second connection
                async with asyncio.timeout(5):
                    while feed.ours < expected:
                        await asyncio.sleep(0.01)
                await feed.stop()
                assert not feed.listening
        return connections, feed

    connections, feed = asyncio.run(go())
    assert connections == 2
    assert feed.summary()["latency"]["count"] == 2 and feed.error is None
    assert feed.summary()["listened_to"] == ["phase 1", "phase 2"]
