"""The fake upstream, driven by the official `openai` and `anthropic` SDKs in strict mode.

Strict mode (`_strict_response_validation=True`) makes the SDKs validate every answer against
their typed models, so a field we get wrong fails here rather than in a gateway test.
No database: these tests only talk HTTP over loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anthropic
import httpx2
import jsonschema
import openai
import pydantic
import pytest

from routing.fake_upstream import RunningUpstream, start_in_thread
from routing.fake_upstream.generation import value_for_schema

REPO = Path(__file__).resolve().parents[2]
HAIKU = "claude-haiku-4-5"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
TIME_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningUpstream]:
    with start_in_thread() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_upstream(upstream: RunningUpstream) -> None:
    upstream.state.knobs.clear()
    upstream.state.stats.reset()


@pytest.fixture(scope="module")
def oai(upstream: RunningUpstream) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=upstream.openai_base_url, api_key="sk-test", max_retries=0, _strict_response_validation=True
    )


@pytest.fixture(scope="module")
def claude(upstream: RunningUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=upstream.base_url, api_key="sk-ant-test", max_retries=0, _strict_response_validation=True
    )


@pytest.fixture(scope="module")
def raw(upstream: RunningUpstream) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=upstream.base_url, timeout=10) as client:
        yield client


def first_text(message: Any) -> str:
    """Text of an Anthropic message's first block (the SDK types content as a union of all kinds)."""
    block = message.content[0]
    assert block.type == "text"
    return str(block.text)


def user(text: str) -> Any:
    """One user message. Typed Any: the SDKs' TypedDict params reject plain dicts under mypy."""
    return [{"role": "user", "content": text}]


# --- OpenAI ----------------------------------------------------------------------------------


def test_openai_text_reply_and_usage(oai: openai.OpenAI, upstream: RunningUpstream) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *user("Hello there friend")]
    completion = oai.chat.completions.create(model="gpt-4o", messages=messages)

    text = completion.choices[0].message.content or ""
    assert text.startswith("Echo: Hello there friend lorem ipsum")
    assert len(text.split()) == 20
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 20)
    assert completion.usage.total_tokens == 25
    assert upstream.state.count("openai", "gpt-4o", "total") == 1


def test_openai_stream_matches_non_stream_and_reports_usage(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="gpt-4o", messages=user("Stream me"))
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=user("Stream me"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == plain.choices[0].message.content
    assert all(re.fullmatch(r"\S+\s?", delta) for delta in deltas)  # one word per token
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == len(deltas) == 20
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_async_openai_stream(upstream: RunningUpstream) -> None:
    client = openai.AsyncOpenAI(
        base_url=upstream.openai_base_url, api_key="k", max_retries=0, _strict_response_validation=True
    )
    async with client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=user("async hi"), stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text.startswith("Echo: async hi")


def test_openai_max_tokens_stops_with_length(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o", messages=user("a b c d e f"), max_tokens=4)
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Echo: a b c"
    assert completion.usage is not None and completion.usage.completion_tokens == 4

    newer = oai.chat.completions.create(model="gpt-4o", messages=user("x"), max_completion_tokens=2)
    assert newer.choices[0].message.content == "Echo: x"


def test_openai_stop_sequence(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o", messages=user("one two three four"), stop=["three"]
    )
    assert completion.choices[0].message.content == "Echo: one two "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_openai_n_choices_with_logprobs(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("two please"),
        n=2,
        logprobs=True,
        top_logprobs=3,
        seed=7,
        temperature=0.2,
        top_p=0.9,
    )
    assert [choice.index for choice in completion.choices] == [0, 1]
    logprobs = completion.choices[1].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert len(logprobs.content) == 20
    first = logprobs.content[0]
    assert first.token == "Echo: " and first.logprob < 0 and len(first.top_logprobs) == 3
    assert completion.usage is not None and completion.usage.completion_tokens == 40  # both choices billed


def test_openai_tool_call(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("What is the weather in Oslo?"),
        tools=[WEATHER_TOOL, TIME_TOOL],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function" and calls[0].id.startswith("call_")
    arguments = json.loads(calls[0].function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert arguments["city"] == "What is the weather in Oslo?"


def test_openai_parallel_tool_calls_streamed(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("look both up in parallel"),
        tools=[WEATHER_TOOL, TIME_TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {"zone": "look both up in parallel"}

    # The SDK's own accumulator agrees, and parallel_tool_calls=False limits it to one call.
    with oai.chat.completions.stream(
        model="gpt-4o",
        messages=user("in parallel"),
        tools=[WEATHER_TOOL, TIME_TOOL],
        parallel_tool_calls=False,
    ) as helper:
        final = helper.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls or []] == ["get_weather"]


def test_openai_named_tool_choice_and_tool_result(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("time?"),
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert call.type == "function" and call.function.name == "get_time"

    history: Any = [
        *user("time?"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "12:00 in Oslo"},
    ]
    follow_up = oai.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL, TIME_TOOL])
    assert follow_up.choices[0].message.content == "Tool result: 12:00 in Oslo"
    assert follow_up.choices[0].finish_reason == "stop"


class Address(pydantic.BaseModel):
    street: str
    number: int


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]
    address: Address
    status: str | None


def test_openai_structured_output_parses(oai: openai.OpenAI) -> None:
    parsed = oai.chat.completions.parse(model="gpt-4o", messages=user("Ada"), response_format=Person)
    person = parsed.choices[0].message.parsed
    assert person is not None and person.name == "Ada" and person.address.number >= 1

    plain = oai.chat.completions.create(
        model="gpt-4o", messages=user("hi"), response_format={"type": "json_object"}
    )
    assert json.loads(plain.choices[0].message.content or "")["answer"].startswith("Echo: hi")


def test_schema_values_validate() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"sku": {"type": "string", "minLength": 12}},
                "required": ["sku"],
            }
        },
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 2},
            "when": {"type": "string", "format": "date-time"},
            "score": {"type": "number", "exclusiveMinimum": 5, "maximum": 9},
            "kind": {"anyOf": [{"type": "null"}, {"enum": ["a", "b"]}]},
            "flag": {"type": ["null", "boolean"]},
            "fixed": {"const": 3},
        },
        "required": ["items", "when", "score", "kind", "flag", "fixed"],
        "additionalProperties": False,
    }
    value = value_for_schema(schema, "short")
    jsonschema.validate(value, schema)
    assert len(value["items"]) == 2 and value["kind"] == "a"


def test_openai_errors_and_retry_after(oai: openai.OpenAI, upstream: RunningUpstream) -> None:
    upstream.state.knobs.update(
        {"provider": "openai", "model": "gpt-4o", "error_status": 429, "retry_after": 2}
    )
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    # Other models are not affected by a model-specific layer.
    oai.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))

    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert bad.value.param == "messages"
    assert upstream.state.stats.snapshot()["openai"] == {
        "gpt-4o": {"total": 1, "errors": 1, "streamed": 0, "disconnected": 0},
        "gpt-4o-mini": {"total": 2, "errors": 1, "streamed": 0, "disconnected": 0},
    }


def test_fail_next_lets_sdk_retries_succeed(upstream: RunningUpstream) -> None:
    upstream.state.knobs.update(
        {"provider": "openai", "fail_next": 2, "error_status": 503, "retry_after": 0.01}
    )
    client = openai.OpenAI(base_url=upstream.openai_base_url, api_key="k", max_retries=2)
    completion = client.chat.completions.create(model="gpt-4o", messages=user("retry me"))
    assert completion.choices[0].message.content
    assert upstream.state.stats.snapshot()["openai"]["gpt-4o"]["total"] == 3
    assert upstream.state.stats.snapshot()["openai"]["gpt-4o"]["errors"] == 2


def test_error_rate_is_reproducible(raw: httpx2.Client, upstream: RunningUpstream) -> None:
    def outcomes() -> list[int]:
        upstream.state.knobs.clear()
        upstream.state.knobs.update({"error_status": 500, "error_rate": 0.5, "seed": 3})
        body = {"model": "gpt-4o", "messages": user("x")}
        headers = {"Authorization": "Bearer k"}
        return [raw.post("/v1/chat/completions", json=body, headers=headers).status_code for _ in range(16)]

    first = outcomes()
    assert first == outcomes()
    assert {200, 500} == set(first)


def test_disconnect_after_tokens(
    oai: openai.OpenAI, claude: anthropic.Anthropic, upstream: RunningUpstream
) -> None:
    upstream.state.knobs.update({"disconnect_after_tokens": 3})
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(model="gpt-4o", messages=user("bye"), stream=True):
            assert chunk.choices[0].finish_reason is None
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Echo: bye lorem "

    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=user("bye"))

    # The Anthropic SDK lets the transport error through unwrapped (httpx2.RemoteProtocolError).
    events: list[str] = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        for event in claude.messages.create(model=HAIKU, max_tokens=50, messages=user("bye"), stream=True):
            events.append(event.type)
    assert events == ["message_start", "content_block_start", *["content_block_delta"] * 3]
    assert upstream.state.count("openai", "gpt-4o", "disconnected") == 2


def test_latency_ttft_and_pacing(oai: openai.OpenAI, upstream: RunningUpstream) -> None:
    upstream.state.knobs.update(
        {"latency_ms": 150, "ttft_ms": 200, "tokens_per_second": 50, "reply_tokens": 6}
    )
    started = time.perf_counter()
    oai.chat.completions.create(model="gpt-4o", messages=user("slow"))
    assert time.perf_counter() - started >= 0.15

    started = time.perf_counter()
    arrivals = [
        time.perf_counter() - started
        for chunk in oai.chat.completions.create(model="gpt-4o", messages=user("slow"), stream=True)
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(arrivals) == 6
    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= 5 / 50 * 0.9  # five gaps at 50 tokens/s


def test_image_needs_a_vision_model(
    oai: openai.OpenAI, claude: anthropic.Anthropic, upstream: RunningUpstream
) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]
    seen = oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert seen.usage is not None and seen.usage.prompt_tokens == 3 + 85
    with pytest.raises(openai.BadRequestError, match="image_url is only supported"):
        oai.chat.completions.create(model="gpt-3.5-turbo", messages=messages)

    upstream.state.knobs.update({"provider": "anthropic", "vision": False})
    block: Any = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": [block]}])
    assert caught.value.status_code == 400


def test_embeddings(oai: openai.OpenAI, upstream: RunningUpstream) -> None:
    floats = oai.embeddings.create(
        model="text-embedding-3-small",
        input=["the cat sat", "the cat sat down", "stock prices"],
        encoding_format="float",
    )
    vectors = [item.embedding for item in floats.data]
    assert [len(v) for v in vectors] == [384] * 3
    assert floats.usage.prompt_tokens == 3 + 4 + 2

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > 0.8 > cosine(vectors[0], vectors[2])
    # Without encoding_format the SDK asks for base64 and decodes it; strict mode cannot check that
    # (it validates the base64 string against list[float] before decoding), hence a lax client.
    lax = openai.OpenAI(base_url=upstream.openai_base_url, api_key="k", max_retries=0)
    decoded = lax.embeddings.create(model="text-embedding-3-small", input="the cat sat", dimensions=64)
    assert len(decoded.data[0].embedding) == 64


def test_model_lists(oai: openai.OpenAI, claude: anthropic.Anthropic, upstream: RunningUpstream) -> None:
    upstream.state.knobs.update({"provider": "openai", "model": "my-tuned-model", "reply_tokens": 3})
    assert {"gpt-4o", "my-tuned-model"} <= {model.id for model in oai.models.list()}
    assert HAIKU in {model.id for model in claude.models.list()}


def test_openai_in_stream_error(oai: openai.OpenAI, upstream: RunningUpstream) -> None:
    upstream.state.knobs.update({"stream_error_after_tokens": 1, "error_message": "model crashed"})
    stream = oai.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True)
    with pytest.raises(openai.APIError, match="model crashed"):
        list(stream)


def test_openai_compatible_llama_route(upstream: RunningUpstream) -> None:
    client = openai.OpenAI(
        base_url=upstream.base_url + "/llama/v1",
        api_key="none",
        max_retries=0,
        _strict_response_validation=True,
    )
    upstream.state.knobs.update({"provider": "llama", "reply_text": "tiny model here"})
    completion = client.chat.completions.create(model="smollm2", messages=user("x"))
    assert completion.choices[0].message.content == "tiny model here"
    assert upstream.state.stats.snapshot() == {
        "llama": {"smollm2": {"total": 1, "errors": 0, "streamed": 0, "disconnected": 0}}
    }


# --- Anthropic -------------------------------------------------------------------------------


def test_anthropic_message_and_usage(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=HAIKU,
        max_tokens=100,
        system="You are terse.",
        messages=user("Hi Claude"),
        extra_body={"temperature": 0.1, "top_k": 5},  # this SDK version has no sampling keywords
    )
    assert first_text(message).startswith("Echo: Hi Claude")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 20)

    cut = claude.messages.create(model=HAIKU, max_tokens=3, messages=user("Hi Claude"))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3

    stops = ["lorem", "b c"]  # the earliest match wins, not the first listed
    stopped = claude.messages.create(model=HAIKU, max_tokens=50, messages=user("a b c"), stop_sequences=stops)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "b c"
    assert first_text(stopped) == "Echo: a "

    counted = claude.messages.count_tokens(model=HAIKU, system="You are terse.", messages=user("Hi Claude"))
    assert counted.input_tokens == 5


def test_anthropic_stream_event_sequence(claude: anthropic.Anthropic, raw: httpx2.Client) -> None:
    events = list(claude.messages.create(model=HAIKU, max_tokens=5, messages=user("stream it"), stream=True))
    types = [event.type for event in events]
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.input_tokens == 2
    assert delta.type == "message_delta" and delta.usage.output_tokens == 5
    assert delta.delta.stop_reason == "max_tokens"

    # The SDK hides pings; on the wire one follows the first content_block_start.
    body = {"model": HAIKU, "max_tokens": 5, "messages": user("x"), "stream": True}
    wire = raw.post("/v1/messages", json=body, headers={"x-api-key": "k"}).text
    names = re.findall(r"^event: (\w+)", wire, flags=re.MULTILINE)
    assert names[:3] == ["message_start", "content_block_start", "ping"]

    with claude.messages.stream(model=HAIKU, max_tokens=50, messages=user("helper")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == first_text(final)
    assert final.usage.output_tokens == 20


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    tools: Any = [
        {"name": fn["function"]["name"], "input_schema": fn["function"]["parameters"]}
        for fn in (WEATHER_TOOL, TIME_TOOL)
    ]
    message = claude.messages.create(
        model=HAIKU, max_tokens=200, messages=user("weather in Rome"), tools=tools
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input["city"] == "weather in Rome"

    with claude.messages.stream(
        model=HAIKU,
        max_tokens=200,
        messages=user("both in parallel"),
        tools=tools,
    ) as stream:
        final = stream.get_final_message()
    assert [b.name for b in final.content if b.type == "tool_use"] == ["get_weather", "get_time"]
    second = final.content[1]
    assert second.type == "tool_use" and second.input == {"zone": "both in parallel"}

    history: Any = [
        *user("weather in Rome"),
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny 25C"}],
        },
    ]
    result = claude.messages.create(model=HAIKU, max_tokens=200, tools=tools, messages=history)
    assert first_text(result) == "Tool result: sunny 25C"
    assert result.stop_reason == "end_turn"


def test_anthropic_structured_output(claude: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    message = claude.messages.create(
        model=HAIKU,
        max_tokens=200,
        messages=user("Oslo"),
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    answer = json.loads(first_text(message))
    jsonschema.validate(answer, schema)
    assert answer["city"] == "Oslo"


def test_anthropic_errors(claude: anthropic.Anthropic, raw: httpx2.Client, upstream: RunningUpstream) -> None:
    missing = raw.post(
        "/v1/messages", json={"model": HAIKU, "messages": user("x")}, headers={"x-api-key": "k"}
    )
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"
    assert missing.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    anonymous = raw.post("/v1/messages", json={"model": HAIKU, "max_tokens": 5, "messages": user("x")})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"

    upstream.state.knobs.update({"provider": "anthropic", "error_status": 529})
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model=HAIKU, max_tokens=5, messages=user("x"))
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": ANY,
    }

    upstream.state.knobs.update(
        {"provider": "anthropic", "error_status": None, "stream_error_after_tokens": 2}
    )
    deltas = 0
    with pytest.raises(anthropic.APIStatusError) as in_stream:
        for event in claude.messages.create(model=HAIKU, max_tokens=50, messages=user("x"), stream=True):
            deltas += event.type == "content_block_delta"
    assert deltas == 2
    assert in_stream.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# --- Ollama ----------------------------------------------------------------------------------


def test_ollama_chat(raw: httpx2.Client, upstream: RunningUpstream) -> None:
    body = {
        "model": "llama3.2",
        "messages": user("hello llama"),
        "options": {"num_predict": 4, "temperature": 0},
    }
    lines = [json.loads(line) for line in raw.post("/api/chat", json=body).text.splitlines()]
    assert [line["done"] for line in lines] == [False] * 4 + [True]
    assert "".join(line["message"]["content"] for line in lines) == "Echo: hello llama lorem"
    assert lines[-1]["done_reason"] == "length"
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (2, 4)

    single = raw.post("/api/chat", json={**body, "stream": False, "options": {}, "format": "json"}).json()
    assert single["done"] is True and single["done_reason"] == "stop"
    assert json.loads(single["message"]["content"])["answer"].startswith("Echo: hello llama")

    tools = [WEATHER_TOOL]
    called = raw.post(
        "/api/chat", json={"model": "llama3.2", "messages": user("Paris"), "tools": tools, "stream": False}
    )
    call = called.json()["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and call["arguments"]["city"] == "Paris"

    refused = raw.post(
        "/api/chat", json={"model": "llama3.2", "messages": [{**user("see")[0], "images": ["aGk="]}]}
    )
    assert refused.status_code == 400 and "error" in refused.json()
    assert raw.post("/api/chat", json={"messages": []}).json() == {"error": "model is required"}
    assert "llama3.2:latest" in {m["name"] for m in raw.get("/api/tags").json()["models"]}
    assert upstream.state.count("ollama", "llama3.2", "streamed") == 2


# --- control plane and process entry points --------------------------------------------------


def test_control_endpoints(raw: httpx2.Client) -> None:
    layers = [
        {"provider": "openai", "model": "gpt-4*", "reply_tokens": 7},
        {"model": "gpt-4o", "reply_tokens": 3},
    ]
    assert raw.put("/_control/knobs", json=layers).status_code == 200
    merged = raw.get("/_control/knobs", params={"provider": "openai", "model": "gpt-4o"}).json()["knobs"]
    assert merged["reply_tokens"] == 3  # the exact model beats the provider's glob
    assert (
        raw.get("/_control/knobs", params={"provider": "openai", "model": "gpt-4.1"}).json()["knobs"][
            "reply_tokens"
        ]
        == 7
    )

    bad = raw.put("/_control/knobs", json={"reply_token": 3})
    assert bad.status_code == 400 and "unknown knob" in bad.json()["error"]["message"]

    headers = {"Authorization": "Bearer k"}
    raw.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": user("hi")}, headers=headers)
    assert raw.get("/_control/stats").json()["openai"]["gpt-4o"]["total"] == 1
    assert raw.get("/_control/requests", params={"limit": 1}).json()[0]["body"]["messages"] == user("hi")
    raw.post("/_control/reset")
    assert raw.get("/_control/stats").json() == {}
    assert raw.delete("/_control/knobs").json() == {"layers": []}


def _start_process(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if match is None:
        process.kill()
        pytest.fail(f"no URL announced: {line!r} {process.communicate(timeout=5)[1][-2000:]}")
    return process, match.group(0)


@pytest.mark.parametrize(
    "entry", [["manage.py", "fake_upstream"], ["-m", "routing.fake_upstream"]], ids=["manage.py", "python-m"]
)
def test_runs_as_a_process(entry: list[str]) -> None:
    knobs = json.dumps({"provider": "anthropic", "reply_text": "from a process"})
    process, url = _start_process([*entry, "--port", "0", "--knobs", knobs], env={**os.environ})
    try:
        client = anthropic.Anthropic(
            base_url=url, api_key="k", max_retries=0, _strict_response_validation=True
        )
        message = client.messages.create(model=HAIKU, max_tokens=10, messages=user("x"))
        assert first_text(message) == "from a process"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
