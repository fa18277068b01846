"""The Studio against a Loom that requires API keys (``LOOM_API_KEYS`` on the query, dispatcher
and replay services): the page loads and asks for a key; a wrong key is refused with the
server's reason; the right one is kept, shown in the header and sent on every request (the
task list, the live feed's WebSocket, the proxied approve and cancel, the JSONL export); a
read-only key is told which scope a cancel lacks, without being asked for a key again; a
forgotten key is asked for again."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from loom_protocol.auth import new_api_key
from playwright.async_api import Page, expect

from .conftest import Shot, Studio

pytestmark = pytest.mark.component

ADMIN = new_api_key()
OPERATOR = new_api_key()  # read, submit, approve
READER = new_api_key()
WRONG = new_api_key()  # issued to nobody
KEYS = f"{ADMIN},read+submit+approve:{OPERATOR},read:{READER}"
TERMINAL = ("completed", "failed", "cancelled", "dead")
FORM = "#key-form"


@pytest.fixture(scope="module")
def studio_env() -> dict[str, str]:
    return {"LOOM_API_KEYS": KEYS}


@pytest.fixture
def console_expected() -> tuple[re.Pattern[str], ...]:
    """What the browser logs of a refused request: a fetch answered 401/403, and a WebSocket
    whose handshake was refused."""
    return (
        re.compile(r"^Failed to load resource: the server responded with a status of 40[13] "),
        re.compile(
            r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws/events[^']*' failed: "
            r"(HTTP Authentication failed|Error during WebSocket handshake: Unexpected response code: 40[13])"
        ),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A REST client with the admin key."""
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {ADMIN}"}) as client:
        yield client


async def with_key(page: Page, key: str) -> None:
    """The page starts with ``key`` stored, as if it had been saved in the key form before."""
    await page.add_init_script(f"localStorage.setItem('loom.apiKey', {json.dumps(key)})")


def slow_script(seconds: float) -> dict[str, Any]:
    """A calculator task that computes, then sleeps ``seconds`` before it answers."""
    return {
        "prompt": "what is 6*7, slowly?",
        "script": [
            {"thought": "compute it", "tool": "calculator", "arguments": {"expression": "6*7"}},
            {"thought": "wait a little", "tool": "sleep", "arguments": {"seconds": seconds}},
            {"thought": "done", "answer": "42"},
        ],
    }


async def test_the_stack_refuses_requests_without_a_key(studio: Studio) -> None:
    async with httpx.AsyncClient(timeout=10) as plain:
        assert (await plain.get(f"{studio.url}/")).status_code == 200  # the page loads to ask for a key
        resp = await plain.get(f"{studio.url}/api/tasks")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        # the proxy is open at query; the dispatcher behind it refuses
        resp = await plain.post(f"{studio.url}/studio-api/dispatcher/api/tasks", json={"targetAgent": "echo"})
        assert resp.status_code == 401
        reader = {"authorization": f"Bearer {READER}"}
        resp = await plain.post(f"{studio.url}/studio-api/dispatcher/api/tasks/x/cancel", headers=reader)
        assert resp.status_code == 403 and resp.json()["error"]["scope"] == "submit"


async def test_the_page_asks_for_a_key_refuses_a_wrong_one_and_works_with_the_right_one(
    studio: Studio, page: Page, shot: Shot, http: httpx.AsyncClient
) -> None:
    first = await studio.submit(http, targetAgent="calculator", parameters={"prompt": "what is 2+2?"})
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    await page.goto(f"{studio.url}/#/tasks")
    form = page.locator(FORM)
    await expect(form).to_be_visible()
    await expect(page.locator("#key-title")).to_have_text("This Loom requires an API key")
    await expect(page.locator("#key-button")).to_have_count(0)  # no key stored: nothing to show
    await expect(page.locator("#key-cancel")).to_have_count(0)  # nothing works without one
    await shot("key-form")

    # a wrong key: refused here with the server's reason, not stored
    await page.fill("#key-input", WRONG)
    await page.click("#key-save")
    await expect(page.locator("#key-error")).to_contain_text("unknown or revoked API key")
    await expect(form).to_be_visible()
    assert await page.evaluate("localStorage.getItem('loom.apiKey')") is None
    await shot("key-refused")

    # the right key: kept, the page loads again with it
    await page.fill("#key-input", OPERATOR)
    async with page.expect_event("load"):
        await page.click("#key-save")
    await expect(page.locator(f'#tasks-table tr[data-task-id="{first["taskId"]}"]')).to_be_visible()
    await expect(form).to_have_count(0)
    await expect(page.locator("#key-hint")).to_have_text(OPERATOR[:9] + "…")
    assert await page.evaluate("localStorage.getItem('loom.apiKey')") == OPERATOR

    # the live feed takes the key: a task submitted now appears without a reload
    await expect(page.locator("#conn.up")).to_have_count(1)
    assert any(f"access_token={OPERATOR}" in url for url in sockets), sockets
    second = await studio.submit(http, targetAgent="calculator", parameters={"prompt": "what is 3+3?"})
    row = page.locator(f'#tasks-table tr[data-task-id="{second["taskId"]}"]')
    await expect(row).to_be_visible(timeout=10_000)
    await expect(row).to_have_attribute("data-status", "completed", timeout=20_000)
    await shot("tasks-with-key")

    # the header's control: change or forget the key; forgotten, it is asked for again
    await page.click("#key-button")
    await expect(form).to_be_visible()
    await page.click("#key-cancel")
    await expect(form).to_have_count(0)
    await page.click("#key-button")
    async with page.expect_event("load"):
        await page.click("#key-forget")
    await expect(page.locator("#key-title")).to_have_text("This Loom requires an API key")
    await expect(page.locator("#key-button")).to_have_count(0)
    assert await page.evaluate("localStorage.getItem('loom.apiKey')") is None


async def test_a_key_with_the_scopes_approves_and_cancels_through_the_proxy(
    studio: Studio, page: Page, shot: Shot, http: httpx.AsyncClient
) -> None:
    await with_key(page, OPERATOR)
    await page.goto(f"{studio.url}/#/approvals")
    await expect(page.locator("#approvals-count")).to_contain_text("waiting")
    waiting = await studio.submit(
        http,
        targetAgent="calculator",
        parameters={"prompt": "what is 6*7?"},
        metadata={"approvalTools": ["calculator"]},
    )
    await studio.task_status(http, waiting["taskId"], ("input_required",))
    card = page.locator(f'.card[data-task-id="{waiting["taskId"]}"]')
    await expect(card).to_be_visible(timeout=15_000)
    await card.locator("button.approve").click()
    done = await studio.task_status(http, waiting["taskId"], TERMINAL)
    assert done["status"] == "completed", done

    slow = await studio.submit(http, targetAgent="calculator", parameters=slow_script(60))
    await studio.task_status(http, slow["taskId"], ("running",))
    await page.goto(f"{studio.url}/#/trace/{slow['taskId']}")
    await expect(page.locator("#trace-status")).to_be_visible()
    await page.click("#cancel")
    cancelled = await studio.task_status(http, slow["taskId"], TERMINAL)
    assert cancelled["status"] == "cancelled", cancelled
    await expect(page.locator("#trace-status")).to_have_text("cancelled", timeout=15_000)
    await expect(page.locator("#cancel")).to_be_hidden()
    await expect(page.locator(FORM)).to_have_count(0)
    await shot("cancelled")


async def test_a_read_only_key_reads_and_exports_and_is_told_the_scope_a_cancel_lacks(
    studio: Studio, page: Page, shot: Shot, http: httpx.AsyncClient
) -> None:
    slow = await studio.submit(http, targetAgent="calculator", parameters=slow_script(60))
    task_id = slow["taskId"]
    await studio.task_status(http, task_id, ("running",))
    await with_key(page, READER)
    try:
        await page.goto(f"{studio.url}/#/trace/{task_id}")
        await expect(page.locator('.wf-row[data-kind="tool"]', has_text="calculator")).to_be_visible(
            timeout=15_000
        )
        await expect(page.locator("#conn.up")).to_have_count(1)

        await page.click("#cancel")
        result = page.locator("#cancel-result")
        await expect(result).to_contain_text("lacks the 'submit' scope")
        await expect(page.locator("#toast")).to_contain_text("lacks the 'submit' scope")
        await expect(page.locator(FORM)).to_have_count(0)  # the key is known: not asked again
        await shot("cancel-forbidden")
        status = (await http.get(f"{studio.dispatcher.url}/api/tasks/{task_id}")).json()["status"]
        assert status not in TERMINAL

        # the export: fetched with the key and saved as a file
        async with page.expect_download() as info:
            await page.click("#export")
        download = await info.value
        assert download.suggested_filename == f"task-{task_id}.jsonl"
        path = await download.path()
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines and {e["taskid"] for e in lines} == {task_id}
        assert "tool.call" in {e["type"] for e in lines}
    finally:
        await http.post(f"{studio.dispatcher.url}/api/tasks/{task_id}/cancel")
