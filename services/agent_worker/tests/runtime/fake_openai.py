"""A scripted OpenAI-compatible server on 127.0.0.1 (a free port), served in the test's loop.

Each ``POST /v1/chat/completions`` gets the next scripted :class:`Reply` (status, JSON body,
headers, an optional delay) or, for ``stream=True`` requests, a streamed reply (``streamed``:
``text/event-stream`` chunks, then ``data: [DONE]``); the requests are kept (JSON body and
headers) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunks: list[dict[str, Any]] | None = None  # a streamed reply: these chunks as SSE
    gate: asyncio.Event | None = None  # streamed: after the first chunk, wait (5 s at most) for it
    gate_timed_out: bool = False


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    model: str = "gpt-4o-mini",
) -> Reply:
    """A 200 chat completion."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return Reply(
        body={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tool call of a completion."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def streamed(
    pieces: list[str],
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    model: str = "gpt-4o-mini",
    gate: asyncio.Event | None = None,
) -> Reply:
    """A streamed chat completion: one chunk per text piece, each tool call in two chunks (name
    and id, then its arguments in two halves), then a usage chunk without choices."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [choice],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in pieces]
    for index, call in enumerate(tool_calls or []):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        start = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": arguments[:half]},
        }
        chunks.append(chunk({"tool_calls": [start]}))
        chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}))
    chunks.append(chunk({}, "tool_calls" if tool_calls else "stop"))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    chunks.append(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": usage,
        }
    )
    return Reply(chunks=chunks, gate=gate)


class FakeOpenAI:
    """The server: ``replies`` are answered in order; past the end it answers 500."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.seen: list[Seen] = []
        self.base_url = ""
        self._stop = asyncio.Event()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])

    async def _complete(self, request: Request) -> Response:
        self.seen.append(Seen(json.loads(await request.body()), dict(request.headers)))
        if not self.replies:
            return JSONResponse({"error": {"message": "no scripted reply left"}}, status_code=500)
        reply = self.replies.pop(0)
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), reply.delay_s)
        if reply.chunks is not None:
            return StreamingResponse(
                self._sse(reply), media_type="text/event-stream", status_code=reply.status
            )
        if isinstance(reply.body, str):
            return Response(reply.body, status_code=reply.status, headers=reply.headers)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    @staticmethod
    async def _sse(reply: Reply) -> AsyncIterator[bytes]:
        assert reply.chunks is not None
        for n, chunk in enumerate(reply.chunks):
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if n == 1 and reply.gate is not None:  # the first text: the client must see it now
                try:
                    await asyncio.wait_for(reply.gate.wait(), 5)
                except TimeoutError:
                    reply.gate_timed_out = True
        yield b"data: [DONE]\n\n"

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeOpenAI]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
            self.base_url = f"http://127.0.0.1:{port}/v1"
            yield self
        finally:
            self._stop.set()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            sock.close()
