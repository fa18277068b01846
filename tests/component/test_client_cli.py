"""The ``loom`` command against the running services in process: every command through
``typer.testing.CliRunner`` (in a worker thread, so that the services on the test's event loop
keep answering), and the installed ``.venv/bin/loom`` as a real process for submit, get, tail and a
batch of 200 tasks with its progress bar in a pseudo-terminal. Exit codes: 0 completed / success,
1 not completed, 2 usage, 3 not found, 4 unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import struct
import termios
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from loom_client import AsyncLoomClient, TaskStatus
from loom_client.cli import app
from typer.testing import CliRunner

from tests.component.test_client_sdk import (
    SIX_TIMES_SEVEN,
    STREAM_SCRIPT,
    STREAMED,
    closed_url,
    everything,
    reaches,
    stored,
    task_path,
)
from tests.integration.events_support import database_url_fixture  # noqa: F401 (fixture)
from tests.integration.harness import REPO, Stack
from tests.integration.task_support import sleepy

pytestmark = pytest.mark.component

LOOM = REPO / ".venv" / "bin" / "loom"
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


async def cli(*args: str, stdin: str | None = None) -> Result:
    """``loom ARGS`` in process, in a worker thread; stdout and stderr are kept apart."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), input=stdin, env=WIDE)


def parsed(result: Result) -> dict[str, Any]:
    assert result.stdout.count("\n") == 1, result.stdout  # the JSON and nothing else
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


async def test_task_commands_print_tasks_and_exit_with_their_codes(stack: Stack) -> None:
    await task_path(stack)
    url = ("--url", stack.api)

    done = parsed(
        ok(
            await cli(
                "submit", "calculator", "--param", "prompt=what is 6*7?", "--wait", "10", "--json", *url
            )
        )
    )
    assert done["status"] == "completed" and done["result"]["answer"] == "42"
    assert parsed(ok(await cli("get", done["taskId"], "--json", *url)))["status"] == "completed"
    shown = ok(await cli("get", done["taskId"], *url)).stdout
    assert "completed" in shown and "42" in shown and done["taskId"] in shown

    # parameters: JSON when it parses, from a file or stdin, --param last
    echoed = parsed(
        ok(
            await cli(
                "submit",
                "echo",
                "--json-params",
                "-",
                "-p",
                "n=5",
                "-p",
                "flag=true",
                "-p",
                "text=a b",
                "--session",
                "s-cli",
                "--wait",
                "10",
                "--json",
                *url,
                stdin='{"n": 1, "list": [1, 2]}',
            )
        )
    )
    assert echoed["result"] == {"n": 5, "list": [1, 2], "flag": True, "text": "a b"}
    assert echoed["sessionId"] == "s-cli"

    # not ended within --wait: exit 1; then cancelled
    slow = parsed(
        ok(
            await cli(
                "submit",
                "calculator",
                "--json-params",
                "-",
                "--wait",
                "0.5",
                "--json",
                *url,
                stdin=json.dumps(sleepy(30)),
            ),
            1,
        )
    )
    assert slow["status"] in ("pending", "dispatched", "running")
    assert parsed(ok(await cli("cancel", slow["taskId"], "--json", *url)))["taskId"] == slow["taskId"]
    assert (
        parsed(ok(await cli("get", slow["taskId"], "--wait", "10", "--json", *url), 1))["status"]
        == "cancelled"
    )
    again = ok(await cli("cancel", slow["taskId"], *url), 1)
    assert "already ended" in again.stderr

    # without --wait: accepted is success
    accepted = parsed(ok(await cli("submit", "echo", "-p", "n=1", "--json", *url)))
    assert accepted["status"] in ("pending", "dispatched", "running", "completed")

    # the answer as it is streamed
    streamed = ok(
        await cli(
            "submit",
            "calculator",
            "--json-params",
            "-",
            "--stream",
            *url,
            stdin=json.dumps({"script": STREAM_SCRIPT}),
        )
    )
    assert STREAMED in streamed.stdout and "completed" in streamed.stdout

    # approvals
    async with AsyncLoomClient(stack.api) as loom:
        guarded = ("-m", 'approvalTools=["calculator"]', "--param", "prompt=what is 6*7?", "--json", *url)
        first = parsed(ok(await cli("submit", "calculator", *guarded)))
        await reaches(loom, first["taskId"], TaskStatus.INPUT_REQUIRED)
        waiting = ok(await cli("get", first["taskId"], *url)).stdout
        assert "input_required" in waiting and "approval of calculator" in waiting
        decided = ok(
            await cli(
                "approve",
                first["taskId"],
                "--arguments",
                '{"expression": "6*8"}',
                "--by",
                "ann",
                "--json",
                *url,
            )
        )
        assert parsed(decided)["approvals"][0]["by"] == "ann"
        assert (
            parsed(ok(await cli("get", first["taskId"], "--wait", "20", "--json", *url)))["result"]["answer"]
            == "48"
        )
        assert "not_waiting_for_approval" in ok(await cli("approve", first["taskId"], *url), 1).stderr

        second = parsed(ok(await cli("submit", "calculator", *guarded)))
        await reaches(loom, second["taskId"], TaskStatus.INPUT_REQUIRED)
        ok(await cli("reject", second["taskId"], "--reason", "too risky", "--by", "ops", *url))
        answer = parsed(ok(await cli("get", second["taskId"], "--wait", "20", "--json", *url)))["result"][
            "answer"
        ]
        assert "rejected by ops: too risky" in answer

    # agents
    agents = json.loads(ok(await cli("agents", "--json", "--registry-url", stack.registries[0].url)).stdout)
    assert {"calculator", "echo", "orchestrator"} <= {a["agentId"] for a in agents}
    table = ok(await cli("agents", "--registry-url", stack.registries[0].url)).stdout
    assert "calculator" in table and "w1" in table

    # the exit codes of failures
    assert "did you mean 'calculator'" in ok(await cli("submit", "calculater", *url), 3).stderr
    ok(await cli("get", "no-such-task", *url), 3)
    ok(await cli("approve", "no-such-task", *url), 3)
    refused = ok(await cli("submit", "not an agent!", *url), 2)
    assert "body.targetAgent" in refused.stderr
    ok(await cli("submit", "echo", "--param", "no-equals-sign", *url), 2)
    ok(await cli("submit", "echo", "--json-params", "-", *url, stdin="[1, 2]"), 2)
    ok(await cli("approve", done["taskId"], "--arguments", "{not json", *url), 2)
    ok(await cli("submit", *url), 2)  # no agent
    ok(await cli("get", "x", "--url", closed_url()), 4)
    ok(await cli("agents", "--registry-url", closed_url()), 4)
    ok(await cli("get"), 2)  # a missing argument: typer's usage error


async def test_query_commands_trace_replay_and_tail(database_url: str, stack: Stack) -> None:
    query, replay = await everything(stack, database_url)
    session = f"s-{uuid.uuid4().hex[:8]}"
    q = ("--query-url", query.url)

    # two tails as processes, subscribed before the task exists
    task_id = uuid.uuid4().hex
    json_tail = await start_loom("tail", "--task", task_id, "--count", "3", "--timeout", "30", "--json", *q)
    line_tail = await start_loom(
        "tail", "--task", task_id, "--type", "task.*", "--count", "2", "--timeout", "30", *q
    )
    try:
        for proc in (json_tail, line_tail):
            assert proc.stderr is not None
            ready = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert b"listening on ws://" in ready, ready
        async with AsyncLoomClient(stack.api, query_url=query.url) as loom:
            done = await loom.submit(
                "calculator", SIX_TIMES_SEVEN, task_id=task_id, session_id=session, wait=10
            )
            orchestrated = await loom.submit(
                "orchestrator", {"prompt": "what is 6*7; say hello"}, session_id=session, wait=20
            )
            assert done.status == orchestrated.status == TaskStatus.COMPLETED
            out, err = await asyncio.wait_for(json_tail.communicate(), 30)
            assert json_tail.returncode == 0, err
            events = [json.loads(line) for line in out.decode().splitlines()]
            assert len(events) == 3 and {e["taskid"] for e in events} == {task_id}
            out, err = await asyncio.wait_for(line_tail.communicate(), 30)
            assert line_tail.returncode == 0, err
            lines = out.decode().splitlines()
            assert len(lines) == 2 and all(" task." in line and task_id[:12] in line for line in lines), lines
            for task in (done, orchestrated):
                await stored(loom, task.task_id)
    finally:
        for proc in (json_tail, line_tail):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    quiet = ok(await cli("tail", "--task", "nothing-happens", "--count", "1", "--timeout", "0.3", *q), 1)
    assert quiet.stdout == ""

    # tasks and the session
    listed = json.loads(ok(await cli("tasks", "--session", session, "--json", *q)).stdout)
    assert len(listed["tasks"]) == 4 and listed["tasks"][-1]["taskId"] == task_id
    assert listed["counts"]["completed"] == listed["total"] == 4
    two = json.loads(ok(await cli("tasks", "--session", session, "--limit", "2", "--json", *q)).stdout)
    assert [t["taskId"] for t in two["tasks"]] == [t["taskId"] for t in listed["tasks"][:2]]
    table = ok(await cli("tasks", "--agent", "calculator", "--session", session, *q)).stdout
    assert task_id in table and "completed" in table
    ok(await cli("tasks", "--status", "bogus", *q), 2)
    shown = ok(await cli("session", session, *q)).stdout
    assert f"session {session}" in shown and "4 tasks" in shown
    ok(await cli("session", "no-such-session", *q), 3)

    # the trace tree
    tree = ok(await cli("trace", orchestrated.task_id, "--wait", "15", *q)).stdout
    assert "orchestrator" in tree and "calculator" in tree and "echo" in tree
    assert "tool calculator(expression=6*7) → 42" in tree and "tokens" in tree and "└──" in tree
    as_json = parsed(ok(await cli("trace", orchestrated.task_id, "--json", *q)))
    assert [c["task"]["targetAgent"] for c in as_json["children"]] == ["calculator", "echo"]
    assert as_json["inputTokens"] >= as_json["children"][0]["inputTokens"] > 0
    ok(await cli("trace", "no-such-task", *q), 3)

    # an interactive replay, from standard input
    stepped = ok(
        await cli("replay", task_id, "--replay-url", replay.url, stdin="s\ns\nb\nj 1\nb\nwhat\nj 9999\nq\n")
    )
    assert "replay of task" in stepped.stdout
    positions = re.findall(r"\[(\d+)/(\d+)\]", stepped.stdout)
    total = positions[0][1]
    assert positions == [("1", total), ("2", total), ("1", total), ("1", total)]
    assert "nothing to step backward" in stepped.stderr and "commands:" in stepped.stderr
    assert "out of range" in stepped.stderr
    ok(await cli("replay", "no-such-task", "--replay-url", replay.url, stdin="q\n"), 3)


async def start_loom(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """``.venv/bin/loom ARGS`` as a process, its output piped."""
    return await asyncio.create_subprocess_exec(
        str(LOOM),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **WIDE, **(env or {})},
        cwd=REPO,
    )


async def run_loom(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``.venv/bin/loom ARGS`` to its end: (exit code, stdout, stderr)."""
    proc = await start_loom(*args, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_installed_executable(stack: Stack) -> None:
    assert LOOM.exists(), f"{LOOM}: run uv sync"
    await task_path(stack)
    url = ("--url", stack.api)
    code, out, err = await run_loom(
        "submit", "calculator", "--param", "prompt=what is 6*7?", "--wait", "10", "--json", *url
    )
    assert code == 0, err
    task = json.loads(out)
    assert task["status"] == "completed" and task["result"]["answer"] == "42"
    code, out, _ = await run_loom("get", task["taskId"], "--json", *url)
    assert code == 0 and json.loads(out)["taskId"] == task["taskId"]
    code, out, err = await run_loom(
        "submit",
        "echo",
        "-p",
        "n=1",
        "--via",
        "nats",
        "--wait",
        "10",
        "--json",
        *url,
        env={"LOOM_NATS_URL": stack.nats_url},
    )
    assert code == 0, err
    assert json.loads(out)["result"] == {"n": 1}
    code, out, _ = await run_loom("--help")
    assert code == 0 and all(c in out for c in ("submit", "tail", "trace", "replay", "agents"))
    assert (await run_loom("get", "no-such-task", *url))[0] == 3
    assert (await run_loom("get", "x", "--url", closed_url()))[0] == 4
    assert (await run_loom("submit", "echo", "--param", "oops", *url))[0] == 2
    code, out, _ = await run_loom(
        "submit",
        "calculator",
        "--param",
        "script=" + json.dumps(sleepy(30)["script"]),
        "--wait",
        "0.5",
        "--json",
        *url,
    )
    assert code == 1 and json.loads(out)["status"] != "completed"
    assert (await run_loom("cancel", json.loads(out)["taskId"], *url))[0] == 0


def _read_all(fd: int) -> bytes:
    """Everything a pseudo-terminal's master side yields until the child side is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_batch_of_200_with_its_progress_bar_in_a_terminal(stack: Stack, tmp_path: Path) -> None:
    await task_path(stack)
    batch = tmp_path / "tasks.jsonl"
    lines = [json.dumps({"targetAgent": "echo", "parameters": {"n": n}}) for n in range(199)]
    lines.insert(100, "# a comment, then a line that leaves the agent to the command")
    lines.append(json.dumps({"parameters": {"n": 199}}))
    batch.write_text("\n".join(lines) + "\n")

    master, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    try:
        proc = await asyncio.create_subprocess_exec(
            str(LOOM),
            "submit",
            "echo",
            "--batch",
            str(batch),
            "--wait",
            "30",
            "--concurrency",
            "16",
            "--url",
            stack.api,
            stdin=child,
            stdout=child,
            stderr=child,
            env={**env, "TERM": "xterm-256color"},
            cwd=REPO,
        )
    finally:
        os.close(child)
    try:
        reading = asyncio.create_task(asyncio.to_thread(_read_all, master))
        code = await asyncio.wait_for(proc.wait(), 90)
        output = (await asyncio.wait_for(reading, 10)).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(OSError):
            os.close(master)
    assert code == 0, output[-3000:]
    assert "\x1b[" in output  # a terminal: colours and cursor moves
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert "━" in output  # the progress bar
    assert "200/200" in output
    assert "batch: 200 tasks" in output and "┃ status" in output  # the summary table
    row = next(line for line in output.splitlines() if "completed" in line and "│" in line)
    assert "200" in row and "100%" in row

    # a bad line: nothing is submitted, exit 2 with the line number
    batch.write_text('{"targetAgent": "echo"}\n{"targetAgent": "bad agent!"}\nnot json\n')
    code, _, err = await run_loom("submit", "--batch", str(batch), "--url", stack.api)
    assert code == 2 and "line 2: targetAgent" in err and "line 3: not valid JSON" in err
