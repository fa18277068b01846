"""API keys: who may call Loom's HTTP and WebSocket APIs, and what for.

A key is a random bearer token (``loom_`` and 43 URL-safe characters) sent as
``Authorization: Bearer <key>``; a browser's WebSocket, which cannot set headers, sends it as the
``access_token`` query parameter instead. Keys are never stored: a service knows a key by the
SHA-256 of it (a 256-bit random secret needs no slow hash), with the record of its name and
scopes. Keys come from two places:

* ``LOOM_API_KEYS`` (every service): fixed keys, separated by commas, each ``key`` (every scope)
  or ``scope+scope:key`` (e.g. ``read:loom_abc…``);
* the JetStream key-value bucket ``LOOM_API_KEYS``: keys created and revoked at run time
  (``loom keys create|list|revoke``, the dispatcher's ``/api/keys``), the SHA-256 as the key and
  the :class:`ApiKeyRecord` as the value. Each service re-reads it every few seconds
  (:func:`stored_keys_followed`), so a revoked key stops working everywhere within that time.

A service with no key at all is open (a development stack); once any key exists, every request
needs one, except ``/healthz``, ``/readyz`` and ``/metrics``. :class:`ApiKeyMiddleware` is a plain
ASGI middleware (no web framework imported here), configured per service with an
:class:`AccessPolicy` mapping each request to the :class:`Scope` it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from pydantic import Field, ValidationError

from loom_protocol.base import Label, LoomModel, utc_now
from loom_protocol.http import AsgiApp, AsgiReceive, AsgiScope, AsgiSend, ErrorBody, header
from loom_protocol.logconfig import mark_websocket_denied

__all__ = [
    "ACCESS_TOKEN_PARAM",
    "API_KEYS_BUCKET",
    "OPEN_PATHS",
    "AccessPolicy",
    "AccessRule",
    "ApiKeyList",
    "ApiKeyMiddleware",
    "ApiKeyRecord",
    "CreatedApiKey",
    "InvalidToken",
    "KeyRing",
    "NewApiKey",
    "Scope",
    "StoredValues",
    "TokenVerifier",
    "key_hash",
    "new_api_key",
    "parse_api_keys",
    "parse_stored_keys",
    "refresh_stored_keys",
    "stored_keys_followed",
]

log = logging.getLogger(__name__)

API_KEYS_BUCKET = "LOOM_API_KEYS"
"""The JetStream key-value bucket of keys created at run time: SHA-256 hex -> ApiKeyRecord."""

ACCESS_TOKEN_PARAM = "access_token"  # noqa: S105 (a parameter name)
"""The query parameter a WebSocket client that cannot set headers (a browser) sends its key in."""

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths every service answers without a key: its supervisor's probes and Prometheus."""

_DOCS = re.compile(r"/docs|/docs/oauth2-redirect|/redoc|/openapi\.json|/static-offline-docs/[^?#]*")
"""The API's own documentation (Swagger UI and its files): open, like any published API reference."""

KEY_PREFIX = "loom_"


class Scope(StrEnum):
    """What a key may do. ``admin`` may do everything, including managing keys."""

    READ = "read"
    """Read tasks, events, sessions, metrics, agents, replays; the live feeds."""
    SUBMIT = "submit"
    """Submit and cancel tasks (also over A2A); start replays and forks."""
    APPROVE = "approve"
    """Approve or reject a tool call a task waits on."""
    INGEST = "ingest"
    """Send events and traces to ingest (``/ws/ingest``, ``/v1/traces``, CloudEvents)."""
    ADMIN = "admin"
    """Everything, and create, list and revoke keys."""


def new_api_key() -> str:
    """Return a new random API key: ``loom_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """Return the SHA-256 hex digest of ``key``: what services store and look keys up by."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeyRecord(LoomModel):
    """A key as services know it: never the key itself."""

    id: str = Field(description="first 16 hex characters of the key's SHA-256: names the key to revoke it")
    name: Label
    scopes: list[Scope] = Field(min_length=1)
    created_at: datetime = Field(default_factory=utc_now)
    hint: str = Field(default="", description="the key's first characters, to recognise it")

    def allows(self, scope: Scope) -> bool:
        """True when the key has ``scope`` (or ``admin``)."""
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @classmethod
    def of(cls, key: str, name: str, scopes: Iterable[Scope]) -> ApiKeyRecord:
        """The record of ``key``."""
        return cls(id=key_hash(key)[:16], name=name, scopes=sorted(set(scopes)), hint=key[:9] + "…")


class NewApiKey(LoomModel):
    """The body of ``POST /api/keys``."""

    name: Label
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


class CreatedApiKey(LoomModel):
    """The answer to ``POST /api/keys``: the key itself, shown this once."""

    key: str
    record: ApiKeyRecord


class ApiKeyList(LoomModel):
    """The answer to ``GET /api/keys``: the stored keys (fixed ``LOOM_API_KEYS`` keys are not listed)."""

    keys: list[ApiKeyRecord] = Field(description="sorted by name, then id")


def parse_api_keys(value: str) -> dict[str, ApiKeyRecord]:
    """The fixed keys of ``LOOM_API_KEYS``, by SHA-256.

    Args:
        value: Keys separated by commas (or whitespace), each ``key`` (every scope) or
            ``scope+scope:key``.

    Returns:
        SHA-256 hex of each key -> its record (named ``LOOM_API_KEYS.<i>``).

    Raises:
        ValueError: An entry names an unknown scope or is empty after its scopes.
    """
    keys: dict[str, ApiKeyRecord] = {}
    for i, entry in enumerate(e for e in re.split(r"[,\s]+", value) if e):
        scopes_part, sep, key = entry.rpartition(":")
        if not sep:
            scopes_part, key = Scope.ADMIN.value, entry
        if not key:
            raise ValueError(f"LOOM_API_KEYS entry {i} has no key after its scopes")
        try:
            scopes = [Scope(s) for s in scopes_part.split("+")]
        except ValueError:
            raise ValueError(
                f"LOOM_API_KEYS entry {i}: scopes must be among {', '.join(s.value for s in Scope)}"
            ) from None
        keys[key_hash(key)] = ApiKeyRecord.of(key, f"LOOM_API_KEYS.{i}", scopes)
    return keys


class KeyRing:
    """The keys a service accepts: the fixed ones and the stored ones it last read."""

    def __init__(self, fixed: str = "") -> None:
        self._fixed = parse_api_keys(fixed)
        self._stored: dict[str, ApiKeyRecord] = {}
        self._version = 0
        self.unread = False
        """True while the stored keys could not be read even once (e.g. the broker was away at
        start): a service without fixed keys then refuses requests (503) rather than run open."""

    @property
    def required(self) -> bool:
        """True once any key exists: every request then needs one."""
        return bool(self._fixed or self._stored)

    @property
    def version(self) -> int:
        """Counts this service's own changes (:meth:`put`, :meth:`remove`)."""
        return self._version

    def replace(self, stored: Mapping[str, ApiKeyRecord], read_at: int | None = None) -> None:
        """Take the stored keys as read (SHA-256 hex -> record). ``read_at``: :attr:`version`
        when the read began; a read that began before one of this service's own changes is
        dropped (it may miss the change; the next read has it)."""
        if read_at is not None and read_at != self._version:
            return
        self._stored = dict(stored)
        self.unread = False

    def put(self, digest: str, record: ApiKeyRecord) -> None:
        """A key this service just stored: accepted at once."""
        self._stored[digest] = record
        self._version += 1

    def remove(self, digest: str) -> None:
        """A key this service just revoked: refused at once."""
        self._stored.pop(digest, None)
        self._version += 1

    def lookup(self, key: str) -> ApiKeyRecord | None:
        """The record of ``key``, or None for a key nobody issued (or one revoked)."""
        digest = key_hash(key)
        return self._fixed.get(digest) or self._stored.get(digest)


StoredValues = Callable[[], Awaitable[Mapping[str, bytes]]]
"""Reads the ``LOOM_API_KEYS`` bucket's current values by key (``loom_nats.latest_values`` on
it); raises ``BucketNotFoundError`` (nats-py's) when the bucket does not exist yet."""


def parse_stored_keys(values: Mapping[str, bytes]) -> dict[str, ApiKeyRecord]:
    """The records among the bucket's ``values`` (SHA-256 → record); a value that is not an
    :class:`ApiKeyRecord` is skipped and logged."""
    keys: dict[str, ApiKeyRecord] = {}
    for digest, value in values.items():
        try:
            keys[digest] = ApiKeyRecord.model_validate_json(value)
        except ValidationError as exc:
            log.warning("stored API key %s skipped: %s", digest[:16], exc.errors()[0]["msg"])
    return keys


async def refresh_stored_keys(ring: KeyRing, read_values: StoredValues, timeout_s: float = 5.0) -> bool:
    """Read the stored keys into ``ring`` once; False (``ring`` unchanged) when the bucket could
    not be read. A bucket that does not exist yet holds no keys."""
    read_at = ring.version
    try:
        ring.replace(parse_stored_keys(await asyncio.wait_for(read_values(), timeout_s)), read_at)
    except Exception as exc:
        if type(exc).__name__ != "BucketNotFoundError":  # nats.js.errors, not imported here
            log.debug("stored API keys not read: %r", exc)
            return False
        ring.replace({}, read_at)
    return True


@contextlib.asynccontextmanager
async def stored_keys_followed(
    ring: KeyRing, read_values: StoredValues, interval_s: float = 2.0
) -> AsyncIterator[None]:
    """Read the stored keys into ``ring`` now, then every ``interval_s`` until the block ends
    (a service's lifespan), with ``read_values``, e.g.
    ``lambda: latest_values(js, API_KEYS_BUCKET)``. While the bucket cannot be read (the broker is
    away), ``ring`` keeps the keys it read last."""
    stop = asyncio.Event()

    async def follow() -> None:
        failing = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if stop.is_set():
                return
            read = await refresh_stored_keys(ring, read_values)
            if not read and not failing:
                log.warning("stored API keys not read; the last ones read stay in force")
            failing = not read

    if not await refresh_stored_keys(ring, read_values):
        ring.unread = True
        log.warning("stored API keys not read at start: until they are, only LOOM_API_KEYS keys are accepted")
    follower = asyncio.create_task(follow(), name="api-keys")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait({follower}, timeout=10)


@dataclass(frozen=True)
class AccessRule:
    """Requests whose method is in ``methods`` (any when empty) and whose path matches
    ``pattern`` need ``scope`` (None: no key at all)."""

    pattern: str
    scope: Scope | None
    methods: frozenset[str] = frozenset()

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and re.fullmatch(self.pattern, path) is not None


@dataclass(frozen=True)
class AccessPolicy:
    """The scope each request of one service needs: the first matching rule's; otherwise
    ``websocket`` for a WebSocket, ``read`` for GET and HEAD, ``write`` for any other method.
    :data:`OPEN_PATHS`, the API's documentation (``/docs``, ``/openapi.json``) and CORS
    preflights (OPTIONS) need none."""

    write: Scope
    websocket: Scope = Scope.READ
    rules: tuple[AccessRule, ...] = field(default=())

    def scope_for(self, kind: str, method: str, path: str) -> Scope | None:
        if path in OPEN_PATHS or (method in ("GET", "HEAD") and _DOCS.fullmatch(path)):
            return None
        for rule in self.rules:
            if rule.matches(method, path):
                return rule.scope
        if kind == "websocket":
            return self.websocket
        if method in ("GET", "HEAD"):
            return Scope.READ
        if method == "OPTIONS":
            return None
        return self.write


def _bearer(scope: AsgiScope) -> str | None:
    if (value := header(scope, b"authorization")) is not None:
        kind, _, token = value.partition(" ")
        if kind.lower() != "bearer":
            return None
        return token.strip() or None
    if scope["type"] == "websocket":
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        tokens = [v for k, v in pairs if k == ACCESS_TOKEN_PARAM]
        if tokens:  # out of the URL the server logs and the app sees (the scope is the server's own)
            rest = [(k, v) for k, v in pairs if k != ACCESS_TOKEN_PARAM]
            scope["query_string"] = urlencode(rest).encode("latin-1")
        return tokens[0] if tokens else None
    return None


class InvalidToken(Exception):  # noqa: N818 (the name says what was refused)
    """A bearer token that is not an API key was refused: ``status`` 401 (not valid), 403 (valid,
    but it grants none of Loom's scopes) or 503 (it cannot be checked now)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class TokenVerifier(Protocol):
    """Checks bearer tokens that are not API keys (an identity provider's JWTs): returns the
    record of the scopes the token grants, or raises :class:`InvalidToken`."""

    async def verify(self, token: str) -> ApiKeyRecord: ...


class ApiKeyMiddleware:
    """ASGI middleware: refuses a request without a key (401) or whose key lacks the scope the
    ``policy`` says it needs (403), with Loom's error body; a WebSocket handshake likewise
    (as an HTTP answer where the server supports it, else closed with code 1008). Lets every
    request through while ``ring`` holds no key and no ``tokens`` verifier is set. A bearer
    token that is not a Loom key (no ``loom_`` prefix) goes to ``tokens`` when one is set. The
    accepted key's record is in ``scope["state"]["api_key"]``."""

    def __init__(
        self, app: AsgiApp, ring: KeyRing, policy: AccessPolicy, tokens: TokenVerifier | None = None
    ) -> None:
        self.app = app
        self.ring = ring
        self.policy = policy
        self.tokens = tokens

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        kind = scope["type"]
        guarded = self.ring.required or self.ring.unread or self.tokens is not None
        if kind not in ("http", "websocket") or not guarded:
            return await self.app(scope, receive, send)
        needed = self.policy.scope_for(kind, scope.get("method", "GET"), scope.get("path", ""))
        if needed is not None:
            token = _bearer(scope)
            if token is not None and self.tokens is not None and not token.startswith(KEY_PREFIX):
                try:
                    record: ApiKeyRecord | None = await self.tokens.verify(token)
                except InvalidToken as exc:
                    return await self._deny(scope, receive, send, exc.status, str(exc))
            elif not self.ring.required and self.ring.unread:  # no key known yet: none can be checked
                message = "the API keys are not read yet (the broker is not reachable); retry"
                return await self._deny(scope, receive, send, 503, message)
            else:
                record = self.ring.lookup(token) if token else None
            if record is None:
                message = "an API key is required" if token is None else "unknown or revoked API key"
                return await self._deny(scope, receive, send, 401, message)
            if not record.allows(needed):
                message = f"the API key {record.id} lacks the '{needed}' scope this request needs"
                return await self._deny(scope, receive, send, 403, message, needed)
            scope.setdefault("state", {})["api_key"] = record
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(
        scope: AsgiScope,
        receive: AsgiReceive,
        send: AsgiSend,
        status: int,
        message: str,
        needed: Scope | None = None,
    ) -> None:
        details = {} if needed is None else {"scope": needed.value}
        body = json.dumps(ErrorBody.of(status, message, **details).to_wire()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="loom"'))
        elif status == 503:
            headers.append((b"retry-after", b"2"))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            mark_websocket_denied()
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
