"""API keys: the LOOM_API_KEYS format, the key ring, the access policy and the ASGI middleware
(driven with raw ASGI messages: this package imports no web framework)."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from loom_protocol.auth import (
    AccessPolicy,
    AccessRule,
    ApiKeyMiddleware,
    ApiKeyRecord,
    KeyRing,
    Scope,
    key_hash,
    new_api_key,
    parse_api_keys,
)

READ_KEY = "loom_read_only_key"
ADMIN_KEY = "loom_admin_key"


def test_new_keys_are_random_and_prefixed() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("loom_") and len(k) == 48 for k in keys)


def test_the_env_format_gives_scopes_and_defaults_to_admin() -> None:
    keys = parse_api_keys(f"{ADMIN_KEY}, read+submit:{READ_KEY}")
    admin, limited = keys[key_hash(ADMIN_KEY)], keys[key_hash(READ_KEY)]
    assert admin.scopes == [Scope.ADMIN] and admin.allows(Scope.APPROVE)
    assert limited.scopes == [Scope.READ, Scope.SUBMIT]
    assert limited.allows(Scope.SUBMIT) and not limited.allows(Scope.APPROVE)
    assert READ_KEY.encode() not in limited.to_json()  # never the key itself


@pytest.mark.parametrize("value", ["owner:loom_x", "read:", "read+nothing:loom_x"])
def test_a_bad_env_entry_is_refused_with_the_reason(value: str) -> None:
    with pytest.raises(ValueError, match="LOOM_API_KEYS entry 0"):
        parse_api_keys(value)


def test_the_ring_is_open_until_a_key_exists_and_forgets_revoked_keys() -> None:
    ring = KeyRing()
    assert not ring.required
    record = ApiKeyRecord.of(READ_KEY, "ci", [Scope.READ])
    ring.replace({key_hash(READ_KEY): record})
    assert ring.required and ring.lookup(READ_KEY) == record
    assert ring.lookup(READ_KEY + "x") is None
    ring.remove(key_hash(READ_KEY))
    assert not ring.required and ring.lookup(READ_KEY) is None


def test_a_read_that_began_before_a_local_change_does_not_undo_it() -> None:
    ring = KeyRing()
    record = ApiKeyRecord.of(READ_KEY, "ci", [Scope.READ])
    read_at = ring.version  # a refresh starts reading the bucket ...
    ring.put(key_hash(READ_KEY), record)  # ... this service stores a new key meanwhile ...
    ring.replace({}, read_at)  # ... and the refresh, without the new key, ends
    assert ring.lookup(READ_KEY) == record
    read_at = ring.version
    ring.remove(key_hash(READ_KEY))  # revoked while another read runs
    ring.replace({key_hash(READ_KEY): record}, read_at)
    assert ring.lookup(READ_KEY) is None
    ring.replace({key_hash(READ_KEY): record}, ring.version)  # a read that began after: taken
    assert ring.lookup(READ_KEY) == record


POLICY = AccessPolicy(
    write=Scope.SUBMIT,
    rules=(
        AccessRule(r"/api/tasks/[^/]+/approve", Scope.APPROVE),
        AccessRule(r"/public", None, frozenset({"GET"})),
    ),
)


@pytest.mark.parametrize(
    ("kind", "method", "path", "scope"),
    [
        ("http", "GET", "/api/tasks", Scope.READ),
        ("http", "POST", "/api/tasks", Scope.SUBMIT),
        ("http", "POST", "/api/tasks/t1/approve", Scope.APPROVE),
        ("http", "GET", "/public", None),
        ("http", "POST", "/public", Scope.SUBMIT),
        ("http", "GET", "/healthz", None),
        ("http", "GET", "/metrics", None),
        ("http", "GET", "/docs", None),
        ("http", "GET", "/openapi.json", None),
        ("http", "OPTIONS", "/api/tasks", None),
        ("websocket", "GET", "/ws/events", Scope.READ),
    ],
)
def test_the_policy_names_the_scope_of_each_request(
    kind: str, method: str, path: str, scope: Scope | None
) -> None:
    assert POLICY.scope_for(kind, method, path) == scope


class Asgi:
    """Runs the middleware around an app that answers 200 and records what it saw."""

    def __init__(self, ring: KeyRing) -> None:
        self.seen: list[MutableMapping[str, Any]] = []

        async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            self.seen.append(scope)
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.accept"})
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        self.middleware = ApiKeyMiddleware(app, ring, POLICY)

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        *,
        kind: str = "http",
        query: str = "",
        extensions: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        scope = {
            "type": kind,
            "method": method,
            "path": path,
            "headers": headers,
            "query_string": query.encode(),
            "extensions": extensions or {},
        }
        sent: list[dict[str, Any]] = []
        incoming = [{"type": "websocket.connect"}] if kind == "websocket" else [{"type": "http.request"}]

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        await self.middleware(scope, receive, send)
        return sent


def keyed_ring() -> KeyRing:
    return KeyRing(f"{ADMIN_KEY},read:{READ_KEY}")


async def test_without_any_key_configured_everything_passes() -> None:
    asgi = Asgi(KeyRing())
    sent = await asgi.call("POST", "/api/tasks")
    assert sent[0]["status"] == 200


async def test_a_request_without_a_key_is_refused_401_with_the_error_body() -> None:
    asgi = Asgi(keyed_ring())
    sent = await asgi.call("GET", "/api/tasks")
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="loom"') in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "unauthorized"
    assert asgi.seen == []
    unknown = await asgi.call("GET", "/api/tasks", "loom_nobody")
    assert unknown[0]["status"] == 401
    assert "unknown or revoked" in json.loads(unknown[1]["body"])["error"]["message"]


async def test_a_key_without_the_scope_is_refused_403_naming_it() -> None:
    asgi = Asgi(keyed_ring())
    assert (await asgi.call("GET", "/api/tasks", READ_KEY))[0]["status"] == 200
    sent = await asgi.call("POST", "/api/tasks", READ_KEY)
    assert sent[0]["status"] == 403
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "forbidden" and error["scope"] == "submit"
    assert (await asgi.call("POST", "/api/tasks/t1/approve", ADMIN_KEY))[0]["status"] == 200
    assert asgi.seen[-1]["state"]["api_key"].name == "LOOM_API_KEYS.0"


async def test_open_paths_need_no_key() -> None:
    asgi = Asgi(keyed_ring())
    for path in ("/healthz", "/readyz", "/metrics", "/public"):
        assert (await asgi.call("GET", path))[0]["status"] == 200


async def test_a_websocket_takes_the_key_from_the_query_and_is_refused_without_one() -> None:
    asgi = Asgi(keyed_ring())
    refused = await asgi.call("GET", "/ws/events", kind="websocket")
    assert refused == [{"type": "websocket.close", "code": 1008, "reason": "an API key is required"}]
    answered = await asgi.call(
        "GET", "/ws/events", kind="websocket", extensions={"websocket.http.response": {}}
    )
    assert answered[0]["type"] == "websocket.http.response.start" and answered[0]["status"] == 401
    accepted = await asgi.call("GET", "/ws/events", kind="websocket", query=f"a=1&access_token={READ_KEY}")
    assert accepted == [{"type": "websocket.accept"}]
    assert asgi.seen[-1]["query_string"] == b"a=1"  # the key is out of the URL the server logs


async def test_the_query_parameter_is_not_a_key_for_plain_http() -> None:
    asgi = Asgi(keyed_ring())
    sent = await asgi.call("GET", "/api/tasks", query=f"access_token={READ_KEY}")
    assert sent[0]["status"] == 401


async def test_a_service_that_could_not_read_its_stored_keys_refuses_with_503() -> None:
    ring = KeyRing()
    ring.unread = True
    asgi = Asgi(ring)
    sent = await asgi.call("GET", "/api/tasks")
    assert sent[0]["status"] == 503 and (b"retry-after", b"2") in sent[0]["headers"]
    assert (await asgi.call("GET", "/healthz"))[0]["status"] == 200
    ring.replace({})  # read: nothing stored, so the service is open
    assert (await asgi.call("GET", "/api/tasks"))[0]["status"] == 200
