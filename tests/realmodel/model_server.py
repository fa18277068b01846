"""The model server of the real-model tier: ``serve_model.py`` run by the python of the
real-model venv on a free loopback port, ready once ``/v1/models`` names the model it serves."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.harness import REPO, Process, free_port, wait_for

REALMODEL_PYTHON = Path(os.environ.get("LOOM_REALMODEL_PYTHON") or REPO / ".realmodel-venv/bin/python")
SERVE = Path(__file__).with_name("serve_model.py")
MODEL_ALIAS = "smollm2-135m-instruct"
START_S = 120.0  # loading the 93 MB model takes a few seconds; the bound is for a busy machine


@dataclass(frozen=True)
class ModelServer:
    """A running server: its ``/v1`` URL and the model name it serves."""

    base_url: str
    model: str


@contextlib.asynccontextmanager
async def serving(python: Path, log_dir: Path) -> AsyncIterator[ModelServer]:
    """The llama-cpp-python server of ``python``'s venv on 127.0.0.1, stopped in ``finally``."""
    port = free_port()
    argv = [
        str(python),
        str(SERVE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",  # one core for the model, the other for the stack: 3x faster than 2 threads
        "1",
        "--model_alias",
        MODEL_ALIAS,
    ]
    server = Process("llama-server", argv, dict(os.environ), log_dir)
    base_url = f"http://127.0.0.1:{port}/v1"

    async def served_model() -> str | None:
        if not server.alive:
            raise AssertionError(f"the llama server exited:\n{server.log_tail()}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                models = (await client.get(f"{base_url}/models")).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return str(models[0]["id"]) if models else None

    server.start()
    try:
        try:
            model = await wait_for(served_model, START_S, f"{base_url}/models", 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- llama server log ---\n{server.log_tail()}") from None
        yield ModelServer(base_url, model)
    finally:
        server.stop()
