from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply, completion, tool_call
from loom_agent_worker.runtime import (
    ChatMessage,
    OpenAICompatibleProvider,
    ProviderError,
    ScriptedProvider,
    builtin_registry,
    extract_expression,
    make_provider,
)
from loom_agent_worker.runtime.providers import PriceTable, load_prices
from loom_protocol import McpToolCall

TOOLS = builtin_registry().definitions()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is (2+3)*4?", "(2+3)*4"),
        ("compute 10 / (5 - 3).", "10 / (5 - 3)"),
        ("2**10", "2**10"),
        ("I have 2 apples and 3 pears", None),
        ("call me at 5.", None),
        ("-5", None),
        ("hello", None),
        ("(see 2+3) then 4*5*6 please", "4*5*6"),
        ("(see 2+3)", "2+3"),
        ("3 - -2 equals?", "3 - -2"),
    ],
)
def test_extract_expression(text: str, expected: str | None) -> None:
    assert extract_expression(text) == expected


def user(content: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content=content)]


async def test_scripted_without_script_uses_the_calculator_then_answers_with_its_result() -> None:
    provider = ScriptedProvider()
    messages = user("what is (2+3)*4?")
    first = await provider.complete(messages, TOOLS)
    assert first.tool_calls == [
        McpToolCall(call_id="call_0_0", name="calculator", arguments={"expression": "(2+3)*4"})
    ]
    assert first.content == "I will evaluate (2+3)*4 with the calculator."
    assert first.usage.input_tokens == 2 + 3  # "be brief" + "what is (2+3)*4?"
    assert first.usage.output_tokens == 7 + 3  # the sentence + 'calculator {"expression": "(2+3)*4"}'
    assert first.usage.cost_usd == 0.0  # the scripted provider is free
    assert first.model == "scripted-v1"

    messages += [
        ChatMessage(role="assistant", content=first.content or "", tool_calls=first.tool_calls),
        ChatMessage(role="tool", content="20", tool_call_id="call_0_0", name="calculator"),
    ]
    second = await provider.complete(messages, TOOLS)
    assert (second.content, second.tool_calls) == ("20", [])
    assert second.usage.output_tokens == 1


async def test_scripted_echoes_without_an_expression_or_without_the_tool() -> None:
    provider = ScriptedProvider()
    plain = await provider.complete(user("hello there"), TOOLS)
    assert (plain.content, plain.tool_calls) == ("hello there", [])
    no_tool = await provider.complete(user("what is 2+2"), [])
    assert (no_tool.content, no_tool.tool_calls) == ("what is 2+2", [])


async def test_scripted_follows_a_script_by_assistant_turns(new_task) -> None:
    task = new_task(
        "calculator",
        {
            "script": [
                {"thought": "count first", "tool": "word_count", "arguments": {"text": "a b c"}},
                {"tool": "calculator", "arguments": {"expression": "3*7"}},
                {"thought": "done", "answer": "21 it is"},
            ]
        },
    )
    provider = ScriptedProvider().for_task(task)
    messages = user("ignored")
    replies = []
    for _ in range(3):
        reply = await provider.complete(messages, TOOLS)
        replies.append(reply)
        messages.append(
            ChatMessage(role="assistant", content=reply.content or "", tool_calls=reply.tool_calls)
        )
    assert replies[0].content == "count first"
    assert replies[0].tool_calls == [
        McpToolCall(call_id="call_0_0", name="word_count", arguments={"text": "a b c"})
    ]
    assert replies[1].content is None
    assert replies[1].tool_calls[0].arguments == {"expression": "3*7"}
    assert (replies[2].content, replies[2].tool_calls) == ("21 it is", [])
    with pytest.raises(ProviderError, match="script exhausted: no step 3"):
        await provider.complete(messages, TOOLS)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([], "non-empty list"),
        ("do things", "non-empty list"),
        ([{"thought": "only thinking"}], "exactly one of 'tool' or 'answer'"),
        ([{"tool": "calculator", "answer": "both"}], "exactly one of 'tool' or 'answer'"),
        ([{"answer": "ok", "mood": "happy"}], "Extra inputs are not permitted"),
    ],
)
def test_invalid_scripts_are_refused_with_the_reason(script: object, message: str, new_task) -> None:
    with pytest.raises(ProviderError, match=message):
        ScriptedProvider().for_task(new_task("calculator", {"script": script}))


def test_make_provider() -> None:
    scripted = make_provider("scripted", base_url=None, model=None, api_key=None, timeout_s=5)
    assert (scripted.name, scripted.model) == ("scripted", "scripted-v1")
    openai = make_provider("openai", base_url="http://llm.invalid/v1", model="m", api_key="k", timeout_s=5)
    assert isinstance(openai, OpenAICompatibleProvider)
    assert (openai.name, openai.model) == ("openai", "m")
    with pytest.raises(ValueError, match="needs base_url and model"):
        make_provider("openai", base_url=None, model="m", api_key=None, timeout_s=5)
    with pytest.raises(ValueError, match="unknown LLM provider 'claude'"):
        make_provider("claude", base_url=None, model=None, api_key=None, timeout_s=5)


# The OpenAI tests run the provider (the official openai SDK) against a scripted
# OpenAI-compatible HTTP server on 127.0.0.1 (fake_openai.py), so retries, timeouts and the
# wire format are the SDK's real behaviour over a socket.


async def test_openai_request_and_response_mapping() -> None:
    reply = completion(
        "let me compute",
        [tool_call("call_abc", "calculator", {"expression": "6*7"})],
        prompt_tokens=120,
        completion_tokens=30,
        model="gpt-4o-2024-08-06",
    )
    async with FakeOpenAI([reply]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url + "/", "gpt-4o", "sk-secret", 10.0)
        history = [
            ChatMessage(role="system", content="sys"),
            ChatMessage(role="user", content="what is 2+2"),
            ChatMessage(
                role="assistant",
                content="",
                tool_calls=[
                    McpToolCall(call_id="call_1", name="calculator", arguments={"expression": "2+2"})
                ],
            ),
            ChatMessage(role="tool", content="4", tool_call_id="call_1", name="calculator"),
        ]
        response = await provider.complete(history, TOOLS[:1])
        await provider.aclose()

    (request,) = server.seen
    assert request.headers["authorization"] == "Bearer sk-secret"
    assert request.headers["x-stainless-retry-count"] == "0"
    body = request.body
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "what is 2+2"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]
    assert "tool_choice" not in body and "temperature" not in body  # not sent unless set
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": TOOLS[0].description,
                "parameters": TOOLS[0].input_schema,
            },
        }
    ]

    assert response.content == "let me compute"
    assert response.tool_calls == [
        McpToolCall(call_id="call_abc", name="calculator", arguments={"expression": "6*7"})
    ]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (120, 30)
    # priced by the default table: gpt-4o-2024-08-06 -> gpt-4o, $2.50 / $10 per million tokens
    assert response.usage.cost_usd == pytest.approx((120 * 2.5 + 30 * 10.0) / 1_000_000)
    assert response.model == "gpt-4o-2024-08-06"
    assert response.retries == 0
    assert response.latency_s >= 0


async def test_openai_plain_answer_without_tools_and_an_unpriced_model() -> None:
    async with FakeOpenAI([completion("hi", model="my-local-model")]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "my-local-model")
        response = await provider.complete(user("hello"), [])
        await provider.aclose()
    assert "tools" not in server.seen[0].body
    assert server.seen[0].headers["authorization"] == "Bearer none"
    assert (response.content, response.tool_calls, response.usage.cost_usd) == ("hi", [], None)


async def test_openai_sends_temperature_and_tool_choice_when_set() -> None:
    replies = [completion("a", model="m"), completion("b", model="m")]
    async with FakeOpenAI(replies).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "m", temperature=0.0, tool_choice="auto")
        await provider.complete(user("with tools"), TOOLS[:1])
        await provider.complete(user("without tools"), [])
        await provider.aclose()
    with_tools, without = (seen.body for seen in server.seen)
    assert (with_tools["temperature"], with_tools["tool_choice"]) == (0.0, "auto")
    assert without["temperature"] == 0.0 and "tool_choice" not in without  # no tools: no choice


async def test_openai_retries_429_honouring_retry_after_then_completes() -> None:
    limited = Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.01"})
    async with FakeOpenAI([limited, limited, completion("done", completion_tokens=1)]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "gpt-4o-mini", max_retries=3)
        started = time.perf_counter()
        response = await provider.complete(user("hello"), [])
        elapsed = time.perf_counter() - started
        await provider.aclose()
    assert response.content == "done"
    assert response.retries == 2
    assert [seen.headers["x-stainless-retry-count"] for seen in server.seen] == ["0", "1", "2"]
    # without Retry-After the SDK's own backoff would wait >= 0.375 s + 0.75 s
    assert elapsed < 1.0


async def test_openai_retries_a_500_with_backoff_then_completes() -> None:
    failing = Reply(500, {"error": {"message": "upstream overloaded"}})
    async with FakeOpenAI([failing, completion("ok")]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "gpt-4o-mini", max_retries=2)
        response = await provider.complete(user("hello"), [])
        await provider.aclose()
    assert (response.content, response.retries) == ("ok", 1)
    assert len(server.seen) == 2


async def test_openai_gives_up_after_max_retries_naming_endpoint_and_model() -> None:
    failing = Reply(
        503, '{"error": {"message": "upstream overloaded"}}' + "x" * 2000, {"retry-after-ms": "5"}
    )
    async with FakeOpenAI([failing, failing]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "gpt-4o-mini", "k", max_retries=1)
        with pytest.raises(ProviderError) as caught:
            await provider.complete(user("hello"), [])
        await provider.aclose()
    error = caught.value
    assert error.status == 503
    assert error.retries == 1
    assert f"{server.base_url}/chat/completions" in str(error)
    assert "'gpt-4o-mini'" in str(error)
    assert "HTTP 503 after 1 retries" in str(error)
    assert "upstream overloaded" in str(error)
    assert error.body is not None and len(error.body) == 500


async def test_openai_client_errors_are_not_retried() -> None:
    bad = Reply(400, {"error": {"message": "unknown model"}})
    async with FakeOpenAI([bad, completion("never")]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "nope", max_retries=3)
        with pytest.raises(ProviderError, match="HTTP 400 after 0 retries: .*unknown model"):
            await provider.complete(user("hello"), [])
        await provider.aclose()
    assert len(server.seen) == 1


async def test_openai_timeout_names_endpoint_and_model() -> None:
    slow = Reply(delay_s=30.0, body={})
    async with FakeOpenAI([slow, slow]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "gpt-4o-mini", timeout_s=0.2, max_retries=1)
        with pytest.raises(ProviderError) as caught:
            await provider.complete(user("hello"), [])
        await provider.aclose()
    assert str(caught.value) == (
        f"{server.base_url}/chat/completions (model 'gpt-4o-mini') timed out after 1 retries"
    )
    assert (caught.value.status, caught.value.retries) == (None, 1)
    assert len(server.seen) == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, "not json"), "invalid JSON"),
        (Reply(200, {"choices": []}), "unexpected response shape"),
        (
            completion(None, [{"id": "c", "type": "function", "function": {"name": "t", "arguments": "{"}}]),
            "tool call 't' has invalid JSON arguments",
        ),
        (completion(None, [tool_call("c", "t", [1, 2])]), "arguments are not a JSON object"),  # type: ignore[arg-type]
    ],
)
async def test_openai_malformed_responses_raise_provider_error(reply: Reply, message: str) -> None:
    async with FakeOpenAI([reply]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "m", max_retries=0)
        with pytest.raises(ProviderError, match=message):
            await provider.complete(user("hello"), [])
        await provider.aclose()


async def test_openai_unreachable_endpoint_raises_provider_error_without_status() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    provider = OpenAICompatibleProvider(base_url, "m", max_retries=0)
    with pytest.raises(
        ProviderError, match=rf"^{base_url}/chat/completions \(model 'm'\) unreachable"
    ) as caught:
        await provider.complete(user("hello"), [])
    await provider.aclose()
    assert caught.value.status is None


def test_price_table_defaults_prefixes_and_overrides(tmp_path: Path) -> None:
    table = PriceTable()
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("openai/gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost("gpt-4.1-nano", 0, 1_000_000) == pytest.approx(0.4)
    assert table.cost("claude-3-5-sonnet-20241022", 1_000_000, 0) == pytest.approx(3.0)
    assert table.cost("llama-3.2-1b-instruct", 10, 10) == 0.0
    assert table.cost("scripted-v1", 10, 10) == 0.0
    assert table.cost("my-local-model", 10, 10) is None

    overridden = load_prices('{"my-local-model": {"input": 1, "output": 2}, "gpt-4o": [5, 20]}')
    assert overridden.cost("my-local-model", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert overridden.cost("gpt-4o", 1_000_000, 0) == pytest.approx(5.0)
    assert overridden.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    path = tmp_path / "prices.json"
    path.write_text('{"m": {"input": 0.5, "output": 0.5}}')
    assert load_prices(str(path)).cost("m", 2_000_000, 0) == pytest.approx(1.0)
    assert load_prices("").cost("gpt-4o", 0, 0) == 0.0


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("{nope", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"m": {"input": -1, "output": 0}}', "bad price for model 'm'"),
        ('{"m": {"in": 1}}', "bad price for model 'm'"),
        ("/nonexistent/prices.json", "cannot read price file"),
    ],
)
def test_bad_price_settings_are_refused_with_the_reason(setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_prices(setting)
