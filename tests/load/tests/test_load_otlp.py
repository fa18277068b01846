"""The pure parts of the OTLP ingest benchmark: the protobuf encoding of the export requests, the
traces sent, and the sending loop (against a fake receiver that answers 429 once)."""

from __future__ import annotations

import asyncio
import struct
import time

import httpx
from loom_load.otlp import (
    SPANS_PER_TRACE,
    _varint,
    bodies,
    encode_request,
    key_value,
    send_all,
    trace_spans,
)

Fields = list[tuple[int, int | bytes]]


def parse(message: bytes) -> Fields:
    """(field number, value) pairs of a protobuf message: varints as ints, fixed64 as ints, bytes as bytes."""
    out: Fields = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(message):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 1:
            out.append((number, struct.unpack("<Q", message[i : i + 8])[0]))
            i += 8
        elif wire == 2:
            size = varint()
            out.append((number, message[i : i + size]))
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def one(fields: Fields, number: int) -> int | bytes:
    [value] = [v for n, v in fields if n == number]
    return value


def test_varints_and_key_values_follow_the_wire_format() -> None:
    assert _varint(0) == b"\x00" and _varint(1) == b"\x01" and _varint(300) == b"\xac\x02"
    assert _varint(2**63) == b"\x80" * 9 + b"\x01"
    assert key_value("a", "b") == b"\x0a\x01a\x12\x03\x0a\x01b"
    assert parse(one(parse(key_value("n", 150)), 2)) == [(3, 150)]  # type: ignore[arg-type]
    assert parse(one(parse(key_value("t", True)), 2)) == [(2, 1)]  # type: ignore[arg-type]


def test_a_request_holds_the_spans_with_ids_times_and_genai_attributes() -> None:
    spans = trace_spans("run1", 7, 1_000_000_000)
    assert spans == trace_spans("run1", 7, 1_000_000_000)
    assert [s.name for s in spans] == ["invoke_agent agent-7", "chat gpt-4o-mini", "execute_tool calculator"]
    root = spans[0]
    assert len(root.trace_id) == 16 and len({s.span_id for s in spans}) == 3
    assert all(len(s.span_id) == 8 and s.parent_span_id == root.span_id for s in spans[1:])

    request = parse(encode_request("svc", spans))
    resource_spans = parse(one(request, 1))  # type: ignore[arg-type]
    resource = parse(one(resource_spans, 1))  # type: ignore[arg-type]
    assert parse(one(resource, 1)) == [(1, b"service.name"), (2, b"\x0a\x03svc")]  # type: ignore[arg-type]
    scope_spans = parse(one(resource_spans, 2))  # type: ignore[arg-type]
    encoded = [parse(v) for n, v in scope_spans if n == 2]  # type: ignore[arg-type]
    assert len(encoded) == 3
    chat = encoded[1]
    assert one(chat, 1) == root.trace_id and one(chat, 4) == root.span_id
    assert one(chat, 5) == b"chat gpt-4o-mini" and one(chat, 6) == 3
    assert (one(chat, 7), one(chat, 8)) == (spans[1].start_ns, spans[1].end_ns)
    attributes = {parse(v)[0][1]: parse(parse(v)[1][1]) for n, v in chat if n == 9}  # type: ignore[arg-type]
    assert attributes[b"gen_ai.operation.name"] == [(1, b"chat")]
    assert attributes[b"gen_ai.usage.input_tokens"] == [(3, 107)]
    assert one(encoded[0], 6) == 1  # INTERNAL
    assert 4 not in {n for n, _ in encoded[0]}  # the root has no parent


def test_bodies_split_the_traces_into_batches() -> None:
    payloads = bodies("r", traces=10, traces_per_batch=4, now_ns=0)
    assert len(payloads) == 3
    counts = []
    for payload in payloads:
        scope_spans = parse(one(parse(one(parse(payload), 1)), 2))  # type: ignore[arg-type]
        counts.append(sum(1 for n, _ in scope_spans if n == 2))
    assert counts == [4 * SPANS_PER_TRACE, 4 * SPANS_PER_TRACE, 2 * SPANS_PER_TRACE]


def test_send_all_sends_a_busy_answer_again_and_counts_accepted_spans() -> None:
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/traces"
        assert request.headers["content-type"] == "application/x-protobuf"
        seen.append(request.content)
        if len(seen) == 1:
            return httpx.Response(429, headers={"retry-after": "0"})
        if request.content == b"bad":
            return httpx.Response(400)
        return httpx.Response(200)

    async def run() -> tuple[int, int, int]:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            sent = await send_all(client, [b"a", b"b", b"bad"], [3, 6, 9], 2, time.monotonic() + 10)
        return sent.accepted_spans, sent.retries, sent.errors

    assert asyncio.run(run()) == (9, 1, 1)
    assert len(seen) == 4 and seen.count(seen[0]) == 2  # the busy one was sent again
