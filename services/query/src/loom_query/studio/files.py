"""The Studio's static files, served at ``/`` below every API route."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from . import STATIC_DIR


class StudioFiles(StaticFiles):
    """StaticFiles that only ever answers a path it holds: any other method or a WebSocket to a
    path no route has answer 404 as before (an unknown API path keeps its 404 error body), and
    the browser revalidates every file (``no-cache``), so a new Studio is seen on reload."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_studio(app: FastAPI) -> None:
    """Serve the Studio at ``/``: call last, after every other route, so none is shadowed."""
    app.mount("/", StudioFiles(directory=STATIC_DIR, html=True), name="studio")
