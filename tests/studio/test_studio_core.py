"""The Studio in a real browser against a whole Loom stack: every view loads with no console
error and no request off 127.0.0.1; a task submitted from the task list appears there live and
its steps stream into its trace view while it runs; a pending tool call is approved (with
edited arguments) from the approvals inbox; the live feed shows events as they happen; the
query service's /docs is Swagger UI with nothing from another host."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from loom_query.studio import STATIC_DIR
from playwright.async_api import Page, expect

from .conftest import Shot, Studio

pytestmark = pytest.mark.component

ROUTES = {
    "tasks": ".view-tasks #tasks-table",
    "trace": ".view-trace .wf-row",
    "live": ".view-live #live-list",
    "approvals": ".view-approvals #approvals",
    "topology": ".view-topology",
    "metrics": ".view-metrics",
    "memory": ".view-memory",
    "replay": ".view-replay",
    "compare": ".view-compare",
}
TERMINAL = ("completed", "failed", "cancelled", "dead")


def slow_script(seconds: float) -> dict[str, Any]:
    """A calculator task that computes, sleeps ``seconds``, then answers: it runs for a while."""
    return {
        "prompt": "what is 6*7, slowly?",
        "script": [
            {"thought": "compute it", "tool": "calculator", "arguments": {"expression": "6*7"}},
            {"thought": "wait a little", "tool": "sleep", "arguments": {"seconds": seconds}},
            {"thought": "done", "answer": "42"},
        ],
    }


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def finished_task(studio: Studio) -> dict[str, Any]:
    """A completed calculator task, stored (for the views that show one)."""
    async with httpx.AsyncClient(timeout=30) as client:
        task = await studio.submit(client, targetAgent="calculator", parameters={"prompt": "what is 2+3?"})
        done = await studio.task_status(client, task["taskId"], TERMINAL)
        assert done["status"] == "completed", done

        async def stored() -> bool:
            body = (await client.get(f"{studio.url}/api/tasks", params={"status": "completed"})).json()
            return any(t["taskId"] == task["taskId"] for t in body["tasks"])

        from tests.integration.harness import wait_for

        await wait_for(stored, 30, "the finished task in /api/tasks")
        return done


@pytest.mark.parametrize("route", list(ROUTES))
async def test_every_view_loads_with_no_error_and_nothing_from_another_host(
    studio: Studio, finished_task: dict[str, Any], page: Page, shot: Shot, route: str
) -> None:
    if not (STATIC_DIR / "views" / f"{route}.js").is_file():
        pytest.skip(f"views/{route}.js is not written yet")
    task_id = finished_task["taskId"]
    hashes = {
        "trace": f"#/trace/{task_id}",
        "memory": "#/memory/calculator",
        "replay": f"#/replay/{task_id}",
        "compare": f"#/compare/{task_id}/{task_id}",
    }
    await page.goto(f"{studio.url}/{hashes.get(route, f'#/{route}')}")
    await expect(page.locator(ROUTES[route]).first).to_be_visible()
    await expect(page.locator(f'#nav a[data-route="{route}"]')).to_have_count(1 if route != "trace" else 0)
    await page.wait_for_load_state("networkidle")
    await expect(page.locator(".view .empty.error")).to_have_count(0)
    # a Loom without API keys: no key asked for, none shown
    await expect(page.locator("#key-form")).to_have_count(0)
    await expect(page.locator("#key-button")).to_have_count(0)
    await shot(route)


async def test_a_submitted_task_appears_live_and_its_steps_stream_into_its_trace(
    studio: Studio, page: Page, shot: Shot, http: httpx.AsyncClient
) -> None:
    await page.goto(f"{studio.url}/#/tasks")
    await expect(page.locator("#tasks-table")).to_be_visible()
    await page.wait_for_load_state("networkidle")
    await page.click("#submit-toggle")
    await page.fill("#submit-agent", "calculator")
    await page.fill("#submit-params", json.dumps(slow_script(4)))
    await page.click("#submit-go")
    link = page.locator("#submit-result a[data-task-id]")
    await expect(link).to_be_visible()
    task_id = await link.get_attribute("data-task-id")
    assert task_id

    # the task list shows it without a reload, while it is still running
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    await expect(row).to_be_visible(timeout=10_000)
    assert (await http.get(f"{studio.dispatcher.url}/api/tasks/{task_id}")).json()["status"] not in TERMINAL
    await shot("tasks-live")

    # its trace fills in step by step: the calculator call before the task ends
    await row.click()
    await expect(page).to_have_url(f"{studio.url}/#/trace/{task_id}")
    calc = page.locator('.wf-row[data-kind="tool"]', has_text="calculator")
    await expect(calc).to_be_visible(timeout=10_000)
    assert (await http.get(f"{studio.dispatcher.url}/api/tasks/{task_id}")).json()["status"] not in TERMINAL
    await expect(page.locator('.wf-row[data-kind="tool"]', has_text="sleep")).to_be_visible()
    await shot("trace-running")
    # then the answer and the final status, still without a reload
    await expect(page.locator('.wf-row[data-kind="answer"]')).to_be_visible(timeout=20_000)
    await expect(page.locator("#trace-status")).to_have_text("completed", timeout=20_000)

    # the inspector: an LLM call's prompt and completion with its tokens; a tool call's arguments
    await page.locator('.wf-row[data-kind="llm"]').first.click()
    inspector = page.locator("#inspector")
    await expect(inspector.get_by_role("heading", name="Completion")).to_be_visible()
    await expect(inspector.locator("dt", has_text="tokens")).to_be_visible()
    await calc.click()
    await expect(inspector.get_by_text('"expression": "6*7"').first).to_be_visible()
    await expect(inspector.get_by_text("42").first).to_be_visible()
    await shot("trace-inspector")

    # the export: every stored event of the task as JSON lines
    export = await http.get(f"{studio.url}{await page.locator('#export').get_attribute('href')}")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert {e["taskid"] for e in lines} == {task_id}
    assert {"llm.request", "llm.usage", "tool.call", "tool.result", "agent.answer"} <= {
        e["type"] for e in lines
    }
    assert [e["time"] for e in lines] == sorted(e["time"] for e in lines)


async def test_a_pending_call_is_approved_with_edited_arguments_from_the_inbox(
    studio: Studio, page: Page, shot: Shot, http: httpx.AsyncClient
) -> None:
    await page.goto(f"{studio.url}/#/approvals")
    await expect(page.locator("#approvals-count")).to_contain_text("waiting")
    await page.wait_for_load_state("networkidle")
    task = await studio.submit(
        http,
        targetAgent="calculator",
        parameters={"prompt": "what is 6*7?"},
        metadata={"approvalTools": ["calculator"]},
    )
    task_id = task["taskId"]
    await studio.task_status(http, task_id, ("input_required",))

    # the inbox shows it without a reload: the tool, its arguments
    card = page.locator(f'.card[data-task-id="{task_id}"]')
    await expect(card).to_be_visible(timeout=15_000)
    await expect(card).to_contain_text("calculator")
    args = card.locator("textarea.args")
    assert json.loads(await args.input_value()) == {"expression": "6*7"}
    await args.fill(json.dumps({"expression": "6*8"}))
    await shot("approvals")
    await card.locator("button.approve").click()

    done = await studio.task_status(http, task_id, TERMINAL)
    assert done["status"] == "completed", done
    assert "48" in json.dumps(done["result"])
    await expect(card).to_have_count(0, timeout=15_000)

    # the task list tells the story: the approved task completed
    await page.click('#nav a[data-route="tasks"]')
    await expect(page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')).to_have_attribute(
        "data-status", "completed", timeout=15_000
    )
    await shot("tasks")


async def test_the_live_feed_shows_a_tasks_events_as_they_happen(
    studio: Studio, page: Page, shot: Shot, http: httpx.AsyncClient
) -> None:
    await page.goto(f"{studio.url}/#/live")
    await expect(page.locator("#live-counts")).to_be_visible()
    await expect(page.locator("#conn.up")).to_have_count(1)
    task = await studio.submit(http, targetAgent="calculator", parameters={"prompt": "what is 3*3?"})
    await expect(page.locator(".vrow", has_text=task["taskId"][:8]).first).to_be_visible(timeout=10_000)
    await expect(page.locator('.vrow[data-type="agent.answer"]').first).to_be_visible(timeout=15_000)
    # filtered on the server (type) and here (data.<field>=value)
    await page.fill("#f-type", "tool.*")
    await page.fill("#f-data", "data.name=calculator")
    await expect(page.locator("#live-list")).to_have_attribute("data-subscribed", '{"event_type":["tool.*"]}')
    await page.click("#clear")
    await studio.submit(http, targetAgent="calculator", parameters={"prompt": "what is 4*4?"})
    rows = page.locator(".vrow")
    await expect(rows.first).to_be_visible(timeout=10_000)
    assert set(await rows.evaluate_all("rs => rs.map(r => r.dataset.type)")) <= {"tool.call", "tool.result"}
    await rows.first.click()
    await expect(page.locator("#inspector pre")).to_contain_text('"name": "calculator"')
    await shot("live")


async def test_the_query_docs_are_swagger_ui_with_nothing_from_another_host(
    studio: Studio, page: Page
) -> None:
    await page.goto(f"{studio.url}/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Loom query")
    await expect(page.locator(".opblock-summary-path", has_text="/api/tasks").first).to_be_visible()
    await page.wait_for_load_state("networkidle")
