"""The OpenAI adapter (kinds `openai` and `openai_compatible`) against the fake upstream, over
real HTTP. No database."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from routing.providers import close_adapters, get_adapter
from routing.providers.openai_adapter import OpenAIAdapter
from routing.types import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ModelTarget,
    ProviderError,
    ResponseFormat,
    StreamEvent,
    ToolSpec,
)

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
def gpt(upstream: Any, knobs: Any) -> ModelTarget:
    return ModelTarget(
        name="gpt-4o",
        provider="fake-openai",
        kind="openai",
        upstream_model="gpt-4o",
        base_url=upstream.openai_base_url,
        api_key="sk-test",
    )


@pytest.fixture
def llama(upstream: Any, knobs: Any) -> ModelTarget:
    """An OpenAI-compatible server: the fake's /llama/v1 routes."""
    return ModelTarget(
        name="smol",
        provider="fake-llama",
        kind="openai_compatible",
        upstream_model="smollm2",
        base_url=upstream.base_url + "/llama/v1",
    )


def ask(text: str = "hello there world", **options: Any) -> ChatRequest:
    return ChatRequest(
        model="m", messages=[ChatMessage("system", "Be brief."), ChatMessage("user", text)], **options
    )


async def collect(events: AsyncIterator[StreamEvent]) -> tuple[list[StreamEvent], ProviderError | None]:
    """Every event received, and the error that ended the stream if one did."""
    received: list[StreamEvent] = []
    try:
        async for event in events:
            received.append(event)
    except ProviderError as exc:
        return received, exc
    return received, None


def text_of(events: list[StreamEvent], choice: int = 0) -> str:
    return "".join(e.text for e in events if e.kind == "text" and e.choice == choice)


def last_body(knobs: Any) -> dict[str, Any]:
    return dict(knobs.stats.recent(1)[0]["body"])


async def test_text_and_usage(gpt: ModelTarget, knobs: Any) -> None:
    adapter = get_adapter(gpt)
    result = await adapter.complete(ask(max_tokens=8), gpt, timeout=5)
    choice = result.choices[0]
    assert choice.message.content == "Echo: hello there world lorem ipsum dolor sit"
    assert choice.finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (
        5,
        8,
        False,
    )
    assert last_body(knobs)["max_completion_tokens"] == 8

    events, error = await collect(adapter.stream(ask(max_tokens=8), gpt, timeout=5))
    assert error is None
    assert text_of(events) == choice.message.content
    assert [e.kind for e in events[-2:]] == ["finish", "usage"]
    usage = events[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (
        5,
        8,
        False,
    )
    assert last_body(knobs)["stream_options"] == {"include_usage": True}


async def test_several_choices_and_logprobs(gpt: ModelTarget) -> None:
    request = ask(n=2, logprobs=True, top_logprobs=2, max_tokens=3)
    result = await get_adapter(gpt).complete(request, gpt, timeout=5)
    assert [c.index for c in result.choices] == [0, 1]
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and len(logprobs) == 3 and len(logprobs[0].top) == 2
    assert result.usage.completion_tokens == 6  # both choices are billed

    events, error = await collect(get_adapter(gpt).stream(request, gpt, timeout=5))
    assert error is None
    assert text_of(events, 0) == text_of(events, 1) == result.choices[0].message.content
    # Logprobs ride on the text event they describe.
    assert sum(e.kind == "text" and e.logprobs is not None for e in events) == 6
    assert sorted(e.choice for e in events if e.kind == "finish") == [0, 1]


async def test_tool_call_round_trip(gpt: ModelTarget) -> None:
    adapter = get_adapter(gpt)
    request = ask("weather in Oslo", tools=[WEATHER])
    first = await adapter.complete(request, gpt, timeout=5)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.name == "get_weather"
    assert set(json.loads(call.arguments)) == {"city"}

    events, error = await collect(adapter.stream(request, gpt, timeout=5))
    assert error is None
    calls = [e for e in events if e.kind == "tool_call"]
    assert calls[0].tool_name == "get_weather" and calls[0].tool_call_id
    assert json.loads("".join(e.arguments for e in calls)) == json.loads(call.arguments)

    request.messages += [
        ChatMessage("assistant", None, tool_calls=[call]),
        ChatMessage("tool", "sunny", tool_call_id=call.id),
    ]
    final = await adapter.complete(request, gpt, timeout=5)
    assert final.choices[0].message.content == "Tool result: sunny"
    assert final.choices[0].finish_reason == "stop"


async def test_json_schema_output(gpt: ModelTarget) -> None:
    request = ask(response_format=ResponseFormat("json_schema", "weather", SCHEMA, strict=True))
    result = await get_adapter(gpt).complete(request, gpt, timeout=5)
    assert set(json.loads(str(result.choices[0].message.content))) == {"city", "days"}
    events, _ = await collect(get_adapter(gpt).stream(request, gpt, timeout=5))
    assert set(json.loads(text_of(events))) == {"city", "days"}


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [
        (500, True, "upstream_error"),
        (503, True, "upstream_overloaded"),
        (400, False, "upstream_bad_request"),
        (401, False, "upstream_auth"),
    ],
)
async def test_error_statuses(gpt: ModelTarget, knobs: Any, status: int, retryable: bool, code: str) -> None:
    knobs.knobs.update({"provider": "openai", "error_status": status, "error_message": "nope"})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(gpt).complete(ask(), gpt, timeout=5)
    events, streamed = await collect(get_adapter(gpt).stream(ask(), gpt, timeout=5))
    assert events == []
    for error in (caught.value, streamed):
        assert error is not None
        assert (error.status, error.retryable, error.code, error.provider) == (
            status,
            retryable,
            code,
            "fake-openai",
        )
        assert error.message == "nope"


async def test_rate_limit_carries_retry_after(gpt: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "error_status": 429, "retry_after": 2.5})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(gpt).complete(ask(), gpt, timeout=5)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 2.5)


async def test_image_refused_by_a_text_model(gpt: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "vision": False})
    image = ContentPart("image", image_url="data:image/png;base64,iVBORw0KGgo=")
    request = ChatRequest(
        model="m", messages=[ChatMessage("user", [ContentPart("text", "what is it"), image])]
    )
    with pytest.raises(ProviderError) as caught:
        await get_adapter(gpt).complete(request, gpt, timeout=5)
    assert (caught.value.status, caught.value.retryable) == (400, False)


async def test_disconnect_mid_stream(gpt: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "disconnect_after_tokens": 3, "tokens_per_second": 200})
    events, error = await collect(get_adapter(gpt).stream(ask(), gpt, timeout=5))
    assert text_of(events) == "Echo: hello there "  # what arrived is kept
    assert error is not None and (error.code, error.retryable) == ("upstream_disconnected", True)
    # Without pacing the cut lands inside one read: still a disconnect, not an empty answer.
    knobs.knobs.update({"provider": "openai", "tokens_per_second": None})
    events, error = await collect(get_adapter(gpt).stream(ask(), gpt, timeout=5))
    assert error is not None and error.code == "upstream_disconnected"
    with pytest.raises(ProviderError) as caught:
        await get_adapter(gpt).complete(ask(), gpt, timeout=5)
    assert caught.value.retryable


async def test_error_event_mid_stream(gpt: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "stream_error_after_tokens": 2, "error_message": "engine died"})
    events, error = await collect(get_adapter(gpt).stream(ask(), gpt, timeout=5))
    assert text_of(events) == "Echo: hello "
    assert error is not None and error.retryable and error.message == "engine died"


async def test_timeout_is_honoured(gpt: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "ttft_ms": 3000, "latency_ms": 3000})
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await get_adapter(gpt).complete(ask(), gpt, timeout=0.4)
    assert 0.35 < time.monotonic() - started < 1.0
    started = time.monotonic()
    events, streamed = await collect(get_adapter(gpt).stream(ask(), gpt, timeout=0.4))
    assert 0.35 < time.monotonic() - started < 1.0 and events == []
    for error in (caught.value, streamed):
        assert error is not None and (error.code, error.retryable) == ("upstream_timeout", True)


async def test_deadline_covers_a_slow_stream(gpt: ModelTarget, knobs: Any) -> None:
    """The timeout is the whole request's: tokens trickling in do not extend it."""
    knobs.knobs.update({"provider": "openai", "tokens_per_second": 10})
    started = time.monotonic()
    events, error = await collect(get_adapter(gpt).stream(ask(), gpt, timeout=0.5))
    assert time.monotonic() - started < 1.0
    assert error is not None and error.code == "upstream_timeout" and text_of(events)


async def test_openai_compatible_server(llama: ModelTarget, knobs: Any) -> None:
    adapter = get_adapter(llama)
    result = await adapter.complete(ask(max_tokens=4, top_k=10), llama, timeout=5)
    assert result.choices[0].message.content == "Echo: hello there world"
    body = last_body(knobs)
    assert (body["max_tokens"], body["top_k"]) == (4, 10) and "max_completion_tokens" not in body
    events, error = await collect(adapter.stream(ask(max_tokens=4), llama, timeout=5))
    assert error is None and events[-1].usage is not None and not events[-1].usage.estimated


async def test_server_without_stream_options_gets_estimated_usage(llama: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update(
        {
            "provider": "llama",
            "error_status": 400,
            "fail_next": 1,
            "error_message": "Unrecognized argument: stream_options",
        }
    )
    adapter = get_adapter(llama)
    for _ in range(2):  # asked again without it, and remembered: the second stream needs one call
        events, error = await collect(adapter.stream(ask(max_tokens=4), llama, timeout=5))
        assert error is None and text_of(events) == "Echo: hello there world"
        usage = events[-1].usage
        assert usage is not None and usage.estimated and usage.completion_tokens > 0
        assert "stream_options" not in last_body(knobs)
    assert knobs.count("llama", "smollm2", "total") == 3


async def test_adapters_are_shared_per_endpoint_and_key(gpt: ModelTarget, llama: ModelTarget) -> None:
    adapter = get_adapter(gpt)
    assert get_adapter(replace(gpt, name="other", provider="other")) is adapter
    assert get_adapter(replace(gpt, api_key="sk-other")) is not adapter
    assert get_adapter(llama) is not adapter and isinstance(get_adapter(llama), OpenAIAdapter)
    await close_adapters()
    assert get_adapter(gpt) is not adapter  # closed adapters are forgotten
