"""Conformance of `/v1/chat/completions` and `/v1/messages` with the official SDKs, end to end.

The real server (daphne) and the fake upstream, driven by the `openai` and `anthropic` SDKs in
strict mode (`_strict_response_validation=True`: every answer must parse as the SDK's typed
models). Each provider protocol is reached through the test world's catalog: `gpt-4o-mini`
(OpenAI), `claude-3-5-haiku` / `claude-3-5-sonnet` (Anthropic), `llama-3.1-8b` (Ollama) and
`smollm2-135m` (an OpenAI-compatible Llama server). The fake's rules make answers predictable:
after a tool result it replies "Tool result: <the result>", and tool arguments follow the schema.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.chat.compat_fixtures import (
    ANSWER_SCHEMA,
    PIXEL,
    TIME,
    TIME_PARAMS,
    TOOL_RESULT,
    WEATHER,
    WEATHER_PARAMS,
)
from tests.conftest import GatewayServer

pytestmark = pytest.mark.django_db

OPENAI_MODELS = ["gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b", "smollm2-135m"]


@pytest.fixture
def oai(gateway_server: GatewayServer, live_keys: dict[str, str]) -> openai.OpenAI:
    # No gateway cache: each call must reach a model (the cache has its own test below).
    return openai.OpenAI(
        base_url=gateway_server.url + "/v1",
        api_key=live_keys["acme"],
        max_retries=0,
        timeout=30,
        default_headers={"Cache-Control": "no-cache"},
        _strict_response_validation=True,
    )


@pytest.fixture
def claude(gateway_server: GatewayServer, live_keys: dict[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway_server.url,
        api_key=live_keys["acme"],
        max_retries=0,
        timeout=30,
        default_headers={"Cache-Control": "no-cache"},
        _strict_response_validation=True,
    )


def _upstream_bodies(knobs: Any) -> list[dict[str, Any]]:
    return [entry["body"] for entry in knobs.stats.recent()]


# --- the agent loop through /v1/chat/completions ----------------------------------------------


def _reassemble(chunks: list[Any]) -> tuple[str, list[dict[str, str]], str | None]:
    """(text, tool calls, finish_reason) of choice 0 from streamed chunks, as SDK users do."""
    text, calls, finish = "", dict[int, dict[str, str]](), None
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                if call.id:
                    assert not slot["id"], "a tool call's id comes once, in its first delta"
                    slot["id"] = call.id
                if call.function and call.function.name:
                    slot["name"] += call.function.name
                if call.function and call.function.arguments:
                    slot["arguments"] += call.function.arguments
            finish = choice.finish_reason or finish
    return text, [calls[i] for i in sorted(calls)], finish


def _ask(
    oai: openai.OpenAI, stream: bool, **params: Any
) -> tuple[str, list[dict[str, str]], str | None, Any]:
    """One call, streamed or not: (text, tool calls, finish_reason, raw response)."""
    if not stream:
        raw = oai.chat.completions.with_raw_response.create(**params)
        completion = raw.parse()
        message = completion.choices[0].message
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in message.tool_calls or []
            if c.type == "function"
        ]
        return message.content or "", calls, completion.choices[0].finish_reason, raw
    raw = oai.chat.completions.with_raw_response.create(**params, stream=True)
    chunks = list(raw.parse())
    assert len({c.id for c in chunks}) == 1, "one id for every chunk"
    text, calls, finish = _reassemble(chunks)
    return text, calls, finish, raw


def _agent_loop(
    oai: openai.OpenAI, model: str, stream: bool, between: Callable[[], None] | None = None
) -> tuple[Any, Any]:
    """Call with tools, answer the tool call, get the final text; returns both raw responses.
    `between` runs after the first call (to break a provider half-way through the loop)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    text, calls, finish, first = _ask(oai, stream, model=model, messages=messages, tools=[WEATHER])
    assert finish == "tool_calls", (model, text, calls)
    [call] = calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(json.loads(call["arguments"]), WEATHER_PARAMS)
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT})
    if between is not None:
        between()
    text, calls, finish, final = _ask(oai, stream, model=model, messages=messages, tools=[WEATHER])
    assert (text, calls, finish) == (f"Tool result: {TOOL_RESULT}", [], "stop"), model
    return first, final


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_agent_loop_through_every_protocol(
    oai: openai.OpenAI, knobs: Any, model: str, stream: bool
) -> None:
    first, final = _agent_loop(oai, model, stream)
    assert first.headers["x-gateway-model"] == final.headers["x-gateway-model"] == model
    # The upstream saw the tool result tied to the call it answers, in its own protocol.
    last = _upstream_bodies(knobs)[-1]
    if model.startswith("claude"):
        [assistant, user] = last["messages"][-2:]
        [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert user["content"][0]["type"] == "tool_result"
        assert user["content"][0]["tool_use_id"] == tool_use["id"]
        assert last["system"] == "You are a weather bot."
    elif model.startswith("llama"):
        assert last["messages"][-1] == {"role": "tool", "content": TOOL_RESULT, "tool_name": "get_weather"}
        assert isinstance(last["messages"][-2]["tool_calls"][0]["function"]["arguments"], dict)
    else:
        call_id = last["messages"][-2]["tool_calls"][0]["id"]
        assert last["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}


def test_agent_loop_survives_a_fallback_from_openai_to_anthropic(oai: openai.OpenAI, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "error_status": 503})
    for stream in (False, True):
        first, final = _agent_loop(oai, "gpt-4o-mini", stream)
        for raw in (first, final):
            assert raw.headers["x-gateway-model"] == "claude-3-5-haiku"
            route = raw.headers["x-gateway-route"]
            assert "gpt-4o-mini=" in route and route.endswith("claude-3-5-haiku=ok"), route
    assert knobs.count("anthropic", "claude-3-5-haiku-latest", "total") == 4


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("model", "protocol"), [("gpt-4o-mini", "openai"), ("llama-3.1-8b", "ollama")])
def test_agent_loop_switches_protocol_half_way(
    oai: openai.OpenAI, knobs: Any, model: str, protocol: str, stream: bool
) -> None:
    """The tool call comes from one protocol, its result goes to another: the call id and
    arguments made by OpenAI or Ollama reach Anthropic as a tool_use / tool_result pair."""

    def break_primary() -> None:
        knobs.knobs.update({"provider": protocol, "error_status": 503})

    first, final = _agent_loop(oai, model, stream, between=break_primary)
    assert first.headers["x-gateway-model"] == model and "x-gateway-route" in first.headers
    assert final.headers["x-gateway-model"] == "claude-3-5-haiku"
    assert final.headers["x-gateway-route"].startswith(f"{model}=")
    assert final.headers["x-gateway-route"].endswith("claude-3-5-haiku=ok")
    sent = _upstream_bodies(knobs)[-1]
    [assistant, user] = sent["messages"][-2:]
    [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert tool_use["name"] == "get_weather"
    jsonschema.validate(tool_use["input"], WEATHER_PARAMS)
    assert user["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": tool_use["id"],
            "content": [{"type": "text", "text": TOOL_RESULT}],
        }
    ]


def _anthropic_agent_loop(claude: anthropic.Anthropic, model: str, stream: bool) -> list[Any]:
    tools: list[Any] = [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER_PARAMS}
    ]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    raws: list[Any] = []

    def ask() -> Any:
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": 200,
            "system": "You are a weather bot.",
            "messages": messages,
            "tools": tools,
        }
        if not stream:
            raw = claude.messages.with_raw_response.create(**params)
            raws.append(raw)
            return raw.parse()
        with claude.messages.stream(**params) as events:
            raws.append(events.response)
            for _ in events:
                pass
            return events.get_final_message()

    message = ask()
    assert message.stop_reason == "tool_use", message
    [tool_use] = [b for b in message.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather" and tool_use.id
    jsonschema.validate(tool_use.input, WEATHER_PARAMS)
    messages.append({"role": "assistant", "content": [b.model_dump() for b in message.content]})
    messages.append(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_use.id,
                    "content": [{"type": "text", "text": TOOL_RESULT}],
                }
            ],
        }
    )
    final = ask()
    assert final.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [
        ("text", f"Tool result: {TOOL_RESULT}")
    ]
    assert final.usage.input_tokens > 0 and final.usage.output_tokens == 6
    return raws


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini", "llama-3.1-8b"])
def test_anthropic_agent_loop_through_every_protocol(
    claude: anthropic.Anthropic, knobs: Any, model: str, stream: bool
) -> None:
    _anthropic_agent_loop(claude, model, stream)
    last = _upstream_bodies(knobs)[-1]
    if model == "gpt-4o-mini":
        # An Anthropic-shaped conversation reached an OpenAI model as OpenAI's shape.
        assert last["messages"][0] == {"role": "system", "content": "You are a weather bot."}
        call = last["messages"][-2]["tool_calls"][0]
        assert last["messages"][-1] == {"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT}
        assert last["tools"][0]["function"]["name"] == "get_weather"


def test_anthropic_agent_loop_survives_a_fallback_to_anthropic(
    claude: anthropic.Anthropic, knobs: Any
) -> None:
    knobs.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "error_status": 500})
    raws = _anthropic_agent_loop(claude, "gpt-4o-mini", stream=False)
    raws += _anthropic_agent_loop(claude, "gpt-4o-mini", stream=True)
    assert len(raws) == 4
    for raw in raws:
        assert raw.headers["x-gateway-model"] == "claude-3-5-haiku"
        assert raw.headers["x-gateway-route"].endswith("claude-3-5-haiku=ok")


def test_anthropic_tool_result_with_an_image_and_is_error(claude: anthropic.Anthropic, knobs: Any) -> None:
    """A screenshot tool's result keeps its image and its error flag on the way to Anthropic; an
    OpenAI model, whose tool messages take text only, refuses it clearly."""
    messages: Any = [
        {"role": "user", "content": "Take a screenshot"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "partial capture"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                        },
                    ],
                }
            ],
        },
    ]
    tools: Any = [{"name": "shot", "input_schema": {"type": "object", "properties": {}}}]
    message = claude.messages.create(model="claude-3-5-sonnet", max_tokens=50, messages=messages, tools=tools)
    assert message.content[0].type == "text" and message.content[0].text == "Tool result: partial capture"
    [result] = _upstream_bodies(knobs)[-1]["messages"][-1]["content"]
    assert result == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "is_error": True,
        "content": [
            {"type": "text", "text": "partial capture"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        ],
    }
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="gpt-4o-mini", max_tokens=50, messages=messages, tools=tools)
    assert "gpt-4o-mini" in refused.value.message and "image" in refused.value.message


# --- tool_choice and parallel calls ------------------------------------------------------------


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_tool_choice_variants(oai: openai.OpenAI, knobs: Any, model: str) -> None:
    base: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Weather or time in parallel please"}],
        "tools": [WEATHER, TIME],
    }
    text, calls, finish, _ = _ask(oai, False, **base, tool_choice="none")
    assert calls == [] and finish == "stop" and text.startswith("Echo:")
    _, calls, finish, _ = _ask(oai, False, **base, tool_choice="required", parallel_tool_calls=False)
    assert finish == "tool_calls" and len(calls) == 1
    for stream in (False, True):
        named = {"type": "function", "function": {"name": "get_time"}}
        _, calls, finish, _ = _ask(oai, stream, **base, tool_choice=named)
        assert finish == "tool_calls" and [c["name"] for c in calls] == ["get_time"]
        jsonschema.validate(json.loads(calls[0]["arguments"]), TIME_PARAMS)
    # "parallel" makes the fake call both tools when the request allows it.
    for stream in (False, True):
        _, calls, finish, _ = _ask(oai, stream, **base)
        assert finish == "tool_calls" and [c["name"] for c in calls] == ["get_weather", "get_time"]
        assert len({c["id"] for c in calls}) == 2


def test_parallel_tool_results_go_back_together(oai: openai.OpenAI, knobs: Any) -> None:
    """Two calls answered by two tool messages, to Anthropic: one user turn of two tool_results."""
    messages: list[Any] = [{"role": "user", "content": "Weather and time in parallel please"}]
    completion = oai.chat.completions.create(
        model="claude-3-5-haiku", messages=messages, tools=[WEATHER, TIME]
    )
    calls = completion.choices[0].message.tool_calls or []
    assert len(calls) == 2
    messages.append(completion.choices[0].message.model_dump(exclude_none=True))
    for call, result in zip(calls, ("sunny", "noon"), strict=True):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    final = oai.chat.completions.create(model="claude-3-5-haiku", messages=messages, tools=[WEATHER, TIME])
    assert final.choices[0].message.content == "Tool result: sunny noon"
    turn = _upstream_bodies(knobs)[-1]["messages"][-1]
    assert [(b["type"], b["tool_use_id"]) for b in turn["content"]] == [("tool_result", c.id) for c in calls]


@pytest.mark.parametrize(
    ("tool_choice", "sent_choice", "sent_parallel", "called"),
    [
        ({"type": "none"}, "none", None, []),
        ({"type": "any"}, "required", None, ["get_weather", "get_time"]),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False, ["get_weather"]),
        (
            {"type": "tool", "name": "get_time"},
            {"type": "function", "function": {"name": "get_time"}},
            None,
            ["get_time"],
        ),
    ],
)
def test_anthropic_tool_choice_reaches_an_openai_model(
    claude: anthropic.Anthropic,
    knobs: Any,
    tool_choice: Any,
    sent_choice: Any,
    sent_parallel: bool | None,
    called: list[str],
) -> None:
    message = claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather and time in parallel"}],
        tools=[
            {"name": "get_weather", "input_schema": WEATHER_PARAMS},
            {"name": "get_time", "input_schema": TIME_PARAMS},
        ],
        tool_choice=tool_choice,  # type: ignore[arg-type]
    )
    assert [b.name for b in message.content if b.type == "tool_use"] == called
    assert message.stop_reason == ("tool_use" if called else "end_turn")
    sent = _upstream_bodies(knobs)[-1]
    assert sent["tool_choice"] == sent_choice and sent.get("parallel_tool_calls") == sent_parallel


# --- structured output -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_json_object_and_json_schema(oai: openai.OpenAI, knobs: Any, model: str, stream: bool) -> None:
    messages = [{"role": "user", "content": "Weather in Oslo as JSON"}]
    text, _, finish, _ = _ask(
        oai, stream, model=model, messages=messages, response_format={"type": "json_object"}
    )
    assert finish == "stop" and isinstance(json.loads(text), dict)
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": ANSWER_SCHEMA, "strict": True},
    }
    text, _, finish, _ = _ask(oai, stream, model=model, messages=messages, response_format=schema_format)
    assert finish == "stop"
    jsonschema.validate(json.loads(text), ANSWER_SCHEMA)
    sent = _upstream_bodies(knobs)[-1]
    if model.startswith("claude"):
        assert sent["tool_choice"] == {"type": "tool", "name": "weather"}
        assert sent["tools"][0]["input_schema"] == ANSWER_SCHEMA
    elif model.startswith("llama"):
        assert sent["format"] == ANSWER_SCHEMA
    else:
        assert sent["response_format"]["json_schema"]["schema"] == ANSWER_SCHEMA


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini", "llama-3.1-8b"])
def test_anthropic_structured_output_through_every_protocol(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any, model: str, stream: bool
) -> None:
    """`output_config.format` (Anthropic's structured outputs) answers one text block of JSON."""
    body = {
        "model": model,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Weather in Oslo"}],
        "output_config": {"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}},
        "stream": stream,
    }
    headers = {"x-api-key": live_keys["acme"], "Cache-Control": "no-cache"}
    response = httpx.post(gateway_server.url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    if stream:
        events = list(_sse(response))
        assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == ["text"]
        text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
        stop_reason = events[-2][1]["delta"]["stop_reason"]
    else:
        [block] = response.json()["content"]
        assert block["type"] == "text"
        text, stop_reason = block["text"], response.json()["stop_reason"]
    jsonschema.validate(json.loads(text), ANSWER_SCHEMA)
    assert stop_reason == "end_turn"


def test_sdk_parse_helper_gets_typed_structured_output(oai: openai.OpenAI, knobs: Any) -> None:
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        celsius: int

    for model in ("gpt-4o-mini", "claude-3-5-haiku"):
        parsed = oai.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "Oslo"}], response_format=Weather
        )
        weather = parsed.choices[0].message.parsed
        assert isinstance(weather, Weather) and weather.city == "Oslo", model


def test_a_schema_a_model_cannot_honour_is_a_clear_400(oai: openai.OpenAI, knobs: Any) -> None:
    # Anthropic takes structured output as a forced tool, whose input must be an object.
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(
            model="claude-3-5-haiku",
            messages=[{"role": "user", "content": "a list"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "items", "schema": {"type": "array", "items": {"type": "string"}}},
            },
        )
    assert refused.value.code == "unsupported_feature"
    assert "object" in refused.value.message
    assert isinstance(refused.value.body, dict) and refused.value.body.get("param") == "response_format"
    assert knobs.count("anthropic", "claude-3-5-haiku-latest", "total") == 0


# --- images --------------------------------------------------------------------------------------


def _image_message(url: str) -> Any:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ],
        }
    ]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-sonnet"])
def test_vision_models_accept_image_parts(oai: openai.OpenAI, knobs: Any, model: str) -> None:
    completion = oai.chat.completions.create(
        model=model, messages=_image_message(f"data:image/png;base64,{PIXEL}")
    )
    assert completion.choices[0].message.content == "Echo: What is in this picture?" + "".join(
        f" {w}"
        for w in "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut".split()
    )
    assert completion.usage is not None and completion.usage.prompt_tokens == 5 + 85  # words + image
    sent = _upstream_bodies(knobs)[-1]["messages"][-1]["content"]
    if model.startswith("claude"):
        assert sent[1] == {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
        }
    else:
        assert sent[1]["image_url"]["url"].endswith(PIXEL)
    by_url = oai.chat.completions.create(model=model, messages=_image_message("https://example.com/cat.png"))
    assert by_url.choices[0].message.content


def test_anthropic_image_blocks_reach_an_openai_vision_model(claude: anthropic.Anthropic, knobs: Any) -> None:
    message = claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "Describe it"},
                ],
            }
        ],
    )
    assert message.content[0].type == "text" and message.usage.input_tokens == 2 + 85
    sent = _upstream_bodies(knobs)[-1]["messages"][-1]["content"]
    assert sent[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "llama-3.1-8b", "smollm2-135m"])
def test_models_without_vision_refuse_images_clearly(
    oai: openai.OpenAI, claude: anthropic.Anthropic, knobs: Any, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model=model, messages=_image_message(f"data:image/png;base64,{PIXEL}"))
    error = refused.value.body
    assert isinstance(error, dict) and {"type", "message", "code"} <= set(error)
    assert error["type"] == "invalid_request_error"
    assert "image" in error["message"] and model in error["message"]
    with pytest.raises(anthropic.BadRequestError) as refused_anthropic:
        claude.messages.create(
            model=model,
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                    ],
                }
            ],
        )
    assert refused_anthropic.value.body["type"] == "error"  # type: ignore[index]
    assert "image" in refused_anthropic.value.message
    assert knobs.stats.snapshot() == {}  # nothing reached a provider


# --- n, stop, logprobs, validation -----------------------------------------------------------------


def test_several_choices_stop_and_logprobs_on_openai(oai: openai.OpenAI, knobs: Any) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "one two three four five"}],
        n=3,
        stop=["four"],
        logprobs=True,
        top_logprobs=2,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        user="u-1",
        metadata={"k": "v"},
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        assert choice.message.content == "Echo: one two three "
        assert choice.finish_reason == "stop"
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert [t.token for t in choice.logprobs.content] == ["Echo: ", "one ", "two ", "three "]
        assert all(len(t.top_logprobs) == 2 and t.logprob < 0 for t in choice.logprobs.content)
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    sent = _upstream_bodies(knobs)[-1]
    assert {k: sent[k] for k in ("n", "stop", "seed", "user", "metadata", "top_logprobs")} == {
        "n": 3,
        "stop": ["four"],
        "seed": 7,
        "user": "u-1",
        "metadata": {"k": "v"},
        "top_logprobs": 2,
    }


def test_streamed_several_choices_with_logprobs(oai: openai.OpenAI, knobs: Any) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "a b"}],
            n=2,
            logprobs=True,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = {0: "", 1: ""}
    tokens: dict[int, list[str]] = {0: [], 1: []}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.delta.content:
                # Each piece of text carries its own logprobs, in the same chunk.
                assert choice.logprobs is not None and choice.logprobs.content is not None
                assert "".join(t.token for t in choice.logprobs.content) == choice.delta.content
            if choice.logprobs and choice.logprobs.content:
                tokens[choice.index] += [t.token for t in choice.logprobs.content]
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "Echo: a b", 1: "Echo: a b"}
    assert tokens == {0: ["Echo: ", "a ", "b"], 1: ["Echo: ", "a ", "b"]}
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


@pytest.mark.parametrize(
    ("model", "params", "param"),
    [
        ("claude-3-5-haiku", {"n": 2}, "n"),
        ("llama-3.1-8b", {"n": 2}, "n"),
        ("claude-3-5-haiku", {"logprobs": True}, None),
        ("llama-3.1-8b", {"logprobs": True, "top_logprobs": 1}, None),
        ("claude-3-5-haiku", {"temperature": 1.5}, "temperature"),
    ],
)
def test_what_a_provider_cannot_do_is_a_clear_400(
    oai: openai.OpenAI, knobs: Any, model: str, params: dict[str, Any], param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], **params)
    body = refused.value.body
    assert isinstance(body, dict) and body["message"] and body["type"] == "invalid_request_error"
    if param:
        assert body["param"] == param
    assert model in body["message"] or "logprobs" in body["message"], body
    assert knobs.stats.snapshot() == {}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": 200}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"user": 5}, "user"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"stream": True, "stream_options": "x"}, "stream_options"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
            "tools[0].function.parameters",
        ),
        ({"messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name"),
        ({"messages": [{"role": "tool", "tool_call_id": 5, "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_openai_validation_errors(oai: openai.OpenAI, knobs: Any, params: dict[str, Any], param: str) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]} | params
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(**body)
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["message"]
    assert refused.value.status_code == 400
    assert knobs.stats.snapshot() == {}


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 0},
        {"extra_body": {"temperature": 1.5}},
        {"extra_body": {"top_p": -0.1}},
        {"extra_body": {"top_k": -1}},
        {"stop_sequences": "STOP"},
        {"messages": [{"role": "system", "content": "x"}]},
        {"messages": []},
        {"tool_choice": {"type": "sometimes"}},
        {"tools": [{"description": "no name"}]},
        {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
        {"metadata": "x"},
        {"metadata": {"user_id": 5}},
        {"tools": "x"},
        {"tools": [{"name": "f", "input_schema": "x"}]},
        {"tool_choice": "auto"},
        {"tool_choice": {"type": "tool"}},
        {"tool_choice": {"type": "tool", "name": "missing"}},
        {"system": [5]},
        {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 5}]}
            ]
        },
        {"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "x"}],
                },
                {"role": "user", "content": "x"},
            ]
        },
        {"output_config": {"format": {"type": "xml"}}},
    ],
)
def test_anthropic_validation_errors(claude: anthropic.Anthropic, knobs: Any, params: dict[str, Any]) -> None:
    body: dict[str, Any] = {
        "model": "claude-3-5-haiku",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    } | params
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(**body)
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
    assert knobs.stats.snapshot() == {}


def test_anthropic_sampling_controls_reach_anthropic(claude: anthropic.Anthropic, knobs: Any) -> None:
    message = claude.messages.create(
        model="claude-3-5-haiku",
        max_tokens=50,
        messages=[{"role": "user", "content": "alpha beta STOP gamma"}],
        stop_sequences=["STOP"],
        metadata={"user_id": "u-9"},
        # The SDK (2.x) takes the sampling parameters only through extra_body.
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 5},
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "STOP"
    assert message.content[0].type == "text" and message.content[0].text == "Echo: alpha beta "
    with claude.messages.stream(
        model="claude-3-5-haiku",
        max_tokens=50,
        messages=[{"role": "user", "content": "alpha beta STOP gamma"}],
        stop_sequences=["STOP"],
    ) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "STOP")
    sent = _upstream_bodies(knobs)[-2]
    assert {k: sent.get(k) for k in ("stop_sequences", "temperature", "top_p", "top_k", "metadata")} == {
        "stop_sequences": ["STOP"],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 5,
        "metadata": {"user_id": "u-9"},
    }


# --- streaming details -----------------------------------------------------------------------------


def _sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        yield fields.get("event", ""), json.loads(fields["data"]) if fields["data"] != "[DONE]" else {}


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_chunks_carry_one_id_role_first_finish_and_usage(
    oai: openai.OpenAI, knobs: Any, model: str
) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Stream please"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {model} and {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 6 and usage.total_tokens == usage.prompt_tokens + 6
    without = list(
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert all(c.usage is None and c.choices for c in without)


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini", "llama-3.1-8b"])
def test_anthropic_event_sequence_with_text_and_tool_blocks(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any, model: str
) -> None:
    """A model that writes "Let me check." and then calls a tool: text block 0, tool_use block 1,
    whichever protocol answered."""
    knobs.knobs.update({"tool_preamble": "Let me check."})
    response = httpx.post(
        gateway_server.url + "/v1/messages",
        json={
            "model": model,
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "Weather in Rome"}],
            "tools": [{"name": "get_weather", "input_schema": WEATHER_PARAMS}],
        },
        headers={"x-api-key": live_keys["acme"], "Cache-Control": "no-cache"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = list(_sse(response))
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == [(0, "text"), (1, "tool_use")] and stops == [0, 1]
    # Every delta falls between its block's start and stop.
    for index in (0, 1):
        positions = [
            i for i, (n, d) in enumerate(events) if n.startswith("content_block") and d["index"] == index
        ]
        assert (
            events[positions[0]][0] == "content_block_start"
            and events[positions[-1]][0] == "content_block_stop"
        )
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta" and d["index"] == 0)
    partial = "".join(
        d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1
    )
    assert text == "Let me check."
    jsonschema.validate(json.loads(partial), WEATHER_PARAMS)
    tool_block = next(d["content_block"] for n, d in events if n == "content_block_start" and d["index"] == 1)
    assert tool_block["name"] == "get_weather" and tool_block["id"] and tool_block["input"] == {}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3 + len(partial.split())
    assert delta["usage"]["input_tokens"] == 3  # the upstream's count of "Weather in Rome"
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_text_before_tool_calls_survives_translation(
    oai: openai.OpenAI, knobs: Any, model: str, stream: bool
) -> None:
    knobs.knobs.update({"tool_preamble": "Let me check."})
    text, calls, finish, _ = _ask(
        oai, stream, model=model, messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER]
    )
    assert (text, finish, [c["name"] for c in calls]) == ("Let me check.", "tool_calls", ["get_weather"])


def test_anthropic_stream_of_text_then_tool_use_has_two_blocks(
    claude: anthropic.Anthropic, knobs: Any
) -> None:
    """An Anthropic-shaped stream answered by an OpenAI model with text and tool calls."""
    events = []
    with claude.messages.stream(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather and time in parallel"}],
        tools=[
            {"name": "get_weather", "input_schema": WEATHER_PARAMS},
            {"name": "get_time", "input_schema": TIME_PARAMS},
        ],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    opened = [(e.index, e.content_block.type) for e in events if e.type == "content_block_start"]
    closed = [e.index for e in events if e.type == "content_block_stop"]
    assert opened == [(0, "tool_use"), (1, "tool_use")] and closed == [0, 1]
    assert [b.name for b in final.content if b.type == "tool_use"] == ["get_weather", "get_time"]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 0


def test_anthropic_native_text_and_tool_stream(claude: anthropic.Anthropic, knobs: Any) -> None:
    with claude.messages.stream(
        model="claude-3-5-haiku",
        max_tokens=5,
        messages=[{"role": "user", "content": "tell me a long story"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [e.type for e in events if e.type != "text"][:3] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5
    # message_start can only estimate the prompt; message_delta corrects it to the upstream's count.
    assert final.usage.input_tokens == 5
    assert final.content[0].type == "text" and len(final.content[0].text.split()) == 5


def test_anthropic_stream_error_event_mid_stream(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    knobs.knobs.update({"provider": "anthropic", "stream_error_after_tokens": 2})
    response = httpx.post(
        gateway_server.url + "/v1/messages",
        json={
            "model": "claude-3-5-haiku",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
        headers={"x-api-key": live_keys["acme"], "Cache-Control": "no-cache"},
        timeout=30,
    )
    events = list(_sse(response))
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] in ("api_error", "overloaded_error")
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert len(deltas) == 2


# --- usage, cost and the cache ---------------------------------------------------------------------


def _usage_row(world: Any, request_id: str) -> Any:
    from django_tenants.utils import schema_context

    from billing.models import UsageRecord

    with schema_context(world.acme.tenant.schema_name):
        return list(UsageRecord.objects.filter(request_id=request_id))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b"])
def test_a_tool_call_answer_is_billed_once_with_upstream_tokens(
    oai: openai.OpenAI, knobs: Any, world: Any, django_db_blocker: Any, model: str, stream: bool
) -> None:
    params: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "weather in Lima"}],
        "tools": [WEATHER],
    }
    if stream:
        params["stream_options"] = {"include_usage": True}
    _, calls, finish, raw = _ask(oai, stream, **params)
    assert finish == "tool_calls"
    # The fake counts the words of the arguments as completion tokens and the prompt's words.
    expected_completion = sum(len(c["arguments"].split()) for c in calls)
    with django_db_blocker.unblock():
        rows = _usage_row(world, raw.headers["x-request-id"])
    assert len(rows) == 1
    [row] = rows
    assert (row.prompt_tokens, row.completion_tokens) == (3, expected_completion)
    assert not row.usage_estimated and row.outcome == "ok" and row.streamed == stream
    prices = {
        "gpt-4o-mini": ("0.15", "0.60"),
        "claude-3-5-haiku": ("0.80", "4.00"),
        "llama-3.1-8b": ("0", "0"),
    }
    price_in, price_out = (Decimal(p) for p in prices[model])
    expected = (3 * price_in + expected_completion * price_out) / 1_000_000
    assert row.cost == expected.quantize(Decimal("0.000001")) and row.model == model


def test_tools_images_and_schemas_are_served_from_cache_only_on_exact_match(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    cached = openai.OpenAI(
        base_url=gateway_server.url + "/v1",
        api_key=live_keys["acme"],
        max_retries=0,
        _strict_response_validation=True,
    )

    def ask(**params: Any) -> Any:
        raw = cached.chat.completions.with_raw_response.create(model="gpt-4o-mini", **params)
        return raw.headers["x-gateway-cache"], raw.parse()

    question = [{"role": "user", "content": "What is the capital city of Portugal?"}]
    # Near enough for the semantic layer (it serves it for a plain question, checked last).
    near = [{"role": "user", "content": "What is the capital of Portugal?"}]
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER_SCHEMA}}
    other_schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": TIME_PARAMS}}
    image = _image_message(f"data:image/png;base64,{PIXEL}")
    cases: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        ({"messages": question, "tools": [WEATHER], "tool_choice": "none"},
         {"messages": near, "tools": [WEATHER], "tool_choice": "none"},
         {"messages": question, "tools": [TIME], "tool_choice": "none"}),
        ({"messages": question, "response_format": schema},
         {"messages": near, "response_format": schema},
         {"messages": question, "response_format": other_schema}),
        ({"messages": image}, {"messages": [image[0] | {"content": image[0]["content"][:1]}]},
         {"messages": _image_message("https://example.com/other.png")}),
    ]  # fmt: skip
    for params, near_params, changed in cases:
        status, first = ask(**params)
        assert status == "miss"
        # The answer is written to the cache off the request path: wait for the exact hit.
        for _ in range(50):
            status, again = ask(**params)
            if status != "miss":
                break
            time.sleep(0.05)
        assert status == "exact" and again.choices[0].message.content == first.choices[0].message.content
        assert ask(**near_params)[0] == "miss", near_params
        assert ask(**changed)[0] == "miss", changed
    # Plain text questions still get semantic hits (the guard is specific to the kinds above).
    plain_status, _ = ask(messages=question)
    for _ in range(50):
        if ask(messages=question)[0] == "exact":
            break
        time.sleep(0.05)
    assert ask(messages=near)[0] == "semantic", plain_status


# --- token counting ------------------------------------------------------------------------------


def test_count_tokens_for_openai_and_anthropic_shapes(
    gateway_server: GatewayServer, live_keys: dict[str, str], claude: anthropic.Anthropic, knobs: Any
) -> None:
    headers = {"Authorization": f"Bearer {live_keys['acme']}"}
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
    }
    plain = httpx.post(gateway_server.url + "/v1/chat/completions/count_tokens", json=body, headers=headers)
    assert plain.status_code == 200, plain.text
    counted = plain.json()
    assert counted["object"] == "chat.completion.token_count" and counted["model"] == "gpt-4o-mini"
    with_tools = httpx.post(
        gateway_server.url + "/v1/chat/completions/count_tokens",
        json=body | {"tools": [WEATHER]},
        headers=headers,
    ).json()
    with_image = httpx.post(
        gateway_server.url + "/v1/chat/completions/count_tokens",
        json=body | {"messages": _image_message("https://example.com/a.png")},
        headers=headers,
    ).json()
    assert 0 < counted["input_tokens"] < with_tools["input_tokens"]
    assert with_image["input_tokens"] > 700  # an image is counted, not ignored
    anthropic_count = claude.messages.count_tokens(
        model="claude-3-5-haiku", system="Be brief.", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert anthropic_count.input_tokens == counted["input_tokens"]
    # The same validation as the chat endpoint, and the same auth.
    bad = httpx.post(
        gateway_server.url + "/v1/chat/completions/count_tokens",
        json={"model": "gpt-4o-mini"},
        headers=headers,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    unknown = httpx.post(
        gateway_server.url + "/v1/chat/completions/count_tokens",
        json=body | {"model": "nope"},
        headers=headers,
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    wrong_key = httpx.post(
        gateway_server.url + "/v1/chat/completions/count_tokens",
        json=body,
        headers={"Authorization": "Bearer gwk_wrong"},
    )
    assert wrong_key.status_code == 401
    assert knobs.stats.snapshot() == {}  # counting calls no model
