from __future__ import annotations

import json

import httpx
import pytest
from loom_agent_worker.runtime import (
    ChatMessage,
    OpenAICompatibleProvider,
    ProviderError,
    ScriptedProvider,
    builtin_registry,
    extract_expression,
    make_provider,
)
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
    assert first.usage.cost_usd is None
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


# The OpenAI tests use httpx.MockTransport: an in-process fake server, to unit-test the
# mapping between our models and the OpenAI HTTP format (no real endpoint is involved).


def completion(message: dict, usage: dict | None = None, model: str = "gpt-test-0") -> dict:
    return {
        "id": "chatcmpl-1",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0},
    }


async def test_openai_request_and_response_mapping() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json=completion(
                {
                    "role": "assistant",
                    "content": "let me compute",
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
                        }
                    ],
                },
                {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
            ),
        )

    provider = OpenAICompatibleProvider(
        "http://llm.test/v1/",
        "gpt-test",
        "sk-secret",
        10.0,
        transport=httpx.MockTransport(handler),
        input_usd_per_mtok=2.0,
        output_usd_per_mtok=10.0,
    )
    history = [
        ChatMessage(role="system", content="sys"),
        ChatMessage(role="user", content="what is 2+2"),
        ChatMessage(
            role="assistant",
            content="",
            tool_calls=[McpToolCall(call_id="call_1", name="calculator", arguments={"expression": "2+2"})],
        ),
        ChatMessage(role="tool", content="4", tool_call_id="call_1", name="calculator"),
    ]
    response = await provider.complete(history, TOOLS[:1])
    await provider.aclose()

    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-secret"
    body = json.loads(request.content)
    assert body["model"] == "gpt-test"
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "what is 2+2"},
        {
            "role": "assistant",
            "content": None,
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
    assert response.usage.cost_usd == pytest.approx((120 * 2.0 + 30 * 10.0) / 1_000_000)
    assert response.model == "gpt-test-0"
    assert response.latency_s >= 0


async def test_openai_plain_answer_without_tools_or_prices() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=completion({"role": "assistant", "content": "hi"}))

    provider = OpenAICompatibleProvider("http://llm.test", "m", None, transport=httpx.MockTransport(handler))
    response = await provider.complete(user("hello"), [])
    assert "tools" not in bodies[0]
    assert (response.content, response.tool_calls, response.usage.cost_usd) == ("hi", [], None)


async def test_openai_http_error_raises_provider_error_with_status_and_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text='{"error": {"message": "upstream overloaded"}}' + "x" * 2000)

    provider = OpenAICompatibleProvider("http://llm.test", "m", "k", transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(user("hello"), [])
    assert caught.value.status == 500
    assert "HTTP 500" in str(caught.value)
    assert "upstream overloaded" in str(caught.value)
    assert caught.value.body is not None and len(caught.value.body) == 500


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, text="not json"), "invalid JSON"),
        (httpx.Response(200, json={"choices": []}), "unexpected response shape"),
        (
            httpx.Response(
                200,
                json=completion(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "t", "arguments": "{"}}
                        ],
                    }
                ),
            ),
            "tool call 't' has invalid JSON arguments",
        ),
    ],
)
async def test_openai_malformed_responses_raise_provider_error(
    response: httpx.Response, message: str
) -> None:
    provider = OpenAICompatibleProvider(
        "http://llm.test", "m", transport=httpx.MockTransport(lambda _: response)
    )
    with pytest.raises(ProviderError, match=message):
        await provider.complete(user("hello"), [])


async def test_openai_transport_failure_raises_provider_error_without_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = OpenAICompatibleProvider("http://llm.test", "m", transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderError, match="ConnectError: connection refused") as caught:
        await provider.complete(user("hello"), [])
    assert caught.value.status is None
