"""A route class that holds request bodies to a size limit while they are read.

FastAPI reads a JSON body whole before validating it; a 50 MiB body of small numbers would be
parsed (hundreds of MiB in Python objects, seconds of a busy event loop) before any limit was
checked. Routes of this class answer 413 from the declared ``Content-Length`` before reading,
or as soon as the bytes read pass the limit, so the service keeps answering meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from loom_protocol.limits import MAX_BODY_BYTES
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message


def _too_large(limit: int, size: int | None = None) -> HTTPException:
    told = f"body is {size} bytes" if size is not None else "body is"
    return HTTPException(413, f"{told} over the limit of {limit} bytes")


def limited(request: Request, limit: int) -> Request:
    """The same request whose body cannot be read past ``limit`` bytes (413 instead)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, int(declared))
    receive = request.receive
    seen = 0

    async def counting() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return Request(request.scope, counting)


class LimitedBodyRoute(APIRoute):
    """An :class:`APIRoute` whose request bodies are held to :data:`MAX_BODY_BYTES` as they are read."""

    max_body_bytes = MAX_BODY_BYTES

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = self.max_body_bytes

        async def limited_handler(request: Request) -> Response:
            return await handler(limited(request, limit))

        return limited_handler
