"""LOOM_WORKER_AGENTS resolved to agents: demo ids, import paths, entry points, and one clear line
for each thing that can be wrong (bad path, import error, wrong type, collision)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from loom_agent_worker import (
    Agent,
    AgentCard,
    ScriptedProvider,
    Task,
    TaskContext,
    WorkerProvider,
    completed,
    react_agent,
    tool,
)
from loom_agent_worker.loading import AgentLoadError, load_agents

PROVIDER = ScriptedProvider("worker-model")

MODULE = '''
from loom_agent_worker import Agent, AgentCard, ScriptedProvider, completed, react_agent, tool

class Greeter(Agent):
    agent_card = AgentCard(agent_id="greeter", name="Greeter")

    async def execute_task(self, task, ctx):
        return completed(task, {"answer": "hello"})

class NeedsArgs(Agent):
    def __init__(self, name):
        self.agent_card = AgentCard(agent_id=name, name=name)

    async def execute_task(self, task, ctx):
        return completed(task, None)

class Abstract(Agent):
    pass

class NotAnAgent:
    pass

class NoCard(Agent):
    async def execute_task(self, task, ctx):
        return completed(task, None)

greeter = Greeter()
number = 42

@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()

shouter = react_agent("shouter", system_prompt="Shout.", tools=[shout])

def make_greeter():
    return Greeter()

def make_with_provider(provider=None):
    return react_agent("provided", system_prompt="p", provider=provider)

def make_nothing():
    return None

def make_broken():
    raise RuntimeError("no config\\nsecond line")

class Calculator(Agent):
    agent_card = AgentCard(agent_id="calculator", name="mine")

    async def execute_task(self, task, ctx):
        return completed(task, None)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module written outside the repository, importable under a unique name."""
    name = f"plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    (tmp_path / f"{name}_raises.py").write_text("raise ValueError('bad module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in (name, f"{name}_raises"):
        sys.modules.pop(mod, None)


def test_demo_ids_load_as_before() -> None:
    agents = load_agents(["echo", "calculator", "orchestrator"], PROVIDER)
    assert list(agents) == ["echo", "calculator", "orchestrator"]


@pytest.mark.parametrize(
    ("attribute", "agent_id"),
    [("greeter", "greeter"), ("Greeter", "greeter"), ("make_greeter", "greeter"), ("shouter", "shouter")],
)
def test_an_instance_a_subclass_or_a_factory_loads(plugin: str, attribute: str, agent_id: str) -> None:
    agents = load_agents(["echo", f"{plugin}:{attribute}"], PROVIDER)
    assert list(agents) == ["echo", agent_id]
    assert isinstance(agents[agent_id], Agent)


def test_the_worker_provider_replaces_the_placeholder_and_reaches_factories(plugin: str) -> None:
    agents = load_agents([f"{plugin}:shouter", f"{plugin}:make_with_provider"], PROVIDER)
    assert agents["shouter"].provider is PROVIDER
    assert agents["provided"].provider is PROVIDER
    # the module's own object keeps its placeholder: loading does not mutate it
    module = sys.modules[plugin]
    assert isinstance(module.shouter.provider, WorkerProvider)


def test_entry_points_load_every_agent_of_the_group(plugin: str) -> None:
    eps = [
        EntryPoint("greeter", f"{plugin}:greeter", "loom.agents"),
        EntryPoint("shouter", f"{plugin}:shouter", "loom.agents"),
    ]
    agents = load_agents(["echo", "entrypoints"], PROVIDER, entry_points_of=lambda group: eps)
    assert list(agents) == ["echo", "greeter", "shouter"]


def test_no_entry_point_installed_is_not_an_error() -> None:
    assert list(load_agents(["echo", "entrypoints"], PROVIDER, entry_points_of=lambda group: [])) == ["echo"]


def test_the_same_entry_twice_is_one_agent(plugin: str) -> None:
    assert list(load_agents(["echo", "echo", f"{plugin}:greeter", f"{plugin}:greeter"], PROVIDER)) == [
        "echo",
        "greeter",
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("weather", "'weather' is not a demo agent (echo, calculator, orchestrator), not 'entrypoints'"),
        ("calculater", "did you mean 'calculator'?"),
        ("no_such_module_xyz:Agent", "cannot import 'no_such_module_xyz'"),
        ("{plugin}_raises:x", "raised ValueError: bad module"),
        ("{plugin}:Missing", "has no attribute 'Missing'"),
        ("{plugin}:", "write an import path as package.module:attribute"),
        ("{plugin}:number", "is a int (42): name an Agent instance, an Agent subclass or a factory"),
        ("{plugin}:NotAnAgent", "is the class NotAnAgent, which is not a loom_agent_worker.Agent"),
        ("{plugin}:Abstract", "is the abstract class Abstract: implement execute_task"),
        ("{plugin}:NeedsArgs", "constructing the agent raised TypeError"),
        ("{plugin}:make_nothing", "is a factory that returned None, not a loom_agent_worker.Agent"),
        ("{plugin}:make_broken", "constructing the agent raised RuntimeError: no config second line"),
        ("{plugin}:NoCard", "the agent has no agent_card"),
        ("{plugin}:Calculator", "agent id 'calculator' is defined twice: by demo agent 'calculator' and by"),
    ],
)
def test_each_bad_entry_gives_one_clear_line(plugin: str, entry: str, message: str) -> None:
    with pytest.raises(AgentLoadError) as caught:
        load_agents(["calculator", entry.format(plugin=plugin)], PROVIDER)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_a_broken_entry_point_names_itself(plugin: str) -> None:
    eps = [EntryPoint("broken", "no_such_module_xyz:agent", "loom.agents")]
    with pytest.raises(AgentLoadError, match=r"entry point 'broken' \(no_such_module_xyz:agent\) of group"):
        load_agents(["entrypoints"], PROVIDER, entry_points_of=lambda group: eps)


def test_no_agents_at_all_is_refused() -> None:
    with pytest.raises(AgentLoadError, match="names no agents"):
        load_agents([" ", ""], PROVIDER)


def test_the_worker_process_refuses_a_bad_value_with_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LOOM_WORKER_AGENTS": "echo,nowhere_module_abc:MyAgent",
        "LOOM_NATS_URL": "nats://127.0.0.1:1",  # never reached: loading fails first
        "OTEL_SDK_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "loom_agent_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "loom-agent-worker: cannot start: LOOM_WORKER_AGENTS entry 'nowhere_module_abc:MyAgent': "
        "cannot import 'nowhere_module_abc' (No module named 'nowhere_module_abc'); "
        "is it installed or on PYTHONPATH?"
    ], done.stderr
    assert "Traceback" not in done.stdout + done.stderr


async def test_an_authored_react_agent_runs_its_tools() -> None:
    @tool(timeout_s=2.0, requires_approval=True)
    async def double(x: int) -> int:
        """Double a number."""
        return 2 * x

    assert double.requires_approval and double.timeout_s == 2.0
    assert double.definition.input_schema["properties"]["x"]["type"] == "integer"
    agent = react_agent(
        "doubler", system_prompt="Double things.", tools=[double], provider=ScriptedProvider()
    )
    assert agent.agent_card.tools == ["double"]
    assert agent.system_prompt == "Double things."


def test_a_subclass_is_usable_with_the_public_names_only() -> None:
    class Mine(Agent):
        agent_card = AgentCard(agent_id="mine", name="Mine")

        async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
            return completed(task, {"ok": True})

    assert Mine().node_id == "mine"
