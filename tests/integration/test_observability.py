"""Loom observed as operators see their services: OpenTelemetry traces and Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from .events_support import (  # noqa: F401 (fixture)
    database_url_fixture,
    fetch,
    start_ingest,
    start_pipeline,
    ws_url,
)
from .harness import PrometheusServer, Stack, port_open, wait_for
from .otlp_receiver import otlp_receiver

pytestmark = pytest.mark.integration

OTEL = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_TRACES_SAMPLER": "always_on"}


async def test_one_trace_spans_dispatcher_worker_and_ingest_with_parent_links(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    async with otlp_receiver() as receiver:
        env = {**OTEL, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        # processes: OpenTelemetry's tracer provider is per process
        services = [
            stack.registry_service(process=True, **env),
            stack.dispatcher_service(process=True, **env),
            stack.worker_service("t0", process=True, **env),
        ]
        await asyncio.gather(
            *(svc.started() for svc in services), start_ingest(stack, database_url, process=True, **env)
        )
        await stack.wait_instances("calculator", 1)
        caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        resp = await http.post(
            f"{stack.api}/api/tasks",
            params={"wait": 10},
            headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
            json={"targetAgent": "calculator", "parameters": {"prompt": "what is 2*21?"}},
        )
        body = resp.json()
        assert body["status"] == "completed", body
        assert body["trace"]["traceparent"].split("-")[1] == caller_trace, (
            "the caller's trace was not continued"
        )

        def services_seen() -> set[str]:
            return {s.service for s in receiver.by_trace(caller_trace)}

        await wait_for(
            lambda: {"loom-dispatcher", "loom-agent-worker", "loom-ingest"} <= services_seen(),
            15,
            "spans of dispatcher, worker and ingest in the caller's trace",
        )
        await wait_for(
            lambda: any(s.name.startswith("execute_tool ") for s in receiver.by_trace(caller_trace)),
            10,
            "the tool span",
        )

        def roots() -> list[tuple[str, str, str]]:
            spans = receiver.by_trace(caller_trace)
            ids = {s.span_id for s in spans}
            return [(s.service, s.name, s.parent_span_id) for s in spans if s.parent_span_id not in ids]

        # every span exported and linked: one entry point, the dispatcher's HTTP server span,
        # whose parent is the caller's span
        await wait_for(lambda: len(roots()) == 1, 10, "one root span")
        spans = receiver.by_trace(caller_trace)
        assert roots() == [("loom-dispatcher", "POST /api/tasks", "00f067aa0ba902b7")]
        by_id = {s.span_id: s for s in spans}

        def ancestors(span_name_prefix: str) -> list[str]:
            span = next(s for s in spans if s.name.startswith(span_name_prefix))
            chain = []
            while span.parent_span_id in by_id:
                span = by_id[span.parent_span_id]
                chain.append(span.service)
            return chain

        assert "loom-agent-worker" in ancestors("execute_tool ")
        assert "loom-dispatcher" in ancestors("execute_tool ")
        assert "loom-dispatcher" in ancestors("invoke_agent calculator")
        # named as the GenAI conventions name them: the LLM call's span inside the agent's
        chat = next(s for s in spans if s.name.startswith("chat "))
        agent = next(s for s in spans if s.name == "invoke_agent calculator")
        assert chat.service == "loom-agent-worker" and chat.parent_span_id == agent.span_id
        # the pick, made by the dispatcher on the registry's state (no registry process in the path)
        pick = next(s for s in spans if s.name == "registry.pick")
        assert pick.service == "loom-dispatcher" and by_id[pick.parent_span_id].service == "loom-dispatcher"
        # ingest's spans of the tool's events are children of the tool span that emitted them
        tool_span = next(s for s in spans if s.name.startswith("execute_tool "))

        def ingested_under_tool() -> list[str]:  # the event subjects, without the worker's instance
            return sorted(
                re.sub(
                    r"^ingest loom\.event\.worker\.[^.]+\.", "ingest loom.event.worker.<instance>.", s.name
                )
                for s in receiver.by_trace(caller_trace)
                if s.service == "loom-ingest" and s.parent_span_id == tool_span.span_id
            )

        await wait_for(
            lambda: (
                ingested_under_tool()
                == [
                    "ingest loom.event.worker.<instance>.tool.call",
                    "ingest loom.event.worker.<instance>.tool.result",
                ]
            ),
            15,
            "the tool's events ingested under the tool span",
        )
        # the trace id stored with the events is the span trace id
        rows = await fetch(
            database_url,
            "SELECT DISTINCT trace_id FROM events WHERE task_id = $1 AND kind = 'event'",
            body["taskId"],
        )
        assert [r["trace_id"] for r in rows] == [caller_trace]
        await stack.stop()  # while the receiver still answers, so exporters flush and exit at once


async def test_prometheus_scrapes_every_service_and_sees_their_metrics_move(
    database_url: str, stack: Stack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # processes: Prometheus scrapes each service's own registry
    services = [
        stack.registry_service(process=True),
        dispatcher := stack.dispatcher_service(process=True),
        stack.worker_service("p0", agents="echo,calculator", process=True),
        replay := stack.service(
            "replay-0",
            "loom_replay",
            process=True,
            LOOM_DATABASE_URL=database_url,
            LOOM_DISPATCHER_URL=dispatcher.url,
        ),
    ]
    pipeline = asyncio.gather(*(svc.started() for svc in services))
    ingest, query = await start_pipeline(stack, database_url, process=True)
    await pipeline
    await stack.wait_instances("echo", 1)
    targets = {
        "registry": [f"127.0.0.1:{stack.registries[0].port}"],
        "dispatcher": [f"127.0.0.1:{stack.dispatchers[0].port}"],
        "agent-worker": [f"127.0.0.1:{stack.workers['p0'].port}"],
        "ingest": [f"127.0.0.1:{ingest.port}"],
        "query": [f"127.0.0.1:{query.port}"],
        "replay": [f"127.0.0.1:{replay.port}"],
    }
    prometheus = PrometheusServer(tmp_path, targets)
    prometheus.start()
    try:
        await wait_for(lambda: port_open(prometheus.port), 20, "prometheus to listen")

        async def all_up() -> bool:
            up = await prometheus.query("up")
            return {r["metric"]["job"] for r in up if r["value"][1] == "1"} >= set(targets)

        await wait_for(all_up, 30, "every service scraped and up")
        before = await prometheus.query('sum(loom_tasks_completed_total{agent="echo"})')
        assert before == [] or float(before[0]["value"][1]) == 0.0
        # a Studio watching: the live feed hears events only while a client is connected
        async with connect(ws_url(query, "/ws/events")) as watcher:
            for i in range(5):
                resp = await http.post(
                    f"{stack.api}/api/tasks",
                    params={"wait": 10},
                    json={"targetAgent": "echo", "parameters": {"i": i}},
                )
                assert resp.json()["status"] == "completed"
            for _ in range(10):  # the tasks' events, read as Studio would
                assert json.loads(await asyncio.wait_for(watcher.recv(), 10))["type"] == "event"

        async def moved(promql: str, at_least: float) -> bool:
            result = await prometheus.query(promql)
            return bool(result) and float(result[0]["value"][1]) >= at_least

        await wait_for(
            lambda: moved('sum(loom_tasks_completed_total{agent="echo"})', 5), 20, "dispatcher counter"
        )
        await wait_for(
            lambda: moved('sum(loom_worker_tasks_total{agent="echo",status="completed"})', 5),
            20,
            "worker counter",
        )
        await wait_for(lambda: moved("sum(loom_registry_heartbeats_total)", 1), 20, "registry heartbeats")
        await wait_for(
            lambda: moved('sum(loom_task_e2e_seconds_count{agent="echo"})', 5), 20, "e2e histogram"
        )
        await wait_for(lambda: moved("sum(loom_registry_instances)", 1), 20, "registry instances gauge")
        await wait_for(
            lambda: moved('sum(loom_ingest_rows_written_total{table="events"})', 10), 20, "ingest rows"
        )
        await wait_for(lambda: moved("sum(loom_query_live_events_total)", 10), 20, "query live feed")
        task_id = resp.json()["taskId"]

        async def replay_created() -> bool:  # 404 until ingest has stored the task's events
            created = await http.post(f"{replay.url}/api/replay/create", params={"task_id": task_id})
            return created.status_code == 201

        await wait_for(replay_created, 20, "a replay session of the last task")
        await wait_for(lambda: moved("sum(loom_replay_sessions_created_total)", 1), 20, "replay sessions")
    finally:
        prometheus.stop()
