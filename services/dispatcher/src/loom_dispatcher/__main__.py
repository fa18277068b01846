"""``python -m loom_dispatcher``: serve the dispatcher with uvicorn."""

from __future__ import annotations

import importlib.util

import uvicorn

from .app import create_app
from .config import Settings
from .logs import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        # uvloop: the event loop's own overhead (callbacks, timers, socket I/O) is a large part
        # of this service's CPU per message; uvloop cuts it (plain asyncio where it is missing)
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
