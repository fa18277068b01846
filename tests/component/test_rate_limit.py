"""Submissions per API key (LOOM_SUBMIT_RATE_PER_KEY, LOOM_SUBMIT_BURST_PER_KEY): past its burst a
key is answered 429 with Retry-After and Loom's error body, over REST and over A2A, while another
key still submits."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.component

FIRST = "loom_test_first_key_0123456789abcdefghijklmnopqrstuv"
SECOND = "loom_test_second_key_0123456789abcdefghijklmnopqrstu"
LIMITED = {
    "LOOM_API_KEYS": f"{FIRST},{SECOND}",
    "LOOM_SUBMIT_RATE_PER_KEY": "0.05",  # one token back every 20 s: none comes back during the test
    "LOOM_SUBMIT_BURST_PER_KEY": "3",
}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_key_past_its_burst_is_refused_with_429_and_another_key_is_not(stack: Stack) -> None:
    registry = stack.registry_service(LOOM_API_KEYS=LIMITED["LOOM_API_KEYS"])
    dispatcher = stack.dispatcher_service(**LIMITED)
    worker = stack.worker_service("w1", LOOM_API_KEYS=LIMITED["LOOM_API_KEYS"])
    await asyncio.gather(*(svc.started(120) for svc in (registry, dispatcher, worker)))

    async with httpx.AsyncClient(timeout=10) as http:

        async def listed() -> bool:
            body = (await http.get(f"{registry.url}/api/agents", headers=bearer(FIRST))).json()
            return any(agent["agentId"] == "echo" for agent in body["agents"])

        await wait_for(listed, 30, "the worker's agents in the registry")

        async def submit(key: str) -> httpx.Response:
            body = {"targetAgent": "echo", "parameters": {"n": 1}}
            return await http.post(f"{dispatcher.url}/api/tasks", json=body, headers=bearer(key))

        accepted = [await submit(FIRST) for _ in range(3)]
        # 202 on its way, 200 when the echo already ended: accepted either way, not refused
        assert all(r.status_code in (200, 202) for r in accepted), [r.text for r in accepted]
        refused = await submit(FIRST)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert (await submit(SECOND)).status_code in (200, 202)  # the other key has its own bucket

        # A2A's SendMessage spends the same bucket; a read (GetTask) does not
        message = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {
                "message": {
                    "messageId": uuid.uuid4().hex,
                    "role": "ROLE_USER",
                    "parts": [{"text": "hi"}],
                }
            },
        }
        headers = {**bearer(FIRST), "A2A-Version": "1.0"}
        a2a = await http.post(f"{dispatcher.url}/a2a/echo", json=message, headers=headers)
        assert a2a.status_code == 429, a2a.text
        read = {"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": "nope"}}
        assert (await http.post(f"{dispatcher.url}/a2a/echo", json=read, headers=headers)).status_code == 200
