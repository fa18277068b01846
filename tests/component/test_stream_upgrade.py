"""A LOOM_TASKS stream made by an earlier version (no direct gets) is upgraded in place when the
dispatcher starts: direct gets on, the rest of its configuration as it was; an orchestrator's
children are then followed through it."""

from __future__ import annotations

import json

import httpx
import pytest
from loom_protocol.jetstream import TASKS_STREAM, stream_create_error, stream_create_request

from tests.integration.harness import Stack

pytestmark = pytest.mark.component


async def test_an_old_tasks_stream_gets_direct_gets_and_keeps_its_configuration(stack: Stack) -> None:
    nc = await stack.nats()
    earlier = TASKS_STREAM.model_copy(update={"allow_direct": False, "max_age_s": 3 * 86_400.0})
    reply = await nc.request(*stream_create_request(earlier), timeout=5)
    assert stream_create_error(reply.data) is None
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("w1")
    info = json.loads((await nc.request("$JS.API.STREAM.INFO.LOOM_TASKS", b"", timeout=5)).data)
    assert info["config"]["allow_direct"] is True
    assert info["config"]["max_age"] == 3 * 86_400 * 10**9  # the operator's retention stays
    await stack.wait_instances("orchestrator", 1)
    async with httpx.AsyncClient(base_url=stack.api, timeout=30) as api:
        answer = await api.post(
            "/api/tasks?wait=20",
            json={"targetAgent": "orchestrator", "parameters": {"prompt": "2+3 and 4*5"}},
        )
    assert answer.status_code in (200, 201, 202), answer.text
    assert answer.json()["status"] == "completed", answer.text
