"""What the durable-execution tests of both tiers share: the events of a task as they were
published, and a fake OpenAI-compatible model that plays a plan and counts requests per step."""

from __future__ import annotations

import collections
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from loom_nats import flushed
from loom_protocol import CloudEvent, subjects
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .harness import serve_asgi


class Published:
    """Every observation event published on the test's account, by task id (a core NATS
    subscription: it sees each publish, so an event emitted twice is counted twice)."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[CloudEvent]] = collections.defaultdict(list)

    async def attach(self, nc: Any) -> None:
        async def on_msg(msg: Any) -> None:
            event = CloudEvent.from_json(msg.data)
            if event.taskid:
                self.by_task[event.taskid].append(event)

        await nc.subscribe(subjects.EVENT_ALL, cb=on_msg)
        await flushed(nc)

    def of(self, task_id: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e.data for e in self.by_task.get(task_id, []) if e.type == event_type and isinstance(e.data, dict)
        ]

    def types(self, task_id: str) -> list[str]:
        return [e.type for e in self.by_task.get(task_id, [])]


class PlanModel:
    """An OpenAI-compatible chat endpoint playing ``plan``: the answer to a request is the plan's
    entry for its step (the number of assistant messages it carries); ``requests`` counts the
    requests per step (a step asked twice was paid twice)."""

    def __init__(self, plan: list[dict[str, Any]], model: str = "gpt-4o-mini") -> None:
        self.plan = plan
        self.model = model
        self.requests: collections.Counter[int] = collections.Counter()
        self.base_url = ""

    async def complete(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        step = sum(1 for message in body["messages"] if message["role"] == "assistant")
        self.requests[step] += 1
        entry = self.plan[min(step, len(self.plan) - 1)]
        if "answer" in entry:
            message: dict[str, Any] = {"role": "assistant", "content": entry["answer"]}
        else:
            message = {
                "role": "assistant",
                "content": entry.get("thought"),
                "tool_calls": [
                    {
                        "id": f"call_{step}",
                        "type": "function",
                        "function": {"name": entry["tool"], "arguments": json.dumps(entry["arguments"])},
                    }
                ],
            }
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
                "object": "chat.completion",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[PlanModel]:
        app = Starlette(routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])])
        async with serve_asgi(app, "the fake model server") as url:
            self.base_url = f"{url}/v1"
            yield self

    def worker_env(self) -> dict[str, str]:
        """The settings that point a worker at this model."""
        return {
            "LOOM_LLM_PROVIDER": "openai",
            "LOOM_LLM_BASE_URL": self.base_url,
            "LOOM_LLM_MODEL": self.model,
            "LOOM_LLM_API_KEY": "sk-test",
            "LOOM_LLM_TIMEOUT_S": "10",
        }
