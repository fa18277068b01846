"""BodyLimitMiddleware on a bare ASGI app that reads the whole body and answers 422 on bad JSON,
as a framework would: over the limit, the client gets Loom's 413 body instead."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from loom_protocol import BodyLimitMiddleware

Message = MutableMapping[str, Any]


async def reading_app(scope: Message, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        json.loads(body)
        status, answer = 200, b'{"ok": true}'
    except ValueError:
        status, answer = 422, b'{"error": {"code": "invalid"}}'
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": answer})


async def call(chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, Any, int]:
    """(status, answer body, chunks the client had to send)"""
    pending = list(chunks)
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    await BodyLimitMiddleware(reading_app, limit=100)(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # one answer
    return sent[0]["status"], json.loads(sent[1]["body"]), len(chunks) - len(pending)


async def test_a_body_within_the_limit_reaches_the_app() -> None:
    status, answer, _ = await call([b'{"a":', b' "' + b"x" * 80 + b'"}'])
    assert (status, answer) == (200, {"ok": True})


async def test_a_body_over_the_limit_is_413_as_soon_as_it_passes_it() -> None:
    status, answer, read = await call([b'{"a": "' + b"x" * 60, b"x" * 60, b"x" * 60, b'"}'])
    assert status == 413 and read == 2  # the last chunks were never read
    assert answer["error"]["code"] == "content_too_large" and answer["error"]["limit"] == 100
    assert "over the limit of 100 bytes" in answer["error"]["message"]


async def test_a_declared_length_over_the_limit_is_413_before_anything_is_read() -> None:
    status, answer, read = await call([b"{}"], headers=[(b"content-length", b"5000")])
    assert status == 413 and read == 0
    assert answer["error"]["message"].startswith("the body is 5000 bytes,")
