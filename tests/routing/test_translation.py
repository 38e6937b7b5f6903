"""Pure request/response mapping of the provider adapters: no HTTP, no database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import pytest

from routing.providers.anthropic_adapter import (
    AnthropicStreamTranslator,
    anthropic_messages,
    build_anthropic_params,
    parse_anthropic_message,
)
from routing.providers.errors import body_message, error_for_status, parse_retry_after, sse_data
from routing.providers.ollama_adapter import (
    OllamaStreamTranslator,
    build_ollama_payload,
    parse_ollama_response,
)
from routing.providers.openai_adapter import (
    OpenAIStreamTranslator,
    build_openai_params,
    parse_openai_completion,
)
from routing.providers.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMER_TOKENS,
    estimate_request_tokens,
    estimate_tokens,
)
from routing.types import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ModelTarget,
    ProviderError,
    ResponseFormat,
    StreamEvent,
    ToolCall,
    ToolSpec,
    UnsupportedFeature,
)

PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = ToolSpec(
    "get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def target(kind: str = "openai", **overrides: Any) -> ModelTarget:
    fields: dict[str, Any] = {
        "name": "m",
        "provider": f"fake-{kind}",
        "kind": kind,
        "upstream_model": "up-model",
        "base_url": "http://127.0.0.1:1",
        "max_output_tokens": 777,
    }
    return ModelTarget(**{**fields, **overrides})


def ask(*messages: ChatMessage, **options: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=list(messages) or [ChatMessage("user", "hi")], **options)


def tool_round_trip() -> list[ChatMessage]:
    return [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", [ContentPart("text", "Weather here?"), ContentPart("image", image_url=PNG)]),
        ChatMessage(
            "assistant",
            None,
            tool_calls=[
                ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),
                ToolCall("call_2", "get_weather", '{"city": "Rome"}'),
            ],
        ),
        ChatMessage("tool", "rainy", tool_call_id="call_1"),
        ChatMessage("tool", "sunny", tool_call_id="call_2"),
    ]


# --- OpenAI ----------------------------------------------------------------------------------


def test_openai_params_map_every_option() -> None:
    request = ask(
        *tool_round_trip(),
        max_tokens=50,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        n=2,
        stop=["END"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logprobs=True,
        top_logprobs=3,
        tools=[WEATHER],
        tool_choice={"name": "get_weather"},
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", "answer", SCHEMA, strict=True),
        user="u-1",
        metadata={"team": "a"},
    )
    params = build_openai_params(request, target("openai"), stream=False)
    assert params["model"] == "up-model"
    assert params["max_completion_tokens"] == 50 and "max_tokens" not in params
    assert (params["n"], params["stop"], params["seed"], params["user"]) == (2, ["END"], 7, "u-1")
    assert (params["logprobs"], params["top_logprobs"]) == (True, 3)
    assert params["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert params["parallel_tool_calls"] is False
    assert params["tools"][0]["function"]["parameters"] == WEATHER.parameters
    assert params["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert params["metadata"] == {"team": "a"}
    assert "extra_body" not in params  # OpenAI has no top_k: dropped
    assert "stream" not in params
    user, assistant, first_result = params["messages"][1:4]
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
    assert assistant["tool_calls"][1]["function"] == {"name": "get_weather", "arguments": '{"city": "Rome"}'}
    assert first_result == {"role": "tool", "tool_call_id": "call_1", "content": "rainy"}


def test_openai_compatible_params_differ_where_servers_do() -> None:
    request = ask(max_tokens=9, top_k=20, metadata={"team": "a"})
    params = build_openai_params(request, target("openai_compatible"), stream=True, include_usage=False)
    assert params["max_tokens"] == 9 and "max_completion_tokens" not in params
    assert params["extra_body"] == {"top_k": 20}
    assert "metadata" not in params and "stream_options" not in params
    assert build_openai_params(request, target(), stream=True)["stream_options"] == {"include_usage": True}


def test_openai_refuses_what_it_cannot_express() -> None:
    with pytest.raises(UnsupportedFeature):
        build_openai_params(
            ask(ChatMessage("system", [ContentPart("image", image_url=PNG)])), target(), stream=False
        )
    with pytest.raises(UnsupportedFeature):
        build_openai_params(ask(response_format=ResponseFormat("json_schema")), target(), stream=False)


def test_openai_completion_parsing() -> None:
    completion: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None},
                "logprobs": {
                    "content": [
                        {
                            "token": "Hi",
                            "logprob": -0.5,
                            "top_logprobs": [{"token": "Hi", "logprob": -0.5}],
                        }
                    ]
                },
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    result = parse_openai_completion(completion, ask())
    first, second = result.choices
    assert (first.message.content, first.finish_reason) == ("Hi", "stop")
    assert first.logprobs is not None and first.logprobs[0].top == [("Hi", -0.5)]
    assert second.message.tool_calls == [ToolCall("c1", "f", "{}")] and second.finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cached_tokens) == (
        10,
        3,
        4,
    )
    assert not result.usage.estimated and result.upstream_id == "chatcmpl-1"


def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
        "usage": usage,
    }


def test_openai_stream_translation() -> None:
    translator = OpenAIStreamTranslator(ask())
    events: list[StreamEvent] = []
    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}
    for item in [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]),
        chunk(
            [
                {
                    "index": 0,
                    "delta": {"content": "lo"},
                    "logprobs": {"content": [{"token": "lo", "logprob": -1.0, "top_logprobs": []}]},
                }
            ]
        ),
        chunk([{"index": 0, "delta": {"tool_calls": [call]}}]),
        # Some servers repeat the id on every delta: it must not start a second call.
        chunk([{"index": 0, "delta": {"tool_calls": [{**call, "function": {"arguments": '{"a":'}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ]:
        assert not translator.complete
        events.extend(translator.feed(item))
    assert translator.complete
    kinds = [e.kind for e in events]
    assert kinds == ["text", "text", "tool_call", "tool_call", "tool_call", "finish"]
    assert events[0].logprobs is None and events[1].logprobs is not None  # on the text they describe
    assert events[1].logprobs[0].token == "lo"
    first_call, *rest = [e for e in events if e.kind == "tool_call"]
    assert (first_call.tool_call_id, first_call.tool_name) == ("call_9", "f")
    assert all(e.tool_call_id is None for e in rest) and "".join(e.arguments for e in rest) == '{"a":1}'
    usage = translator.usage_event().usage
    assert usage is not None and usage.estimated  # no usage chunk came
    events = translator.feed(chunk([], {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}))
    usage = translator.usage_event().usage
    assert events == [] and usage is not None and (usage.completion_tokens, usage.estimated) == (5, False)


# --- Anthropic -------------------------------------------------------------------------------


def test_anthropic_messages_merge_turns_and_move_system() -> None:
    messages = [*tool_round_trip(), ChatMessage("user", "and tomorrow?"), ChatMessage("user", "thanks")]
    system, turns = anthropic_messages([ChatMessage("system", "Rules."), *messages])
    assert system == "Rules.\n\nBe brief."
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    image = turns[0]["content"][1]
    assert image == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert turns[1]["content"][0] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }
    results = turns[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text", "text"]
    assert results[1] == {
        "type": "tool_result",
        "tool_use_id": "call_2",
        "content": [{"type": "text", "text": "sunny"}],
    }
    url_image = ContentPart("image", image_url="https://example.com/a.png")
    _, turns = anthropic_messages([ChatMessage("user", [url_image])])
    assert turns[0]["content"][0]["source"] == {"type": "url", "url": "https://example.com/a.png"}


def test_anthropic_params() -> None:
    request = ask(
        ChatMessage("user", "hi"),
        temperature=0.3,
        top_k=5,
        stop=["X"],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        user="u-1",
        presence_penalty=0.5,
    )
    call = build_anthropic_params(request, target("anthropic"))
    params = call.params
    assert params["max_tokens"] == 777  # the target's limit when the request sets none
    assert params["stop_sequences"] == ["X"]
    assert params["extra_body"] == {"temperature": 0.3, "top_k": 5}
    assert params["tools"] == [
        {"name": "get_weather", "input_schema": WEATHER.parameters, "description": "Weather for a city"}
    ]
    assert params["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert params["metadata"] == {"user_id": "u-1"}
    assert call.structured_tool is None and "presence_penalty" not in params
    named = build_anthropic_params(
        ask(tools=[WEATHER], tool_choice={"name": "get_weather"}), target("anthropic")
    )
    assert named.params["tool_choice"] == {"type": "tool", "name": "get_weather"}


@pytest.mark.parametrize(
    ("options", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"temperature": 1.5}, "temperature")],
)
def test_anthropic_refuses_what_it_lacks(options: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        build_anthropic_params(ask(**options), target("anthropic"))
    assert caught.value.param == param


def test_anthropic_structured_output_is_a_forced_tool() -> None:
    request = ask(response_format=ResponseFormat("json_schema", "city info", SCHEMA))
    call = build_anthropic_params(request, target("anthropic"))
    assert call.structured_tool == "city_info"
    assert call.params["tools"][0]["input_schema"] == SCHEMA
    assert call.params["tool_choice"] == {"type": "tool", "name": "city_info"}
    # With client tools, the model may call one of them or answer in the format.
    with_tools = build_anthropic_params(
        ask(tools=[WEATHER], response_format=ResponseFormat("json_object")), target("anthropic")
    )
    assert [t["name"] for t in with_tools.params["tools"]] == ["get_weather", "response"]
    assert with_tools.params["tool_choice"] == {"type": "any"}
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "tool_use", "id": "t1", "name": "city_info", "input": {"answer": "Oslo"}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 4,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 1,
        },
    }
    result = parse_anthropic_message(message, call, request)
    choice = result.choices[0]
    assert json.loads(str(choice.message.content)) == {"answer": "Oslo"}
    assert choice.finish_reason == "stop" and choice.message.tool_calls == []
    assert (result.usage.prompt_tokens, result.usage.cached_tokens, result.usage.completion_tokens) == (
        8,
        2,
        4,
    )


def test_anthropic_stream_translation() -> None:
    usage = {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3}
    message = {"id": "m", "type": "message", "role": "assistant", "model": "c", "content": [], "usage": usage}
    translator = AnthropicStreamTranslator(ask(), structured_tool=None)
    events: list[StreamEvent] = []
    for event in (
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me look."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "tu1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}},
    ):
        events.extend(translator.feed(event))
    assert not translator.complete
    events.extend(translator.feed({"type": "message_stop"}))
    assert translator.complete
    assert [(e.kind, e.tool_index) for e in events] == [
        ("text", 0),
        ("tool_call", 0),
        ("tool_call", 0),
        ("tool_call", 0),
        ("finish", 0),
    ]
    assert (events[1].tool_call_id, events[1].tool_name, events[2].arguments) == ("tu1", "f", '{"a":')
    assert events[-1].finish_reason == "tool_calls"
    final = translator.usage_event().usage
    assert final is not None and (final.prompt_tokens, final.cached_tokens, final.completion_tokens) == (
        10,
        3,
        12,
    )


def test_anthropic_stream_structured_tool_becomes_text() -> None:
    translator = AnthropicStreamTranslator(ask(), structured_tool="response")
    events: list[StreamEvent] = []
    for event in (
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "response", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"answer": '},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '"x"}'},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
    ):
        events.extend(translator.feed(event))
    assert [e.kind for e in events] == ["text", "text", "finish"]
    assert "".join(e.text for e in events) == '{"answer": "x"}' and events[-1].finish_reason == "stop"


# --- Ollama ----------------------------------------------------------------------------------


def test_ollama_payload() -> None:
    request = ask(
        *tool_round_trip(),
        max_tokens=30,
        temperature=0.2,
        top_k=4,
        seed=1,
        stop=["Z"],
        tools=[WEATHER],
        response_format=ResponseFormat("json_schema", "x", SCHEMA),
    )
    payload = build_ollama_payload(request, target("ollama"), stream=False)
    assert payload["stream"] is False and payload["format"] == SCHEMA
    assert payload["options"] == {"temperature": 0.2, "top_k": 4, "seed": 1, "stop": ["Z"], "num_predict": 30}
    user, assistant, result = payload["messages"][1:4]
    assert user == {"role": "user", "content": "Weather here?", "images": ["iVBORw0KGgo="]}
    assert assistant["tool_calls"][0] == {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    assert result == {"role": "tool", "content": "rainy", "tool_name": "get_weather"}
    assert payload["tools"][0]["function"]["name"] == "get_weather"
    assert (
        build_ollama_payload(
            ask(response_format=ResponseFormat("json_object")), target("ollama"), stream=True
        )["format"]
        == "json"
    )
    assert "tools" not in build_ollama_payload(
        ask(tools=[WEATHER], tool_choice="none"), target("ollama"), stream=True
    )
    with pytest.raises(UnsupportedFeature):
        url_image = ContentPart("image", image_url="https://example.com/a.png")
        build_ollama_payload(ask(ChatMessage("user", [url_image])), target("ollama"), stream=False)


def test_ollama_answers() -> None:
    data = {
        "model": "llama",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
        },
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 11,
        "eval_count": 6,
    }
    result = parse_ollama_response(data, ask())
    choice = result.choices[0]
    assert (
        choice.message.tool_calls == [ToolCall("call_0", "f", '{"a": 1}')]
        and choice.finish_reason == "tool_calls"
    )
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (
        11,
        6,
        False,
    )
    cached_prompt = parse_ollama_response({**data, "prompt_eval_count": None, "done_reason": "length"}, ask())
    assert cached_prompt.usage.estimated and cached_prompt.choices[0].finish_reason == "length"

    translator = OllamaStreamTranslator(ask(), "fake-ollama")
    events = translator.feed({"message": {"content": "Hi"}, "done": False})
    events += translator.feed(
        {"message": {"content": ""}, "done": True, "done_reason": "length", "eval_count": 1}
    )
    assert [(e.kind, e.text or e.finish_reason) for e in events] == [("text", "Hi"), ("finish", "length")]
    with pytest.raises(ProviderError) as caught:
        translator.feed({"error": "runner crashed"})
    assert caught.value.retryable and caught.value.message == "runner crashed"


# --- errors and token estimates --------------------------------------------------------------


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "3", "retry-after-ms": "1500"}) == 1.5  # the precise one wins
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [
        (400, False, "upstream_bad_request"),
        (401, False, "upstream_auth"),
        (404, False, "upstream_not_found"),
        (422, False, "upstream_bad_request"),
        (408, True, "upstream_timeout"),
        (409, True, "upstream_error"),
        (429, True, "upstream_rate_limited"),
        (500, True, "upstream_error"),
        (501, False, "upstream_error"),
        (503, True, "upstream_overloaded"),
        (529, True, "upstream_overloaded"),
    ],
)
def test_status_mapping(status: int, retryable: bool, code: str) -> None:
    error = error_for_status("p", status, "provider says no", {"retry-after": "2"})
    assert (error.retryable, error.code, error.status, error.message) == (
        retryable,
        code,
        status,
        "provider says no",
    )
    assert error.retry_after == (2.0 if retryable else None)


def test_error_bodies_of_every_provider() -> None:
    assert body_message({"error": {"message": "bad model", "type": "invalid_request_error"}}) == "bad model"
    assert body_message({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}) == "busy"
    assert body_message({"error": "model not found"}) == "model not found"


def test_token_estimates() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_tokens("日本語") == 3  # 9 UTF-8 bytes: CJK is not under-counted as 1 token
    plain = estimate_request_tokens(ask(ChatMessage("user", "x" * 400)))
    assert plain == 100 + MESSAGE_OVERHEAD_TOKENS + REPLY_PRIMER_TOKENS
    with_image = estimate_request_tokens(
        ask(ChatMessage("user", [ContentPart("text", "x" * 400), ContentPart("image", image_url=PNG)]))
    )
    assert with_image == plain + IMAGE_TOKENS
    assert estimate_request_tokens(ask(ChatMessage("user", "x" * 400), tools=[WEATHER])) > plain


async def test_sse_framing() -> None:
    async def lines(*items: str) -> AsyncIterator[str]:
        for item in items:
            yield item

    framed = lines(
        "event: message_start",
        'data: {"a":1}',
        "",
        ": keep-alive",
        "data: one",
        "data:two",
        "",
        "data: [DONE]",
    )
    assert [payload async for payload in sse_data(framed)] == ['{"a":1}', "one\ntwo", "[DONE]"]


def test_in_band_errors() -> None:
    translator = OpenAIStreamTranslator(ask(), "fake-openai")
    assert translator.feed_data("[DONE]") == [] and translator.complete  # the sentinel alone ends a stream
    with pytest.raises(ProviderError) as caught:
        translator.feed_data(json.dumps({"error": {"message": "engine died", "type": "server_error"}}))
    assert (caught.value.message, caught.value.retryable, caught.value.provider) == (
        "engine died",
        True,
        "fake-openai",
    )
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ProviderError) as caught:
        AnthropicStreamTranslator(ask(), None, "fake-anthropic").feed(overloaded)
    assert (caught.value.code, caught.value.retryable) == ("upstream_overloaded", True)
    invalid = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    with pytest.raises(ProviderError) as caught:
        AnthropicStreamTranslator(ask(), None).feed(invalid)
    assert not caught.value.retryable
