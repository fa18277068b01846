"""Fixtures of the Studio's browser tests: a whole Loom stack in the test process (registry,
dispatcher, a worker, ingest, query serving the Studio, replay) on its own NATS account, Redis
prefix and TimescaleDB database; Debian's chromium driven by Playwright (async API, on the
tests' event loop); a ``page`` that fails its test on any console error, uncaught exception or
request to a host other than 127.0.0.1; and ``shot(name)``, a screenshot under reports/studio/.

One stack per test module (starting it takes a few seconds), one browser per session, a new
browser context per test."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Route,
    async_playwright,
)

from tests.integration.events_support import FAST_INGEST, fresh_database
from tests.integration.harness import REPO, AnyService, NatsServer, Stack, stack_of, wait_for

CHROMIUM = os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "reports" / "studio"
VIEWPORT = {"width": 1280, "height": 800}
Shot = Callable[[str], Awaitable[Path]]


@dataclass
class Studio:
    """The stack under test: ``url`` is the query service (the Studio's origin)."""

    url: str
    stack: Stack
    database_url: str
    query: AnyService
    dispatcher: AnyService
    replay: AnyService

    async def submit(self, http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
        """Submit a task through the Studio's own proxy (as the UI does); returns the task."""
        resp = await http.post(f"{self.url}/studio-api/dispatcher/api/tasks", json=body)
        assert resp.status_code in (200, 202), resp.text
        task: dict[str, Any] = resp.json()
        return task

    async def task_status(
        self, http: httpx.AsyncClient, task_id: str, wanted: tuple[str, ...]
    ) -> dict[str, Any]:
        """Wait until the dispatcher reports the task in one of ``wanted``."""

        async def reached() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"{self.dispatcher.url}/api/tasks/{task_id}")).json()
            return body if body.get("status") in wanted else None

        found: dict[str, Any] = await wait_for(reached, 60, f"task {task_id} to be {'/'.join(wanted)}")
        return found


@pytest.fixture(scope="module")
def studio_env() -> dict[str, str]:
    """Environment the query, dispatcher and replay services get on top of the stack's: none
    here; a module overrides this fixture (e.g. with ``LOOM_API_KEYS``)."""
    return {}


@pytest.fixture(scope="module")
async def studio(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory, studio_env: dict[str, str]
) -> AsyncIterator[Studio]:
    async with (
        fresh_database() as database_url,
        stack_of(nats_server, tmp_path_factory.mktemp("studio")) as stack,
    ):
        registry = stack.registry_service()
        dispatcher = stack.dispatcher_service(
            LOOM_NO_INSTANCE_TIMEOUT_S="5", LOOM_TASK_TIMEOUT_S="60", **studio_env
        )
        worker = stack.worker_service("sw0", agents="echo,calculator,orchestrator")
        ingest = stack.add("ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST})
        replay = stack.service(
            "replay-0",
            "loom_replay",
            LOOM_DATABASE_URL=database_url,
            LOOM_DISPATCHER_URL=dispatcher.url,
            **studio_env,
        )
        query = stack.service(
            "query-0",
            "loom_query",
            LOOM_DATABASE_URL=database_url,
            LOOM_DISPATCHER_URL=dispatcher.url,
            LOOM_REPLAY_URL=replay.url,
            **studio_env,
        )
        await asyncio.gather(
            *(svc.started(120) for svc in (registry, dispatcher, worker, ingest, replay, query))
        )
        await stack.wait_instances("calculator", 1)
        yield Studio(query.url, stack, database_url, query, dispatcher, replay)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium (scripts/stack.sh infra does)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """What a page did that fails its test."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.console_errors or self.page_errors or self.offsite)


def _local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname == "127.0.0.1"


@pytest.fixture
async def page_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def console_expected() -> tuple[re.Pattern[str], ...]:
    """Console errors the test expects (e.g. the browser's note of a request refused with 401):
    none here; a module overrides this fixture. Any other console error fails the test."""
    return ()


@pytest.fixture
async def page(
    chromium: Browser, page_problems: PageProblems, console_expected: tuple[re.Pattern[str], ...]
) -> AsyncIterator[Page]:
    """A page in a new context at 1280x800; the test fails on a console error (but those of
    ``console_expected``), an uncaught exception or a request to any host but 127.0.0.1 (that
    request is also aborted)."""
    context: BrowserContext = await chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
    problems = page_problems

    async def guard(route: Route, request: Request) -> None:
        if _local(request.url):
            await route.continue_()
        else:
            problems.offsite.append(request.url)
            await route.abort()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and not any(p.search(msg.text) for p in console_expected):
            problems.console_errors.append(f"{msg.text} ({msg.location.get('url')})")

    def on_request(request: Request) -> None:  # WebSockets are not routed: checked here
        if not _local(request.url):
            problems.offsite.append(request.url)

    await context.route("**/*", guard)
    context.on("request", on_request)
    pg = await context.new_page()
    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: problems.page_errors.append(str(exc)))
    pg.on("websocket", lambda ws: None if _local(ws.url) else problems.offsite.append(ws.url))
    pg.set_default_timeout(15_000)
    try:
        yield pg
        assert not problems, f"the page misbehaved: {problems}"
    finally:
        await context.close()


@pytest.fixture
def shot(page: Page, request: pytest.FixtureRequest) -> Shot:
    """``await shot("name")``: a screenshot of the page as reports/studio/<test>-<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    async def take(name: str) -> Path:
        path = SHOTS / f"{test}-{name}.png"
        await page.screenshot(path=str(path))
        return path

    return take


def copy_shot(path: Path, name: str) -> None:
    """Keep a screenshot for the documentation (docs/img/<name>.png) when the run asks for it
    (``LOOM_STUDIO_DOC_SHOTS=1``): a plain test run never changes a tracked file."""
    if os.environ.get("LOOM_STUDIO_DOC_SHOTS") != "1":
        return
    target = REPO / "docs" / "img"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target / f"{name}.png")
