"""Tools, structured output, images and sampling controls through the REST conversation API.

The real server (daphne) and the fake upstream, over HTTP, for an OpenAI-protocol model
(`gpt-4o-mini`) and an Anthropic one (`claude-3-5-haiku`, which has no vision). The fake calls the
first offered tool when the last message is the user's (two when the user says "parallel"), with
arguments that follow the tool's schema, and after tool results answers "Tool result: <text>".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import pytest
import websockets

from tests.chat.compat_fixtures import ANSWER_SCHEMA, PIXEL, TIME, TOOL_RESULT, WEATHER, WEATHER_PARAMS
from tests.conftest import GatewayServer, assert_error

pytestmark = pytest.mark.django_db

MODELS = ["gpt-4o-mini", "claude-3-5-haiku"]
IMAGE_URL = f"data:image/png;base64,{PIXEL}"


class Client:
    """The REST API as a client sees it, for one conversation."""

    def __init__(self, server: GatewayServer, key: str, **conversation: Any) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            server.url + "/api/v1/conversations", json=conversation, headers=self.headers, timeout=30
        )
        assert created.status_code == 201, created.text
        self.id = str(created.json()["id"])
        self.url = f"{server.url}/api/v1/conversations/{self.id}/messages"

    def post(self, body: dict[str, Any]) -> httpx.Response:
        # No gateway cache: every answer must come from the model (and be billed as such).
        return httpx.post(self.url, json={"use_cache": False} | body, headers=self.headers, timeout=30)

    def ask(self, body: dict[str, Any], stream: bool) -> tuple[dict[str, Any], str]:
        """One answered turn: (the answer as the API describes it, the request id). Streamed, the
        answer is rebuilt from the deltas and checked against the `done` event."""
        response = self.post(body | {"stream": stream})
        if not stream:
            assert response.status_code == 201, response.text
            message: dict[str, Any] = response.json()["message"]
            return message, response.headers["x-request-id"]
        assert response.headers["content-type"].startswith("text/event-stream"), response.text
        events = sse(response.text)
        assert events[0][0] == "start" and events[-1][0] == "done", events
        done = events[-1][1]
        text = "".join(data.get("content", "") for kind, data in events if kind == "delta")
        calls: dict[int, dict[str, Any]] = {}
        for kind, data in events:
            piece = data.get("tool_call") if kind == "delta" else None
            if piece:
                call = calls.setdefault(piece["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] = piece["id"] or call["id"]
                call["name"] = piece["name"] or call["name"]
                call["arguments"] += piece["arguments"]
        streamed_calls = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(calls.items())
        ]
        assert done["tool_calls"] == streamed_calls, (done, streamed_calls)
        stored = self.messages()[-1]
        assert stored["id"] == done["message_id"] and stored["content"] == text
        assert stored["tool_calls"] == done["tool_calls"]
        assert stored["finish_reason"] == done["finish_reason"]
        return stored, response.headers["x-request-id"]

    def messages(self) -> list[dict[str, Any]]:
        listed = httpx.get(self.url, headers=self.headers, timeout=30)
        assert listed.status_code == 200, listed.text
        return list(listed.json()["results"])


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def usage_rows(world: Any, django_db_blocker: Any, conversation_id: str) -> list[Any]:
    from django_tenants.utils import schema_context

    from billing.models import UsageRecord

    with django_db_blocker.unblock(), schema_context(world.acme.tenant.schema_name):
        return list(UsageRecord.objects.filter(conversation_id=conversation_id).order_by("created_at"))


def upstream_bodies(knobs: Any) -> list[dict[str, Any]]:
    return [entry["body"] for entry in knobs.stats.recent()]


@pytest.fixture
def client_for(gateway_server: GatewayServer, live_keys: dict[str, str]) -> Any:
    def make(model: str, **conversation: Any) -> Client:
        return Client(gateway_server, live_keys["acme"], model=model, **conversation)

    return make


# --- the agent loop ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "sse"])
@pytest.mark.parametrize("model", MODELS)
def test_agent_loop_tool_call_tool_result_final_answer(
    client_for: Any, knobs: Any, world: Any, django_db_blocker: Any, model: str, stream: bool
) -> None:
    chat = client_for(model, system_prompt="You are a weather bot.")
    first, first_id = chat.ask(
        {"content": "What is the weather in Paris?", "tools": [WEATHER], "tool_choice": "auto"}, stream
    )
    assert first["role"] == "assistant" and first["finish_reason"] == "tool_calls"
    assert first["content"] == "" and first["model"] == model
    [call] = first["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather" and call["id"]
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_PARAMS)

    final, final_id = chat.ask(
        {"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT, "tools": [WEATHER]}, stream
    )
    assert (final["content"], final["tool_calls"], final["finish_reason"]) == (
        f"Tool result: {TOOL_RESULT}",
        [],
        "stop",
    )

    # The model saw the call and its result, tied together, in its own protocol.
    sent = upstream_bodies(knobs)[-1]
    if model.startswith("claude"):
        assert sent["system"] == "You are a weather bot."
        [question, assistant, result] = sent["messages"]
        assert question == {"role": "user", "content": "What is the weather in Paris?"} or question[
            "content"
        ] == [{"type": "text", "text": "What is the weather in Paris?"}]
        [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert tool_use["id"] == call["id"] and tool_use["input"] == json.loads(call["function"]["arguments"])
        assert result["content"][0]["type"] == "tool_result"
        assert result["content"][0]["tool_use_id"] == call["id"]
    else:
        [system, question, assistant, result] = sent["messages"]
        assert system == {"role": "system", "content": "You are a weather bot."}
        assert question["content"] == "What is the weather in Paris?"
        assert assistant["tool_calls"] == [call]
        assert result == {"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT}
    assert sent["tools"], "the tools travel with the tool result"

    # Stored in order, tool call and result included, as the API returns them.
    stored = chat.messages()
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"] == [call]
    assert (stored[2]["tool_call_id"], stored[2]["content"]) == (call["id"], TOOL_RESULT)

    # Exactly one usage row per answered request, matching what the answer reports.
    rows = usage_rows(world, django_db_blocker, chat.id)
    assert [r.request_id for r in rows] == [first_id, final_id]
    for row, message in zip(rows, [first, final], strict=True):
        assert (row.prompt_tokens, row.completion_tokens) == (
            message["usage"]["prompt_tokens"],
            message["usage"]["completion_tokens"],
        )
        assert row.completion_tokens > 0 and row.cost > 0 and row.streamed is stream


def test_parallel_calls_are_answered_once_every_result_is_in(
    client_for: Any, knobs: Any, world: Any, django_db_blocker: Any
) -> None:
    chat = client_for("gpt-4o-mini")
    first, _ = chat.ask(
        {"content": "Weather and time in Paris, in parallel", "tools": [WEATHER, TIME]}, False
    )
    weather, clock = first["tool_calls"]
    assert (weather["function"]["name"], clock["function"]["name"]) == ("get_weather", "get_time")
    calls_before = knobs.count("openai", "gpt-4o-mini", "total")

    # A question while calls wait for results is refused; so is a result for an unknown call.
    assert_error(chat.post({"content": "Never mind"}), 409, "tool_results_pending")
    unknown = assert_error(
        chat.post({"role": "tool", "tool_call_id": "call_nope", "content": "x"}), 400, "unknown_tool_call_id"
    )
    assert weather["id"] in unknown["message"] and unknown["param"] == "tool_call_id"

    # The first result is stored; the model is not asked yet.
    waiting = chat.post({"role": "tool", "tool_call_id": weather["id"], "content": TOOL_RESULT})
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["pending_tool_calls"] == [clock["id"]]
    assert waiting.json()["message"]["tool_call_id"] == weather["id"]
    assert knobs.count("openai", "gpt-4o-mini", "total") == calls_before
    again = chat.post({"role": "tool", "tool_call_id": weather["id"], "content": TOOL_RESULT})
    assert_error(again, 400, "unknown_tool_call_id")

    final, _ = chat.ask(
        {"role": "tool", "tool_call_id": clock["id"], "content": "noon", "tools": [WEATHER, TIME]}, True
    )
    assert final["content"] == "Tool result: noon" and final["finish_reason"] == "stop"
    results = [m for m in upstream_bodies(knobs)[-1]["messages"] if m["role"] == "tool"]
    assert [(r["tool_call_id"], r["content"]) for r in results] == [
        (weather["id"], TOOL_RESULT),
        (clock["id"], "noon"),
    ]
    assert len(usage_rows(world, django_db_blocker, chat.id)) == 2  # two answers, two rows
    # With every call answered, the conversation goes on, and a result has nothing left to answer.
    assert_error(
        chat.post({"role": "tool", "tool_call_id": clock["id"], "content": "x"}), 409, "no_pending_tool_call"
    )
    follow_up, _ = chat.ask({"content": "Thanks"}, False)
    assert follow_up["content"].startswith("Echo: Thanks")


async def test_websocket_tool_loop(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    chat = Client(gateway_server, live_keys["acme"], model="claude-3-5-haiku")
    url = f"ws://127.0.0.1:{gateway_server.port}/ws/{chat.id}?token={live_keys['acme']}"

    async def until_done(ws: Any) -> dict[str, Any]:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if event["type"] in ("done", "error"):
                return dict(event)

    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "content": "Weather in Oslo?", "tools": [WEATHER]}))
        done = await until_done(ws)
        assert done["type"] == "done" and done["finish_reason"] == "tool_calls"
        [call] = done["tool_calls"]
        await ws.send(
            json.dumps({"type": "message", "role": "tool", "tool_call_id": call["id"], "content": "cold"})
        )
        done = await until_done(ws)
    assert done["type"] == "done" and done["tool_calls"] == [] and done["finish_reason"] == "stop"
    assert [m["role"] for m in chat.messages()] == ["user", "assistant", "tool", "assistant"]
    assert chat.messages()[-1]["content"] == "Tool result: cold"

    # A later turn that offers no tools: Anthropic refuses tool calls in the history without tool
    # definitions, so the history's tools come back as placeholders that cannot be called.
    later, _ = chat.ask({"content": "Thanks"}, False)
    assert later["content"].startswith("Echo: Thanks") and later["tool_calls"] == []
    sent = upstream_bodies(knobs)[-1]
    assert [t["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["tool_choice"] == {"type": "none"}


def test_history_keeps_tool_calls_with_their_results_when_trimmed(client_for: Any, knobs: Any) -> None:
    """Old exchanges leave the context whole: never a call without its question or result."""
    chat = client_for("gpt-4o-mini")
    for n in range(3):
        # Long questions (the fake's arguments repeat them), short results: trimming runs out of
        # room at a tool call, after having kept its result, which must then go too.
        first, _ = chat.ask({"content": f"Weather number {n}? " + "word " * 1000, "tools": [WEATHER]}, False)
        [call] = first["tool_calls"]
        chat.ask({"role": "tool", "tool_call_id": call["id"], "content": f"result {n}"}, False)
    # The catalog's context window is 8192 tokens, 2000 are kept for the answer: two of the three
    # exchanges fit (each is about 2,600 estimated tokens: the question and the call's arguments).
    chat.ask({"content": "And now?", "max_tokens": 2000}, False)
    sent = upstream_bodies(knobs)[-1]["messages"]
    assert [(m["role"], (m["content"] or "")[:16]) for m in sent] == [
        ("user", "Weather number 1"),
        ("assistant", ""),
        ("tool", "result 1"),
        ("assistant", "Tool result: res"),
        ("user", "Weather number 2"),
        ("assistant", ""),
        ("tool", "result 2"),
        ("assistant", "Tool result: res"),
        ("user", "And now?"),
    ]
    call_ids = [c["id"] for m in sent for c in m.get("tool_calls") or []]
    assert call_ids == [m["tool_call_id"] for m in sent if m["role"] == "tool"]


# --- images --------------------------------------------------------------------------------------


def test_image_parts_reach_a_vision_model_and_stay_in_the_history(
    client_for: Any, knobs: Any, world: Any, django_db_blocker: Any
) -> None:
    chat = client_for("gpt-4o-mini")
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "low"}},
    ]
    answer, _ = chat.ask({"content": parts}, False)
    assert answer["usage"]["prompt_tokens"] == 5 + 85  # the fake's words plus one image
    assert upstream_bodies(knobs)[-1]["messages"][-1]["content"] == parts
    [question, _answer] = chat.messages()
    assert question["content"] == "What is in this picture?" and question["parts"] == parts
    # The image stays in the conversation's context for the next question.
    chat.ask({"content": "And its colour?"}, True)
    earlier = upstream_bodies(knobs)[-1]["messages"][0]
    assert earlier["content"] == parts
    assert len(usage_rows(world, django_db_blocker, chat.id)) == 2


def test_image_parts_are_refused_for_a_model_without_vision(
    client_for: Any, knobs: Any, world: Any, django_db_blocker: Any
) -> None:
    chat = client_for("claude-3-5-haiku")
    content = [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": IMAGE_URL}}]
    for stream in (False, True):
        error = assert_error(chat.post({"content": content, "stream": stream}), 400)
        assert error["type"] == "invalid_request_error"
        assert "image" in error["message"] and "claude-3-5-haiku" in error["message"]
    assert chat.messages() == [] and usage_rows(world, django_db_blocker, chat.id) == []
    assert knobs.stats.snapshot() == {}  # nothing reached a provider


# --- structured output and sampling controls -----------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_response_format_json_schema_is_answered_with_json(
    client_for: Any, knobs: Any, world: Any, django_db_blocker: Any, model: str
) -> None:
    chat = client_for(model)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": ANSWER_SCHEMA, "strict": True},
    }
    for stream in (False, True):
        answer, _ = chat.ask(
            {"content": "Weather in Rome as JSON", "response_format": response_format}, stream
        )
        jsonschema.validate(json.loads(answer["content"]), ANSWER_SCHEMA)
        assert answer["tool_calls"] == [] and answer["finish_reason"] == "stop"
    assert len(usage_rows(world, django_db_blocker, chat.id)) == 2


@pytest.mark.parametrize("model", MODELS)
def test_sampling_controls_reach_the_provider(client_for: Any, knobs: Any, model: str) -> None:
    chat = client_for(model, temperature=0.3)
    options = {"stop": ["lorem"], "seed": 7, "top_p": 0.5, "temperature": 0.9, "top_k": 40}
    answer, _ = chat.ask({"content": "Count for me", "max_tokens": 50} | options, False)
    sent = upstream_bodies(knobs)[-1]
    assert sent["top_p"] == 0.5 and sent["temperature"] == 0.9  # the request's, not the conversation's
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 50
    if model.startswith("claude"):
        assert sent["stop_sequences"] == ["lorem"] and sent["top_k"] == 40
    else:
        assert sent["stop"] == ["lorem"] and sent["seed"] == 7
    # The fake pads its echo with lorem ipsum: the stop sequence cut it before the first "lorem".
    assert answer["content"].startswith("Echo: Count for me") and "lorem" not in answer["content"]
    chat.ask({"content": "Again"}, False)
    assert upstream_bodies(knobs)[-1]["temperature"] == 0.3  # options are per request


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"content": "x", "top_p": 3}, "top_p", "invalid_value"),
        ({"content": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({"content": "x", "tools": {"name": "f"}}, "tools", "invalid_type"),
        (
            {"content": "x", "tools": [WEATHER], "tool_choice": {"function": {"name": "g"}}},
            "tool_choice",
            None,
        ),
        ({"content": "x", "response_format": {"type": "yaml"}}, "response_format.type", None),
        ({"content": "x", "n": 2}, "n", "unsupported_parameter"),
        ({"content": "x", "logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"content": "x", "top_k": -1}, "top_k", "invalid_value"),
        ({"content": [{"type": "audio"}]}, "content[0]", "invalid_type"),
        (
            {"content": [{"type": "image_url", "image_url": {"url": IMAGE_URL}}], "role": "assistant"},
            "role",
            None,
        ),
        ({"role": "tool", "content": "x"}, "tool_call_id", "missing_required_parameter"),
        ({"role": "tool", "tool_call_id": "call_1", "content": "x"}, "tool_call_id", "no_pending_tool_call"),
    ],
)
def test_bad_requests_are_refused_with_the_error_shape_and_store_nothing(
    client_for: Any, knobs: Any, body: dict[str, Any], param: str, code: str | None
) -> None:
    chat = client_for("gpt-4o-mini")
    response = chat.post(body)
    error = assert_error(response, 409 if code == "no_pending_tool_call" else 400, code)
    assert error["param"] == param
    assert chat.messages() == [] and knobs.stats.snapshot() == {}
