"""``/studio-api/dispatcher/{path}`` and ``/studio-api/replay/{path}``: the browser reaches the
dispatcher (submit, approve, reject, cancel) and the replay service through the query origin.

Only those two upstreams (LOOM_DISPATCHER_URL, LOOM_REPLAY_URL): the path is always a path on
the configured host, never a URL. Method (GET, POST), query string, body, content type and the
caller's ``Authorization`` go through (these paths are open at query: the upstream, which has
the same API keys, checks the key); the upstream's status, content type and body come back. An
upstream that cannot be reached answers 502, one that does not answer within
LOOM_PROXY_TIMEOUT_S 504, both with the error body of every Loom API.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from loom_protocol.http import ErrorBody

from ..config import Settings

PREFIX = "/studio-api"
# request headers passed on (the API key: the upstream checks it); all else (cookies, host) stays here
_FORWARDED_REQUEST = ("content-type", "accept", "authorization", "traceparent", "tracestate")
_FORWARDED_RESPONSE = ("content-type", "location", "retry-after")


class Proxy:
    """The upstreams by name and one pooled HTTP client with a bounded timeout."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.upstreams = {
            "dispatcher": httpx.URL(settings.dispatcher_url),
            "replay": httpx.URL(settings.replay_url),
        }
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.proxy_timeout_s),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    def target(self, upstream: str, path: str, query: bytes) -> httpx.URL:
        """The upstream URL of ``path``: on the configured scheme, host and port whatever the path."""
        base = self.upstreams.get(upstream)
        if base is None:
            raise HTTPException(404, f"no upstream {upstream!r}; known: {', '.join(self.upstreams)}")
        joined = base.path.rstrip("/") + "/" + path.lstrip("/")
        return base.copy_with(path=joined, query=query or None)

    async def aclose(self) -> None:
        await self.client.aclose()


async def get_proxy(request: Request) -> Proxy:
    proxy: Proxy = request.app.state.studio_proxy
    return proxy


router = APIRouter(tags=["studio"])


async def forward(
    request: Request,
    proxy: Annotated[Proxy, Depends(get_proxy)],
    upstream: Annotated[str, Path(description="dispatcher or replay")],
    path: Annotated[str, Path(description="the path on the upstream, e.g. api/tasks")],
) -> Response:
    url = proxy.target(upstream, path, request.url.query.encode())
    headers = {k: v for k in _FORWARDED_REQUEST if (v := request.headers.get(k)) is not None}
    body = await request.body() if request.method == "POST" else None
    try:
        answer = await proxy.client.request(request.method, url, headers=headers, content=body)
    except httpx.TimeoutException as exc:
        message = f"{upstream} did not answer within {proxy.client.timeout.read} s: {type(exc).__name__}"
        return JSONResponse(ErrorBody.of(504, message, code="upstream_timeout").to_wire(), 504)
    except httpx.HTTPError as exc:
        message = f"{upstream} at {proxy.upstreams[upstream]} is unreachable: {type(exc).__name__}: {exc}"
        return JSONResponse(ErrorBody.of(502, message, code="upstream_unavailable").to_wire(), 502)
    out = {k: v for k in _FORWARDED_RESPONSE if (v := answer.headers.get(k)) is not None}
    return Response(answer.content, status_code=answer.status_code, headers=out)


for _method in ("GET", "POST"):
    router.add_api_route(
        PREFIX + "/{upstream}/{path:path}",
        forward,
        methods=[_method],
        operation_id=f"studio_proxy_{_method.lower()}",
        summary=f"Forward a {_method} to the dispatcher or the replay service",
        responses={code: {"model": ErrorBody} for code in (404, 502, 504)},
    )
