"""JSON Schema export, run the way users run it: ``python -m loom_protocol.schema``."""

import json
import subprocess
import sys
from typing import Any

import pytest
from loom_protocol import WIRE_MODELS, __version__, json_schemas


@pytest.fixture(scope="module")
def exported() -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "loom_protocol.schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout), proc.stderr


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_export_is_one_json_schema_document(exported: tuple[dict[str, Any], str]) -> None:
    document, stderr = exported
    assert stderr == ""  # in particular no runpy "found in sys.modules" RuntimeWarning
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["title"] == "Loom wire protocol"
    assert document["version"] == __version__
    assert set(WIRE_MODELS) <= set(document["$defs"])
    assert document == json.loads(json.dumps(json_schemas()))


def test_every_ref_resolves_inside_the_document(exported: tuple[dict[str, Any], str]) -> None:
    document, _ = exported
    refs = _refs(document)
    assert refs  # Task refers to TraceContext, Heartbeat to AgentCard, ...
    for ref in refs:
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in document["$defs"], ref


def test_task_schema_is_the_camel_case_wire_form(exported: tuple[dict[str, Any], str]) -> None:
    task = exported[0]["$defs"]["Task"]
    assert task["required"] == ["targetAgent"]
    for key in ("taskId", "sourceAgent", "targetAgent", "parentTaskId", "sessionId", "createdAt", "trace"):
        assert key in task["properties"], key
    assert "target_agent" not in task["properties"]
    assert task["properties"]["targetAgent"]["pattern"] == "^[A-Za-z0-9_-]+$"


def test_cloudevent_schema_keeps_spec_names_and_allows_extensions(
    exported: tuple[dict[str, Any], str],
) -> None:
    event = exported[0]["$defs"]["CloudEvent"]
    assert set(event["required"]) == {"id", "source", "specversion", "type"}
    assert event["properties"]["specversion"]["const"] == "1.0"
    assert "datacontenttype" in event["properties"] and "traceparent" in event["properties"]
    assert event["additionalProperties"] is True
