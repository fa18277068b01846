"""Hostile input never gets a 5xx, never hangs a service and never poisons it: a corpus over REST
and NATS, every request with a timeout, and ``/healthz`` answering (with the same process) after it.

The worst case first: a task sized so that its assignment (headers and the dispatcher's fields
added) would exceed NATS's ``max_payload``. Over REST it is refused at submit (413 with the limit);
over NATS it is dead-lettered with the reason; either way the dispatcher keeps its connection,
answers ``/healthz`` and routes the next task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from loom_protocol import (
    MSG_ID_HEADER,
    Heartbeat,
    InstanceLoad,
    RejectedMessage,
    Task,
    subjects,
    submitted_msg_id,
)
from loom_protocol.limits import MAX_BODY_BYTES, MAX_TASK_BYTES, NATS_MAX_PAYLOAD
from websockets.asyncio.client import connect

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    event,
    publish,
    start_ingest,
    start_pipeline,
    wait_count,
    ws_url,
)
from tests.integration.harness import Stack, wait_for
from tests.integration.replay_support import start_replay
from tests.integration.task_support import Finals, submit_nats

pytestmark = pytest.mark.component

TIMEOUT = httpx.Timeout(10.0)


async def _rejections(stack: Stack) -> list[RejectedMessage]:
    rejected: list[RejectedMessage] = []

    async def on_rejected(msg: Any) -> None:
        rejected.append(RejectedMessage.from_json(msg.data))

    await (await stack.nats()).subscribe(subjects.rejected("dispatcher"), cb=on_rejected)
    return rejected


async def _healthy(url: str) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200
        assert (await client.get(f"{url}/readyz")).status_code == 200


def _padding_for(size: int) -> dict[str, Any]:
    """Parameters that make a submission body about ``size`` bytes."""
    return {"text": "x" * (size - 100)}


async def test_a_task_too_large_to_forward_is_refused_and_the_dispatcher_keeps_working(stack: Stack) -> None:
    await stack.registry()
    dispatcher = await stack.dispatcher(process=True)
    await stack.worker("hw1", agents="echo")
    await stack.wait_instances("echo", 1)
    rejected = await _rejections(stack)
    nc = await stack.nats()
    pid = dispatcher.proc.pid  # type: ignore[union-attr]

    # over NATS: the body fits max_payload with its headers, the assignment would not
    poison = Task(task_id="poison-nats", target_agent="echo", parameters=_padding_for(1_048_000))
    body = poison.to_json()
    assert MAX_TASK_BYTES < len(body) < NATS_MAX_PAYLOAD - 200
    await nc.jetstream().publish(
        subjects.task_submitted("echo"), body, headers={MSG_ID_HEADER: submitted_msg_id(poison.task_id)}
    )
    await wait_for(lambda: any(r.reason.startswith("message is") for r in rejected), 20, "the dead letter")
    assert f"at most {MAX_TASK_BYTES} bytes" in rejected[0].reason

    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        # over REST: the same window answers 413 with the limit
        resp = await client.post(
            f"{stack.api}/api/tasks",
            json={"taskId": "poison-rest", "targetAgent": "echo", "parameters": _padding_for(1_040_000)},
        )
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["limit"] == MAX_TASK_BYTES
        assert (await client.get(f"{stack.api}/api/tasks/poison-nats")).status_code == 404
        assert (await client.get(f"{stack.api}/api/tasks/poison-rest")).status_code == 404

        # the largest task accepted goes through (its assignment fits, headers and all)
        big = await client.post(
            f"{stack.api}/api/tasks",
            params={"wait": 20},
            json={"targetAgent": "echo", "parameters": _padding_for(MAX_TASK_BYTES - 2_000)},
        )
        assert big.status_code == 200, big.text[:300]
        assert big.json()["status"] == "completed"

    # and the next task over NATS is routed
    finals = Finals()
    await finals.attach(nc)
    after = Task(target_agent="echo", parameters={"n": 1})
    await submit_nats(nc, after)
    await wait_for(lambda: finals.done([after.task_id]), 20, "the next task to finish")
    await _healthy(dispatcher.url)
    assert dispatcher.alive and dispatcher.proc.pid == pid  # type: ignore[union-attr]


BAD_SUBMISSIONS: list[tuple[str, Any]] = [
    ("lone surrogate in parameters", {"targetAgent": "echo", "parameters": {"a": "\ud800"}}),
    ("lone surrogate in a key", {"targetAgent": "echo", "parameters": {"\udfff": 1}}),
    ("NUL in parameters", {"targetAgent": "echo", "parameters": {"a": "x\x00y"}}),
    ("NUL in metadata", {"targetAgent": "echo", "metadata": {"a": "\x00"}}),
    ("parentTaskId path", {"targetAgent": "echo", "parentTaskId": "../x"}),
    ("parentTaskId sql", {"targetAgent": "echo", "parentTaskId": "' OR 1=1 --"}),
    ("parentTaskId wildcard", {"targetAgent": "echo", "parentTaskId": "a.>"}),
    ("parentTaskId 10k", {"targetAgent": "echo", "parentTaskId": "a" * 10_000}),
    ("sourceAgent 10k", {"targetAgent": "echo", "sourceAgent": "a" * 10_000}),
    ("sourceAgent NUL", {"targetAgent": "echo", "sourceAgent": "a\x00"}),
    ("sessionId space", {"targetAgent": "echo", "sessionId": "a b"}),
    ("taskId surrogate", {"targetAgent": "echo", "taskId": "\ud800"}),
    ("nested 200 deep", {"targetAgent": "echo", "parameters": {"a": json.loads("[" * 200 + "]" * 200)}}),
]


def _raw(body: Any) -> bytes:
    # json.dumps escapes lone surrogates as \ud800, which is what a hostile client sends
    return json.dumps(body).encode()


@pytest.mark.parametrize(("what", "body"), BAD_SUBMISSIONS, ids=[w for w, _ in BAD_SUBMISSIONS])
async def test_bad_submissions_are_422(stack: Stack, what: str, body: Any) -> None:
    await stack.registry()
    await stack.dispatcher()
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        resp = await client.post(
            f"{stack.api}/api/tasks", content=_raw(body), headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422, f"{what}: {resp.status_code} {resp.text[:300]}"
        assert resp.json()["error"]["code"] == "invalid_request"
    await _healthy(stack.api)


async def test_nan_and_infinity_literals_are_refused(stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    rejected = await _rejections(stack)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for literal in ("NaN", "Infinity", "-Infinity"):
            raw = f'{{"targetAgent": "echo", "parameters": {{"x": {literal}}}}}'
            resp = await client.post(
                f"{stack.api}/api/tasks", content=raw, headers={"content-type": "application/json"}
            )
            assert resp.status_code == 422, f"{literal}: {resp.status_code} {resp.text[:300]}"
    nc = await stack.nats()
    for literal, task_id in (("NaN", "nan-nats"), ("\\u0000", "nul-nats")):
        value = literal if literal == "NaN" else f'"a{literal}"'
        raw = f'{{"taskId": "{task_id}", "targetAgent": "echo", "parameters": {{"x": {value}}}}}'
        await nc.jetstream().publish(subjects.task_submitted("echo"), raw.encode())
    await wait_for(lambda: len(rejected) >= 2, 20, "two dead letters")
    reasons = " | ".join(r.reason for r in rejected)
    assert "NaN is not a JSON number" in reasons and "NUL character" in reasons
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for task_id in ("nan-nats", "nul-nats"):
            assert (await client.get(f"{stack.api}/api/tasks/{task_id}")).status_code == 404
    await _healthy(stack.api)


async def test_hostile_path_ids_never_5xx_on_the_dispatcher(stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for task_id in ("%00", "a%00b", "%ED%A0%80", "x" * 5000, "..%2F..%2Fetc", "a.>"):
            for method, path in (
                ("GET", f"/api/tasks/{task_id}"),
                ("POST", f"/api/tasks/{task_id}/cancel"),
                ("POST", f"/api/tasks/{task_id}/approve"),
                ("GET", f"/api/tasks/{task_id}/stream?timeout=1"),
            ):
                resp = await client.request(method, f"{stack.api}{path}")
                assert 400 <= resp.status_code < 500, f"{method} {path[:60]}: {resp.status_code}"
    await _healthy(stack.api)


# -- query, replay and ingest ---------------------------------------------------------------------

QUERY_CORPUS: list[tuple[str, dict[str, str]]] = [
    ("/api/events", {"task_id": "a\x00b"}),
    ("/api/events", {"agent": "\x00"}),
    ("/api/events", {"type": "task.*\x00"}),
    ("/api/events", {"start_time": "0001-01-01T00:00:00Z"}),
    ("/api/events", {"cursor": "\x00" * 10}),
    ("/api/tasks", {"agent": "a\x00"}),
    ("/api/tasks", {"session": "\x00"}),
    ("/api/tasks", {"since": "0001-01-01T00:30:00Z"}),
    ("/api/metrics", {"bucket": "999999999999960"}),
    ("/api/metrics", {"bucket": "9" * 5000}),
    ("/api/metrics", {"end_time": "0001-01-01T00:30:00Z"}),
    ("/api/metrics", {"start_time": "9999-12-31T23:00:00Z"}),
    ("/api/metrics", {"agent": "\x00"}),
    ("/api/topology", {"trace_id": "\x00"}),
    ("/api/tasks/a%00b", {}),
    ("/api/sessions/%00", {}),
    ("/api/traces/%00", {}),
    ("/api/memory/%00", {}),
]


async def test_query_answers_hostile_parameters_with_4xx(database_url: str, stack: Stack) -> None:
    _, query = await start_pipeline(stack, database_url)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for path, params in QUERY_CORPUS:
            resp = await client.get(f"{query.url}{path}", params=params)
            assert 400 <= resp.status_code < 500, (
                f"{path} {params!r:.80}: {resp.status_code} {resp.text[:200]}"
            )
    await _healthy(query.url)


async def test_metrics_survive_absurd_costs(database_url: str, stack: Stack) -> None:
    ingest, query = await start_pipeline(stack, database_url)
    js = (await stack.nats()).jetstream()
    usage = [
        event("llm.usage", data={"cost_usd": 1e308, "input_tokens": 1}, agent_id="rich") for _ in range(2)
    ]
    await publish(js, usage)
    # stored, or dead-lettered when the database cannot sum them: either way accounted for
    both = (
        "SELECT (SELECT count(*) FROM events WHERE type = 'llm.usage') + (SELECT count(*) FROM dead_letters)"
    )
    await wait_count(database_url, both, 2, 20)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        resp = await client.get(f"{query.url}/api/metrics")
        assert resp.status_code < 500, resp.text[:300]
    await _healthy(query.url)
    await _healthy(ingest.url)


async def test_ws_ingest_refuses_unstorable_events_and_stays_open(database_url: str, stack: Stack) -> None:
    ingest = await start_ingest(stack, database_url)
    good = event(data={"n": 1}, task_id="ws-hostile", agent_id="p").model_dump(mode="json", exclude_none=True)
    async with connect(ws_url(ingest, "/ws/ingest"), max_size=None) as ws:
        cases = [
            ({**good, "data": {"text": "\ud800"}}, "lone surrogate"),
            ({**good, "data": {"text": "a\x00"}}, "NUL character"),
            ({**good, "data": json.loads("[" * 100 + "]" * 100)}, "nested deeper"),
        ]
        for bad, reason in cases:
            await ws.send(json.dumps({"type": "event_batch", "events": [bad]}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert answer["rejected"] == 1 and reason in answer["errors"][0]["reason"], answer
        await ws.send('{"type": "event_batch", "events": ' + "[" * 100_000 + "]" * 100_000 + "}")
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer["type"] == "error" and "nested too deep" in answer["reason"]
        await ws.send(json.dumps({"type": "event_batch", "events": [good]}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer["accepted"] == 1, answer
    await _healthy(ingest.url)


async def test_replay_answers_hostile_input_with_4xx(database_url: str, stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    await start_pipeline(stack, database_url)
    replay = await start_replay(stack, database_url)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/api/replay/create", {"params": {"task_id": "a\x00"}}),
            ("POST", "/api/replay/create", {"params": {"trace_id": "\x00"}}),
            ("POST", "/api/replay/create", {"content": _raw({"taskId": "\ud800"})}),
            ("POST", "/api/replay/create", {"content": _raw({"sessionId": "a\x00"})}),
            ("POST", "/api/replay/deterministic", {"content": _raw({"taskId": "\ud800"})}),
            ("POST", "/api/replay/deterministic", {"content": _raw({"taskId": "x\x00"})}),
            (
                "POST",
                "/api/replay/fork",
                {"content": _raw({"taskId": "t", "fromStep": 1, "changes": {"prompt": "\ud800"}})},
            ),
            ("GET", f"/api/replay/{'0' * 32}:anchors", {}),
            ("GET", f"/api/replay/{'0' * 32}:ckpt", {}),
            ("DELETE", f"/api/replay/{'0' * 32}:anchors", {}),
            ("POST", f"/api/replay/{'0' * 32}:anchors/step", {}),
            ("GET", "/api/replay/a%00b", {}),
        ]
        for method, path, kwargs in requests:
            if "content" in kwargs:
                kwargs = {**kwargs, "headers": {"content-type": "application/json"}}
            resp = await client.request(method, f"{replay.url}{path}", **kwargs)
            assert 400 <= resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:200]}"
    await _healthy(replay.url)


async def test_a_dead_task_replays_to_a_4xx_and_a_hostile_breakpoint_leaves_the_player_open(
    database_url: str, stack: Stack
) -> None:
    """A task that died unrouted (its agent never ran) has a recording of two lifecycle events:
    a deterministic replay of it is the dispatcher's 4xx, not a 502; a play session over it
    answers a breakpoint with a lone surrogate with an error frame and goes on playing."""
    await stack.registry()
    await stack.dispatcher()
    await start_pipeline(stack, database_url)
    replay = await start_replay(stack, database_url)
    dead = Task(target_agent="nosuchagent", parameters={"prompt": "x"})
    await submit_nats(await stack.nats(), dead)
    stored = "SELECT count(*) FROM events WHERE task_id = $1 AND type = 'loom.task.status.dead'"
    await wait_count(database_url, stored, 1, 30, dead.task_id)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        replayed = await client.post(f"{replay.url}/api/replay/deterministic", json={"taskId": dead.task_id})
        assert 400 <= replayed.status_code < 500, replayed.text
        assert "unknown agent 'nosuchagent'" in replayed.json()["error"]["message"]
        created = await client.post(f"{replay.url}/api/replay/create", params={"task_id": dead.task_id})
        assert created.status_code == 201, created.text
        session = created.json()["sessionId"]
    async with connect(ws_url(replay, f"/api/replay/{session}/play?speed=1000"), open_timeout=10) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "started"
        await ws.send('{"action": "breakpoint", "type": "\\ud800"}')  # JSON's escape: a lone surrogate
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "error":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert frames[-1]["status"] == 422 and "breakpoint type" in frames[-1]["reason"], frames[-1]
        await ws.send('{"action": "breakpoint", "type": "task.dead"}')  # the socket still serves
        while frames[-1]["type"] != "breakpoints":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert frames[-1]["breakpoints"] == [{"type": "task.dead"}], frames[-1]
    await _healthy(replay.url)


async def test_heartbeats_with_absurd_intervals_are_dead_lettered(stack: Stack) -> None:
    registry = await stack.registry()
    nc = await stack.nats()
    rejected: list[RejectedMessage] = []

    async def on_rejected(msg: Any) -> None:
        rejected.append(RejectedMessage.from_json(msg.data))

    await nc.subscribe(subjects.rejected("registry"), cb=on_rejected)
    beat = Heartbeat(
        instance_id="fake", host="h", pid=1, load=InstanceLoad(in_flight=0, capacity=1)
    ).to_wire()
    for n, interval in enumerate(("Infinity", "1e300", "1e9", "NaN")):
        body = json.dumps({**beat, "instanceId": f"fake{n}", "intervalS": 0.5}).replace("0.5", interval)
        await nc.publish(subjects.registry_heartbeat(f"fake{n}"), body.encode())
    await wait_for(lambda: len(rejected) == 4, 20, "four dead letters")
    reasons = [r.reason for r in rejected]
    assert sum("less than or equal to 3600" in r for r in reasons) == 2, reasons
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        listed = (await client.get(f"{registry.url}/api/agents")).text
    assert "fake" not in listed
    await _healthy(registry.url)


async def _too_large_while_read(
    url: str, declared_bytes: int, streamed: Callable[[], AsyncIterator[bytes]]
) -> httpx.Response:
    """POST a body whose Content-Length is ``declared_bytes``, then ``streamed()`` without one: both
    are 413 (the streamed one may instead see the connection closed before it was all sent); the
    answer to the declared one."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        declared = await client.post(
            url, content=b"{" + b" " * declared_bytes + b"}", headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413, declared.text[:200]
        try:
            answer = await client.post(url, content=streamed(), headers={"content-type": "application/json"})
        except (httpx.RemoteProtocolError, httpx.WriteError):
            pass  # the server answered and closed before the client finished sending
        else:
            assert answer.status_code == 413, answer.text[:200]
            assert f"over the limit of {MAX_BODY_BYTES} bytes" in answer.json()["error"]["message"]
    return declared


async def test_a_50_mib_body_is_refused_while_it_is_read(stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    chunk = b"[" + b"1," * 32_767 + b"1]"  # 64 KiB of small numbers

    async def body() -> AsyncIterator[bytes]:
        yield b'{"targetAgent": "echo", "parameters": {"n": ['
        for _ in range(800):  # 50 MiB, streamed without a Content-Length
            yield chunk + b","
        yield b"1]}}"

    await _too_large_while_read(f"{stack.api}/api/tasks", 50 * 1024 * 1024, body)
    await _healthy(stack.api)


async def test_replay_refuses_a_body_over_the_limit_while_it_is_read(database_url: str, stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    await start_pipeline(stack, database_url)
    replay = await start_replay(stack, database_url)

    async def body() -> AsyncIterator[bytes]:
        yield b'{"taskId": "t", "fromStep": 1, "changes": {"prompt": "'
        for _ in range(50):  # 50 MiB, streamed without a Content-Length
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    declared = await _too_large_while_read(f"{replay.url}/api/replay/fork", MAX_BODY_BYTES + 1, body)
    assert declared.json()["error"]["code"] == "content_too_large"
    await _healthy(replay.url)
