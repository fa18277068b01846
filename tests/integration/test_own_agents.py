"""Bring your own agent (issue 12, "Done when"): a module outside the repository defining a
subclass of ``loom_agent_worker.Agent``, put on ``PYTHONPATH`` and named ``mymodule:MyAgent`` in
``LOOM_WORKER_AGENTS``, is registered by a worker process (``python -m loom_agent_worker``),
receives a task through the dispatcher, completes it, and its events are in TimescaleDB; a bad
entry stops the worker at start-up with one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .events_support import database_url_fixture, fetch, start_ingest  # noqa: F401 (fixture)
from .harness import Stack, process, wait_for

pytestmark = pytest.mark.integration

MYMODULE = '''
"""An agent written by a user, outside the Loom repository, with the public API only."""

from loom_agent_worker import Agent, AgentCard, Task, TaskContext, completed, failed


class MyAgent(Agent):
    agent_card = AgentCard(agent_id="reverser", name="Reverser", description="Reverses a text.")

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        text = task.parameters.get("text")
        if not isinstance(text, str):
            return failed(task, "parameters.text must be a string")
        ctx.note(f"reversed {len(text)} characters")  # a memory.add event
        return completed(task, {"answer": text[::-1], "instance": ctx.instance_id})
'''


def _env_with(path: Path) -> dict[str, str]:
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(path), *([existing] if existing else [])])}


async def test_an_agent_module_outside_the_repo_runs_tasks_and_its_events_are_stored(
    database_url: str, stack: Stack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mymodule.py").write_text(MYMODULE)
    await stack.registry()
    await stack.dispatcher()
    await start_ingest(stack, database_url)
    worker = process(await stack.worker("own-0", "echo,mymodule:MyAgent", process=True, **_env_with(plugins)))
    [instance] = await stack.wait_instances("reverser", 1)
    assert instance["instanceId"] == "own-0"

    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 20},
        json={"targetAgent": "reverser", "sessionId": "s-own", "parameters": {"text": "loom"}},
    )
    assert resp.status_code == 200, resp.text
    task = resp.json()
    assert task["status"] == "completed", task
    assert task["result"] == {"answer": "mool", "instance": "own-0"}
    bad = (
        await http.post(
            f"{stack.api}/api/tasks", params={"wait": 20}, json={"targetAgent": "reverser", "parameters": {}}
        )
    ).json()
    assert bad["status"] == "failed" and bad["error"] == "parameters.text must be a string", bad

    async def stored() -> list[str] | None:
        rows = await fetch(
            database_url,
            "SELECT type FROM events WHERE kind = 'event' AND task_id = $1 "
            "ORDER BY time, seq NULLS FIRST, id",
            task["taskId"],
        )
        types = [r["type"] for r in rows]
        return types if types and types[-1] == "task.completed" and "memory.add" in types else None

    types = await wait_for(stored, 30, "the task's events in TimescaleDB")
    assert types[0] == "task.submitted", types
    rows = await fetch(
        database_url,
        "SELECT DISTINCT instance_id FROM events WHERE task_id = $1 AND type = 'memory.add'",
        task["taskId"],
    )
    assert [r["instance_id"] for r in rows] == ["own-0"]
    assert worker.alive


@pytest.mark.parametrize(
    ("agents", "line"),
    [
        (
            "echo,mymodule:MyAgnt",
            "loom-agent-worker: cannot start: LOOM_WORKER_AGENTS entry 'mymodule:MyAgnt': "
            "module 'mymodule' has no attribute 'MyAgnt'",
        ),
        (
            "mymodule:MyAgent,mymodule:MyAgent2",
            "loom-agent-worker: cannot start: agent id 'reverser' is defined twice: "
            "by 'mymodule:MyAgent' and by 'mymodule:MyAgent2'",
        ),
        (
            "mymodule:TEXT",
            "loom-agent-worker: cannot start: 'mymodule:TEXT' is a str ('hello'): "
            "name an Agent instance, an Agent subclass or a factory returning one",
        ),
    ],
)
async def test_a_bad_entry_stops_the_worker_with_one_line(tmp_path: Path, agents: str, line: str) -> None:
    (tmp_path / "mymodule.py").write_text(MYMODULE + '\nMyAgent2 = MyAgent\nTEXT = "hello"\n')
    env = {
        **os.environ,
        **_env_with(tmp_path),
        "LOOM_WORKER_AGENTS": agents,
        "LOOM_NATS_URL": "nats://127.0.0.1:1",  # never reached: the agents are loaded first
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "loom_agent_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [line], done.stderr
    assert "Traceback" not in done.stdout
