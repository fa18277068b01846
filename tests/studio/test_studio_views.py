"""Browser tests of the Studio's topology, replay, metrics, memory and compare views, against the
whole stack (tests/studio/conftest.py) after a few calculator and orchestrator tasks ran."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.integration.harness import wait_for
from tests.integration.replay_support import trace_of, wait_trace_stored

from .conftest import Shot, Studio, copy_shot

pytestmark = [pytest.mark.timeout(300)]

GRAPH = "[data-testid=topology-graph]"


@dataclass
class Recorded:
    """Finished tasks whose events are all stored."""

    calc: dict[str, Any]  # (2+3)*4 = 20
    calc2: dict[str, Any]  # 7*6 = 42
    orchestrated: dict[str, Any]


async def run(studio: Studio, http: httpx.AsyncClient, agent: str, prompt: str) -> dict[str, Any]:
    """Run a task through the Studio's proxy and wait until all its events are stored."""
    submitted = await studio.submit(http, targetAgent=agent, parameters={"prompt": prompt})
    task = await studio.task_status(http, submitted["taskId"], ("completed", "failed", "dead", "cancelled"))
    assert task["status"] == "completed", task
    await wait_trace_stored(studio.database_url, trace_of(task))
    return task


@pytest.fixture(scope="module")
async def recorded(studio: Studio) -> AsyncIterator[Recorded]:
    async with httpx.AsyncClient(timeout=60) as http:
        yield Recorded(
            calc=await run(studio, http, "calculator", "what is (2+3)*4?"),
            calc2=await run(studio, http, "calculator", "what is 7*6?"),
            orchestrated=await run(studio, http, "orchestrator", "what is 6*7 and hello"),
        )


async def query_has_task(studio: Studio, task_id: str) -> None:
    """Wait until the query service has the finished task (so a view never meets a 404)."""

    async def stored() -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{studio.url}/api/tasks/{task_id}")
        return resp.status_code == 200 and (resp.json().get("task") or {}).get("status") == "completed"

    await wait_for(stored, 60, f"task {task_id} stored")
    async with httpx.AsyncClient(timeout=10) as http:
        task = (await http.get(f"{studio.url}/api/tasks/{task_id}")).json()["task"]
    if task.get("traceId"):
        await wait_trace_stored(studio.database_url, task["traceId"])


async def click_node(page: Page, node_id: str) -> None:
    """Click a graph node where Cytoscape drew it (a real mouse click on the canvas)."""
    point = await page.evaluate(
        """(id) => {
            const graph = document.querySelector('[data-testid=topology-graph]');
            const p = graph.cy.getElementById(id).renderedPosition();
            const r = graph.getBoundingClientRect();
            return {x: r.left + p.x, y: r.top + p.y};
        }""",
        node_id,
    )
    await page.mouse.click(point["x"], point["y"])


async def test_topology_updates_in_place_and_a_clicked_node_shows_its_events(
    studio: Studio, recorded: Recorded, page: Page, shot: Shot
) -> None:
    await page.goto(f"{studio.url}/#/topology")
    await page.wait_for_function(
        f"""() => {{
            const cy = document.querySelector('{GRAPH}')?.cy;
            return cy && ['agent:calculator', 'tool:calculator', 'agent:orchestrator']
                .every((id) => cy.getElementById(id).nonempty());
        }}"""
    )
    edges = await page.evaluate(
        f"""() => document.querySelector('{GRAPH}').cy.edges().map((e) => ({{
            id: e.id(), count: e.data('count'), label: e.data('label'), errors: e.data('errors')}}))"""
    )
    by_id = {e["id"]: e for e in edges}
    tool_edge = by_id["agent:calculator->tool:calculator"]
    assert tool_edge["count"] >= 2 and tool_edge["errors"] == 0, tool_edge
    assert tool_edge["label"] == str(tool_edge["count"])  # no error rate on an edge without errors
    assert "agent:orchestrator->agent:calculator" in by_id, edges

    # a new task whose tool call fails: the graph's elements are updated, not rebuilt (the mark
    # on the node survives), and the tool edge shows its error rate
    before = await page.evaluate(
        f"""() => {{
            const node = document.querySelector('{GRAPH}').cy.getElementById('agent:calculator');
            node.scratch('_mark', 'kept');
            return node.data('events');
        }}"""
    )
    async with httpx.AsyncClient(timeout=60) as http:
        await run(studio, http, "calculator", "what is 1/0?")
    await page.wait_for_function(
        f"""(before) => {{
            const cy = document.querySelector('{GRAPH}').cy;
            return cy.getElementById('agent:calculator').data('events') > before
                && cy.getElementById('agent:calculator->tool:calculator').data('errors') === 1;
        }}""",
        arg=before,
        timeout=30_000,
    )
    graph = await page.evaluate(
        f"""() => {{
            const cy = document.querySelector('{GRAPH}').cy;
            const edge = cy.getElementById('agent:calculator->tool:calculator');
            return {{mark: cy.getElementById('agent:calculator').scratch('_mark'), calls: edge.data('calls'),
                     label: edge.data('label'), colour: edge.data('colour')}};
        }}"""
    )
    assert graph["mark"] == "kept", graph
    assert graph["calls"] >= 3, graph
    shown = re.fullmatch(r"\d+ · (\d+)% err", graph["label"])
    assert shown is not None and abs(int(shown[1]) - 100 / graph["calls"]) <= 0.5, graph
    assert graph["colour"] != "#94a3b8", graph  # not the colour of an edge without errors

    await click_node(page, "agent:calculator")
    events = page.get_by_test_id("topology-events")
    await expect(events.locator("tr[data-type='llm.request']").first).to_be_visible()
    await expect(page.get_by_test_id("topology-side").locator("h3")).to_have_text("calculator")
    link = events.locator("a[href^='#/trace/']").first
    href = await link.get_attribute("href")
    assert href is not None and len(href) > len("#/trace/")
    copy_shot(await shot("topology"), "studio-topology")

    # a trace filter narrows the graph to that trace's nodes
    await page.fill("input[name=trace]", trace_of(recorded.calc))
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_function(
        f"() => document.querySelector('{GRAPH}').cy.getElementById('agent:orchestrator').empty()"
    )
    await click_node(page, "tool:calculator")
    await expect(page.get_by_test_id("topology-side")).to_contain_text("tool · ")
    await expect(events.locator("tr[data-type='tool.result']")).to_have_count(1)  # that trace's one call
    await link.click()
    await expect(page).to_have_url(re.compile(r"#/trace/"))


async def test_replay_steps_back_and_forth_plays_to_a_breakpoint_and_replays_deterministically(
    studio: Studio, recorded: Recorded, page: Page, shot: Shot
) -> None:
    task_id = recorded.calc["taskId"]
    await page.goto(f"{studio.url}/#/replay/{task_id}")
    position = page.get_by_test_id("replay-position")
    event_type = page.get_by_test_id("replay-event-type")
    event_panel = page.get_by_test_id("replay-event")
    await expect(position).to_have_text(re.compile(r"^Step 0 / \d+$"))
    total = int((await position.text_content() or "").rsplit("/", 1)[1])
    assert total > 10

    await page.get_by_test_id("replay-step").click()
    await expect(position).to_have_text(f"Step 1 / {total}")
    first_type, first_panel = await event_type.text_content(), await event_panel.text_content()
    await page.get_by_test_id("replay-step").click()
    await expect(position).to_have_text(f"Step 2 / {total}")
    assert await event_panel.text_content() != first_panel
    await page.get_by_test_id("replay-back").click()
    await expect(position).to_have_text(f"Step 1 / {total}")
    assert (await event_type.text_content(), await event_panel.text_content()) == (first_type, first_panel)

    # the last step: the task completed with its answer, its conversation and memory rebuilt
    await page.fill("input[name=jump]", str(total))
    await page.get_by_test_id("replay-jump").click()
    await expect(position).to_have_text(f"Step {total} / {total}")
    state = page.get_by_test_id("replay-state")
    await expect(state.get_by_test_id("replay-task-status")).to_contain_text("status completed")
    await expect(state.locator(".replay-msg[data-role=tool]")).to_contain_text("20")
    await expect(page.get_by_test_id("replay-memory")).to_contain_text("calculator(expression=")
    await expect(page.get_by_test_id("replay-step")).to_be_disabled()

    # play from the start until the breakpoint on the tool's result
    await page.get_by_test_id("replay-first").click()
    await expect(position).to_have_text(f"Step 1 / {total}")
    await page.fill("input[name=bp-types]", "tool.result")
    await page.select_option("select[name=speed]", "25")
    await page.get_by_test_id("replay-play").click()
    await expect(page.get_by_test_id("replay-status")).to_contain_text("Breakpoint at step", timeout=30_000)
    await expect(event_type).to_have_text("tool.result")
    stopped_at = await page.get_by_test_id("replay-status").get_attribute("data-breakpoint")
    await expect(position).to_have_text(f"Step {stopped_at} / {total}")

    await page.get_by_test_id("replay-deterministic").click()
    verdict = page.get_by_test_id("replay-verdict")
    await expect(verdict).to_have_text("No divergence: the replay matches the recording", timeout=60_000)
    runs = page.get_by_test_id("replay-report").locator("table.replay-runs")
    await expect(runs.locator("tr", has_text="answer")).to_contain_text("20")
    await expect(runs.locator("tr.replay-diff")).to_have_count(0)
    copy_shot(await shot("replay"), "studio-replay")

    # the recorded tool result tampered with: the replay diverges at the LLM step that reads it
    await page.fill("textarea[name=overrides]", '{"toolResults": {"0": "21"}}')
    await page.get_by_test_id("replay-deterministic").click()
    await expect(verdict).to_have_text("Diverged at step 2 (llm)", timeout=60_000)
    await expect(page.get_by_test_id("replay-reason")).to_contain_text("LLM step 2")
    report = page.get_by_test_id("replay-report")
    await expect(report).to_contain_text("tampered with")
    await expect(report.locator("td pre").nth(0)).to_contain_text('"20"')  # expected
    await expect(report.locator("td pre").nth(1)).to_contain_text('"21"')  # got

    # a fork from step 2 with a new plan: another answer, side by side, then compared
    await page.fill("input[name=fromStep]", "2")
    await page.fill("textarea[name=script]", '[{"answer": "twenty"}]')
    await page.get_by_test_id("replay-fork").click()
    await expect(page.get_by_test_id("replay-fork-verdict")).to_have_text(
        "Fork from step 2: different answer", timeout=60_000
    )
    fork_runs = page.get_by_test_id("replay-fork-result").locator("table.replay-runs")
    await expect(fork_runs.locator("tr.replay-diff", has_text="answer")).to_contain_text("twenty")
    compare = page.get_by_test_id("replay-fork-compare")
    fork_id = (await compare.get_attribute("href") or "").rsplit("/", 1)[1]
    await query_has_task(studio, fork_id)
    await compare.click()
    answers = page.get_by_test_id("compare-summary").locator("tr[data-field=answer]")
    await expect(answers).to_contain_text("twenty")


async def test_metrics_and_memory_render_the_recorded_tasks(
    studio: Studio, recorded: Recorded, page: Page, shot: Shot
) -> None:
    await page.goto(f"{studio.url}/#/metrics")
    tokens = page.locator("[data-chart='Tokens per agent']")
    await expect(tokens.locator("canvas")).to_be_visible()
    await expect(tokens.locator(".u-legend")).to_contain_text("calculator")
    await expect(page.locator("[data-chart='Tokens per model'] .u-legend")).to_contain_text("scripted")
    await expect(page.locator("[data-chart='Task throughput (finished per bucket)'] canvas")).to_be_visible()
    cost = page.get_by_test_id("metrics-cost")
    await expect(cost.locator("table[data-cost=agent]")).to_contain_text("calculator")
    await expect(cost.locator("h3")).to_contain_text("calls")
    await page.select_option("select[name=range]", label="24 h")
    await expect(page.get_by_test_id("metrics-status")).to_contain_text("24 h, 15m buckets")
    await shot("metrics")

    await page.goto(f"{studio.url}/#/memory")
    await page.select_option("[data-testid=memory-node]", "calculator")
    await expect(page).to_have_url(re.compile(r"#/memory/calculator$"))
    working = page.locator(".memory-tier[data-tier=working]")
    # (the replay test's runs of the first task, if it ran first, add notes of their own)
    await expect(working.locator(".memory-note", has_text="(2+3)*4").first).to_be_visible()
    await expect(working.locator(".memory-note", has_text="7*6").first).to_be_visible()
    sessions = page.get_by_test_id("memory-sessions")
    await expect(sessions.locator("tr", has_text=recorded.calc["taskId"])).to_contain_text("yes")
    notes = await working.locator(".memory-note").count()
    assert notes >= 2
    await page.select_option("[data-testid=memory-session]", recorded.calc["taskId"])
    await expect(working.locator(".memory-note")).to_have_count(1)
    await expect(working.locator(".memory-note")).to_contain_text("(2+3)*4")
    await shot("memory")


async def test_compare_shows_two_tasks_side_by_side_with_their_differences(
    studio: Studio, recorded: Recorded, page: Page, shot: Shot
) -> None:
    a, b = recorded.calc["taskId"], recorded.calc2["taskId"]
    await page.goto(f"{studio.url}/#/compare/{a}/{b}")
    summary = page.get_by_test_id("compare-summary")
    await expect(summary.locator("tr[data-field=answer]")).to_have_class(re.compile("compare-diff"))
    await expect(summary.locator("tr[data-field=answer] td").nth(0)).to_have_text("20")
    await expect(summary.locator("tr[data-field=answer] td").nth(1)).to_have_text("42")
    await expect(summary.locator("tr[data-field=status]")).not_to_have_class(re.compile("compare-diff"))
    await expect(summary.locator("tr[data-field=steps] td").nth(0)).to_have_text("2")
    steps = page.get_by_test_id("compare-steps")
    await expect(steps.locator("tr[data-step='1']")).to_have_class(re.compile("compare-diff"))
    await expect(steps.locator("tr[data-step='1'] td").nth(0)).to_contain_text('"(2+3)*4"')
    await expect(steps.locator("tr[data-step='1'] td").nth(1)).to_contain_text('"7*6"')
    await expect(steps.locator("tr[data-step='2'] td").nth(1)).to_contain_text("answer: 42")

    # a task compared with itself: nothing differs
    await page.goto(f"{studio.url}/#/compare/{a}/{a}")
    await expect(page.get_by_test_id("compare-steps").locator("tr.compare-step")).to_have_count(2)
    await expect(page.locator(".compare-diff")).to_have_count(0)
    await shot("compare")
