"""The Anthropic adapter against the fake upstream, over real HTTP. No database."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from routing.providers import close_adapters, get_adapter
from routing.types import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ModelTarget,
    ProviderError,
    ResponseFormat,
    StreamEvent,
    ToolSpec,
    UnsupportedFeature,
)

MODEL = "claude-haiku-4-5"
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


@pytest.fixture(autouse=True)
async def _close_adapters() -> AsyncIterator[None]:
    yield
    await close_adapters()


@pytest.fixture
def claude(upstream: Any, knobs: Any) -> ModelTarget:
    return ModelTarget(
        name="claude",
        provider="fake-anthropic",
        kind="anthropic",
        upstream_model=MODEL,
        base_url=upstream.base_url,
        api_key="sk-ant-test",
        max_output_tokens=64,
    )


def ask(text: str = "hello there world", **options: Any) -> ChatRequest:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", text)]
    return ChatRequest(model="m", messages=messages, **options)


async def collect(events: AsyncIterator[StreamEvent]) -> tuple[list[StreamEvent], ProviderError | None]:
    received: list[StreamEvent] = []
    try:
        async for event in events:
            received.append(event)
    except ProviderError as exc:
        return received, exc
    return received, None


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if e.kind == "text")


def last_body(knobs: Any) -> dict[str, Any]:
    return dict(knobs.stats.recent(1)[0]["body"])


async def test_text_and_usage(claude: ModelTarget, knobs: Any) -> None:
    adapter = get_adapter(claude)
    result = await adapter.complete(ask(max_tokens=8, temperature=0.2), claude, timeout=5)
    choice = result.choices[0]
    assert choice.message.content == "Echo: hello there world lorem ipsum dolor sit"
    assert choice.finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (
        5,
        8,
        False,
    )
    body = last_body(knobs)
    assert body["system"] == "Be brief." and [m["role"] for m in body["messages"]] == ["user"]
    assert (body["max_tokens"], body["temperature"]) == (8, 0.2)

    events, error = await collect(adapter.stream(ask(), claude, timeout=5))
    assert error is None
    assert text_of(events).startswith("Echo: hello there world ")
    assert [(e.kind, e.finish_reason) for e in events[-2:]] == [("finish", "stop"), ("usage", None)]
    usage = events[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 20)
    assert last_body(knobs)["max_tokens"] == 64  # the target's limit: Anthropic requires one


async def test_tool_call_round_trip(claude: ModelTarget, knobs: Any) -> None:
    adapter = get_adapter(claude)
    request = ask("weather in Oslo", tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    first = await adapter.complete(request, claude, timeout=5)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.name == "get_weather"
    assert set(json.loads(call.arguments)) == {"city"}
    assert last_body(knobs)["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}

    events, error = await collect(adapter.stream(request, claude, timeout=5))
    assert error is None
    calls = [e for e in events if e.kind == "tool_call"]
    assert (calls[0].tool_index, calls[0].tool_name) == (0, "get_weather") and calls[0].tool_call_id
    assert json.loads("".join(e.arguments for e in calls)) == json.loads(call.arguments)
    assert [e.finish_reason for e in events if e.kind == "finish"] == ["tool_calls"]

    request.messages += [
        ChatMessage("assistant", None, tool_calls=[call]),
        ChatMessage("tool", "sunny", tool_call_id=call.id),
    ]
    request.tool_choice = None
    final = await adapter.complete(request, claude, timeout=5)
    assert final.choices[0].message.content == "Tool result: sunny"
    sent = last_body(knobs)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][0]["input"] == json.loads(call.arguments)
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": [{"type": "text", "text": "sunny"}],
    }


async def test_json_schema_output(claude: ModelTarget) -> None:
    request = ask(response_format=ResponseFormat("json_schema", "weather", SCHEMA))
    result = await get_adapter(claude).complete(request, claude, timeout=5)
    choice = result.choices[0]
    assert set(json.loads(str(choice.message.content))) == {"city", "days"}
    assert choice.finish_reason == "stop" and choice.message.tool_calls == []

    events, error = await collect(get_adapter(claude).stream(request, claude, timeout=5))
    assert error is None and set(json.loads(text_of(events))) == {"city", "days"}
    assert not any(e.kind == "tool_call" for e in events)
    assert [e.finish_reason for e in events if e.kind == "finish"] == ["stop"]


async def test_unsupported_requests_fail_before_any_call(claude: ModelTarget, knobs: Any) -> None:
    with pytest.raises(UnsupportedFeature):
        await get_adapter(claude).complete(ask(n=2), claude, timeout=5)
    with pytest.raises(UnsupportedFeature):
        await collect(get_adapter(claude).stream(ask(temperature=1.7), claude, timeout=5))
    assert knobs.stats.recent() == []


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [(500, True, "upstream_error"), (529, True, "upstream_overloaded"), (400, False, "upstream_bad_request")],
)
async def test_error_statuses(
    claude: ModelTarget, knobs: Any, status: int, retryable: bool, code: str
) -> None:
    knobs.knobs.update({"provider": "anthropic", "error_status": status, "error_message": "nope"})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(claude).complete(ask(), claude, timeout=5)
    _, streamed = await collect(get_adapter(claude).stream(ask(), claude, timeout=5))
    for error in (caught.value, streamed):
        assert error is not None
        assert (error.status, error.retryable, error.code, error.message) == (status, retryable, code, "nope")


async def test_rate_limit_carries_retry_after(claude: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "anthropic", "error_status": 429, "retry_after": 3})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(claude).complete(ask(), claude, timeout=5)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 3.0)


async def test_image_refused_by_a_text_model(claude: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "anthropic", "vision": False})
    image = ContentPart("image", image_url="https://example.com/cat.png")
    request = ChatRequest(
        model="m", messages=[ChatMessage("user", [ContentPart("text", "what is it"), image])]
    )
    with pytest.raises(ProviderError) as caught:
        await get_adapter(claude).complete(request, claude, timeout=5)
    assert (caught.value.status, caught.value.retryable) == (400, False)
    knobs.knobs.update({"provider": "anthropic", "vision": True})
    result = await get_adapter(claude).complete(request, claude, timeout=5)
    assert result.usage.prompt_tokens == 3 + 85  # the fake bills 85 tokens an image


async def test_disconnect_mid_stream(claude: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "anthropic", "disconnect_after_tokens": 3, "tokens_per_second": 200})
    events, error = await collect(get_adapter(claude).stream(ask(), claude, timeout=5))
    assert text_of(events) == "Echo: hello there "
    assert error is not None and (error.code, error.retryable) == ("upstream_disconnected", True)


async def test_error_event_mid_stream(claude: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "anthropic", "stream_error_after_tokens": 2, "error_status": 529})
    knobs.knobs.update({"provider": "anthropic", "error_rate": 0.0})  # the call itself succeeds
    events, error = await collect(get_adapter(claude).stream(ask(), claude, timeout=5))
    assert text_of(events) == "Echo: hello "
    assert error is not None and (error.code, error.retryable) == ("upstream_overloaded", True)


async def test_timeout_is_honoured(claude: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "anthropic", "ttft_ms": 3000, "latency_ms": 3000})
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await get_adapter(claude).complete(ask(), claude, timeout=0.4)
    assert 0.35 < time.monotonic() - started < 1.0
    started = time.monotonic()
    events, streamed = await collect(get_adapter(claude).stream(ask(), claude, timeout=0.4))
    assert 0.35 < time.monotonic() - started < 1.0 and events == []
    for error in (caught.value, streamed):
        assert error is not None and (error.code, error.retryable) == ("upstream_timeout", True)
