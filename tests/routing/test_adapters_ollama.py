"""The Ollama adapter (native /api/chat) against the fake upstream, over real HTTP. No database."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from routing.providers import close_adapters, get_adapter
from routing.providers.ollama_adapter import OllamaAdapter
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

MODEL = "llama3.2:latest"
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
def llama(upstream: Any, knobs: Any) -> ModelTarget:
    return ModelTarget(
        name="llama", provider="fake-ollama", kind="ollama", upstream_model=MODEL, base_url=upstream.base_url
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


async def test_text_and_usage(llama: ModelTarget, knobs: Any) -> None:
    adapter = get_adapter(llama)
    assert isinstance(adapter, OllamaAdapter)
    result = await adapter.complete(ask(max_tokens=8, top_k=3), llama, timeout=5)
    choice = result.choices[0]
    assert choice.message.content == "Echo: hello there world lorem ipsum dolor sit"
    assert choice.finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (
        5,
        8,
        False,
    )
    body = last_body(knobs)
    assert body["stream"] is False and body["options"] == {"top_k": 3, "num_predict": 8}

    events, error = await collect(adapter.stream(ask(max_tokens=8), llama, timeout=5))
    assert error is None and text_of(events) == choice.message.content
    assert [(e.kind, e.finish_reason) for e in events[-2:]] == [("finish", "length"), ("usage", None)]
    usage = events[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 8)


async def test_tool_call_round_trip(llama: ModelTarget, knobs: Any) -> None:
    adapter = get_adapter(llama)
    request = ask("weather in Oslo", tools=[WEATHER])
    first = await adapter.complete(request, llama, timeout=5)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.name, set(json.loads(call.arguments))) == ("call_0", "get_weather", {"city"})

    events, error = await collect(adapter.stream(request, llama, timeout=5))
    assert error is None
    calls = [e for e in events if e.kind == "tool_call"]
    assert [(e.tool_index, e.tool_call_id, e.tool_name) for e in calls] == [(0, "call_0", "get_weather")]
    assert json.loads(calls[0].arguments) == json.loads(call.arguments)
    assert [e.finish_reason for e in events if e.kind == "finish"] == ["tool_calls"]

    request.messages += [
        ChatMessage("assistant", None, tool_calls=[call]),
        ChatMessage("tool", "sunny", tool_call_id=call.id),
    ]
    final = await adapter.complete(request, llama, timeout=5)
    assert final.choices[0].message.content == "Tool result: sunny"
    sent = last_body(knobs)["messages"]
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == json.loads(call.arguments)
    assert sent[3] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


async def test_json_schema_output(llama: ModelTarget, knobs: Any) -> None:
    request = ask(response_format=ResponseFormat("json_schema", "weather", SCHEMA))
    result = await get_adapter(llama).complete(request, llama, timeout=5)
    assert set(json.loads(str(result.choices[0].message.content))) == {"city", "days"}
    assert last_body(knobs)["format"] == SCHEMA
    events, _ = await collect(get_adapter(llama).stream(request, llama, timeout=5))
    assert set(json.loads(text_of(events))) == {"city", "days"}


async def test_images_go_as_base64(llama: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "ollama", "vision": True})
    image = ContentPart("image", image_url="data:image/png;base64,iVBORw0KGgo=")
    request = ChatRequest(
        model="m", messages=[ChatMessage("user", [ContentPart("text", "what is it"), image])]
    )
    await get_adapter(llama).complete(request, llama, timeout=5)
    assert last_body(knobs)["messages"][0]["images"] == ["iVBORw0KGgo="]
    knobs.knobs.update({"provider": "ollama", "vision": False})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(llama).complete(request, llama, timeout=5)
    assert (caught.value.status, caught.value.retryable, caught.value.code) == (
        400,
        False,
        "upstream_bad_request",
    )


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [(500, True, "upstream_error"), (503, True, "upstream_overloaded"), (404, False, "upstream_not_found")],
)
async def test_error_statuses(
    llama: ModelTarget, knobs: Any, status: int, retryable: bool, code: str
) -> None:
    knobs.knobs.update({"provider": "ollama", "error_status": status, "error_message": "nope"})
    with pytest.raises(ProviderError) as caught:
        await get_adapter(llama).complete(ask(), llama, timeout=5)
    _, streamed = await collect(get_adapter(llama).stream(ask(), llama, timeout=5))
    for error in (caught.value, streamed):
        assert error is not None
        assert (error.status, error.retryable, error.code, error.message) == (status, retryable, code, "nope")


async def test_rate_limit_carries_retry_after(llama: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "ollama", "error_status": 429, "retry_after": 0.25})
    _, error = await collect(get_adapter(llama).stream(ask(), llama, timeout=5))
    assert error is not None and (error.status, error.retryable, error.retry_after) == (429, True, 0.25)


async def test_disconnect_mid_stream(llama: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "ollama", "disconnect_after_tokens": 3, "tokens_per_second": 200})
    events, error = await collect(get_adapter(llama).stream(ask(), llama, timeout=5))
    assert text_of(events) == "Echo: hello there "
    assert error is not None and (error.code, error.retryable) == ("upstream_disconnected", True)


async def test_error_line_mid_stream(llama: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update(
        {"provider": "ollama", "stream_error_after_tokens": 2, "error_message": "out of memory"}
    )
    events, error = await collect(get_adapter(llama).stream(ask(), llama, timeout=5))
    assert text_of(events) == "Echo: hello "
    assert error is not None and error.retryable and error.message == "out of memory"


async def test_timeout_is_honoured(llama: ModelTarget, knobs: Any) -> None:
    knobs.knobs.update({"provider": "ollama", "ttft_ms": 3000, "latency_ms": 3000})
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await get_adapter(llama).complete(ask(), llama, timeout=0.4)
    assert 0.35 < time.monotonic() - started < 1.0
    started = time.monotonic()
    events, streamed = await collect(get_adapter(llama).stream(ask(), llama, timeout=0.4))
    assert 0.35 < time.monotonic() - started < 1.0 and events == []
    for error in (caught.value, streamed):
        assert error is not None and (error.code, error.retryable) == ("upstream_timeout", True)


async def test_connection_refused_is_retryable(knobs: Any) -> None:
    nowhere = ModelTarget(
        name="x", provider="gone", kind="ollama", upstream_model=MODEL, base_url="http://127.0.0.1:9"
    )
    with pytest.raises(ProviderError) as caught:
        await get_adapter(nowhere).complete(ask(), nowhere, timeout=2)
    assert (caught.value.code, caught.value.retryable) == ("upstream_unavailable", True)
