"""The example agent package: its tools, its agent run the way a worker runs it, its entry point."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
from loom_agent_worker import ScriptedProvider, ToolRegistry
from loom_agent_worker.loading import load_agents
from loom_agent_worker.testing import run_agent
from loom_protocol import McpToolCall
from loom_unit_converter import agent, convert, convert_temperature

TOOLS = ToolRegistry([convert, convert_temperature])


async def call(tool_name: str, arguments: dict[str, Any]) -> Any:
    return await TOOLS.call(McpToolCall(call_id="c1", name=tool_name, arguments=arguments))


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (5, "km", "mi", 3.106855961),
        (1, "lb", "g", 453.59237),
        (2, "gal", "l", 7.570823568),
        (12, "in", "FT", 1.0),
    ],
)
async def test_convert(value: float, source: str, target: str, expected: float) -> None:
    result = await call("convert", {"value": value, "from_unit": source, "to_unit": target})
    assert not result.is_error, result.content
    assert f'"value": {expected}' in result.content


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [(100, "C", "F", 212.0), (32, "F", "K", 273.15), (0, "K", "C", -273.15)],
)
async def test_convert_temperature(value: float, source: str, target: str, expected: float) -> None:
    result = await call("convert_temperature", {"value": value, "from_scale": source, "to_scale": target})
    assert not result.is_error, result.content
    assert f'"value": {expected}' in result.content


@pytest.mark.parametrize(
    ("name", "arguments", "reason"),
    [
        (
            "convert",
            {"value": 1, "from_unit": "km", "to_unit": "kg"},
            "cannot convert length (km) to mass (kg)",
        ),
        ("convert", {"value": 1, "from_unit": "parsec", "to_unit": "m"}, "unknown unit 'parsec'"),
        ("convert", {"value": "lots", "from_unit": "m", "to_unit": "cm"}, "invalid arguments"),
        ("convert_temperature", {"value": -500, "from_scale": "C", "to_scale": "K"}, "below absolute zero"),
        ("convert_temperature", {"value": 1, "from_scale": "R", "to_scale": "K"}, "from_scale"),
    ],
)
async def test_bad_input_is_an_error_result_the_llm_sees(
    name: str, arguments: dict[str, Any], reason: str
) -> None:
    result = await call(name, arguments)
    assert result.is_error
    assert reason in result.content


def test_the_schemas_come_from_the_type_hints() -> None:
    schema = convert_temperature.definition.input_schema
    assert schema["properties"]["from_scale"]["enum"] == ["C", "F", "K"]
    assert convert.definition.input_schema["required"] == ["value", "from_unit", "to_unit"]


async def test_the_agent_answers_through_its_tools() -> None:
    script = [
        {
            "thought": "length",
            "tool": "convert",
            "arguments": {"value": 10, "from_unit": "km", "to_unit": "mi"},
        },
        {"answer": "10 km is 6.21 mi"},
    ]
    mine = agent.with_runtime(provider=ScriptedProvider())
    run = await run_agent(mine, {"prompt": "10 km in miles?", "script": script})
    assert run.task.status == "completed", run.task.error
    assert run.task.result["answer"] == "10 km is 6.21 mi"
    assert run.event_types.count("tool.call") == 1
    returned = next(e for e in run.events if e.type == "tool.result")
    assert "6.213711922" in str(returned.data)


def test_the_entry_point_is_installed_and_loads() -> None:
    eps = [ep for ep in entry_points(group="loom.agents") if ep.name == "units"]
    assert [ep.value for ep in eps] == ["loom_unit_converter:agent"]
    agents = load_agents(["echo", "entrypoints"], ScriptedProvider())
    assert "units" in agents
    assert agents["units"].agent_card.tools == ["convert", "convert_temperature"]
