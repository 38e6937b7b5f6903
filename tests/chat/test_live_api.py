"""The real server (daphne) with real clients: the official SDKs, SSE over HTTP, WebSockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
import websockets

from tests.conftest import GatewayServer

# The server runs in another process on committed data; the mark makes pytest-django create the
# test database even when only this module runs.
pytestmark = pytest.mark.django_db


@pytest.fixture
def oai(gateway_server: GatewayServer, live_keys: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key=live_keys["acme"], max_retries=0)


def test_openai_sdk_works_by_changing_base_url_only(oai: openai.OpenAI, knobs: Any) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], max_tokens=30
    )
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-gateway-provider"] == "fake-openai"
    models = {m.id for m in oai.models.list()}
    assert "gpt-4o-mini" in models


def test_openai_sdk_streaming(oai: openai.OpenAI, knobs: Any) -> None:
    stream = oai.chat.completions.create(
        model="claude-3-5-haiku",
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split())


def test_openai_sdk_errors_are_typed(oai: openai.OpenAI, gateway_server: GatewayServer) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="gwk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def _conversation(gateway_server: GatewayServer, key: str, **body: Any) -> str:
    response = httpx.post(
        gateway_server.url + "/api/v1/conversations", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _sse(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields.get("id", ""), fields["event"], json.loads(fields["data"])))
    return events


def test_sse_answer_is_stored_and_resumable_with_last_event_id(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    key = live_keys["acme"]
    conversation = _conversation(gateway_server, key, system_prompt="Be brief.")
    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.post(
        f"{gateway_server.url}/api/v1/conversations/{conversation}/messages",
        json={"content": "Hello there", "stream": True},
        headers=headers,
        timeout=30,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "delta" in kinds
    done = events[-1][2]
    assert done["usage"]["completion_tokens"] > 0 and done["model"] == "gpt-4o-mini"
    answer = "".join(data["content"] for _, kind, data in events if kind == "delta")
    # Resume from the second event: the rest is replayed, ids and all.
    resumed = httpx.get(
        f"{gateway_server.url}/api/v1/conversations/{conversation}/events",
        headers=headers | {"Last-Event-ID": events[1][0]},
        timeout=30,
    )
    assert [e[0] for e in _sse(resumed.text)] == [e[0] for e in events[2:]]
    stored = httpx.get(
        f"{gateway_server.url}/api/v1/conversations/{conversation}/messages", headers=headers
    ).json()
    assert [(m["role"], m["content"]) for m in stored["results"]] == [
        ("user", "Hello there"),
        ("assistant", answer),
    ]
    assert (
        stored["results"][1]["model"] == "gpt-4o-mini" and stored["results"][1]["provider"] == "fake-openai"
    )


def test_non_streamed_message_and_conversation_crud(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    key = live_keys["acme"]
    headers = {"Authorization": f"Bearer {key}"}
    conversation = _conversation(gateway_server, key, model="claude-3-5-haiku", temperature=0.2)
    response = httpx.post(
        f"{gateway_server.url}/api/v1/conversations/{conversation}/messages",
        json={"content": "Hi", "max_tokens": 5},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["message"]["role"] == "assistant" and body["message"]["model"] == "claude-3-5-haiku"
    assert body["usage"]["completion_tokens"] == 5 and body["message"]["finish_reason"] == "length"
    renamed = httpx.patch(
        f"{gateway_server.url}/api/v1/conversations/{conversation}",
        json={"title": "Greetings"},
        headers=headers,
    )
    assert renamed.json()["title"] == "Greetings"
    listing = httpx.get(f"{gateway_server.url}/api/v1/conversations", headers=headers).json()
    assert listing["results"][0]["id"] == conversation
    assert (
        httpx.delete(f"{gateway_server.url}/api/v1/conversations/{conversation}", headers=headers).status_code
        == 204
    )
    assert (
        httpx.get(f"{gateway_server.url}/api/v1/conversations/{conversation}", headers=headers).status_code
        == 404
    )


def test_other_tenant_cannot_see_or_answer_in_a_conversation(
    gateway_server: GatewayServer, live_keys: dict[str, str]
) -> None:
    conversation = _conversation(gateway_server, live_keys["acme"])
    foreign = {"Authorization": f"Bearer {live_keys['outsider']}"}
    for method, path in (("GET", ""), ("GET", "/messages"), ("POST", "/messages"), ("GET", "/events")):
        response = httpx.request(
            method,
            f"{gateway_server.url}/api/v1/conversations/{conversation}{path}",
            json={"content": "x"} if method == "POST" else None,
            headers=foreign,
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "conversation_not_found"


async def _ws_events(ws: Any, until: set[str]) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 15))
        events.append(event)
        if event["type"] in until:
            return events


async def test_websocket_chat_stop_drop_and_resume(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    key = live_keys["acme"]
    conversation = _conversation(gateway_server, key)
    ws_url = f"ws://127.0.0.1:{gateway_server.port}/ws/{conversation}"
    # Token in Sec-WebSocket-Protocol, as browsers can send it.
    async with websockets.connect(ws_url, subprotocols=["bearer", key]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"type": "message", "content": "first question"}))
        events = await _ws_events(ws, {"done", "error"})
        assert events[0]["type"] == "start" and events[-1]["type"] == "done"
        assert events[-1]["usage"]["completion_tokens"] > 0

    # Stop: a slow answer is stopped after a few tokens; the partial answer is kept and billed.
    knobs.knobs.update(
        {"provider": "openai", "model": "gpt-4o-mini", "tokens_per_second": 20, "reply_tokens": 200}
    )
    async with websockets.connect(f"{ws_url}?token={key}") as ws:
        await ws.send(json.dumps({"type": "message", "content": "long answer please"}))
        deltas = 0
        while deltas < 3:
            event = json.loads(await asyncio.wait_for(ws.recv(), 15))
            deltas += event["type"] == "delta"
        await ws.send(json.dumps({"type": "stop"}))
        rest = await _ws_events(ws, {"done", "error"})
        done = rest[-1]
        assert done["type"] == "done" and done["stopped"] is True
        assert 3 <= done["usage"]["completion_tokens"] < 200

    # Drop: the client goes away mid-answer; the answer completes anyway and a new socket resumes.
    knobs.knobs.update(
        {"provider": "openai", "model": "gpt-4o-mini", "tokens_per_second": 100, "reply_tokens": 30}
    )
    async with websockets.connect(f"{ws_url}?token={key}") as ws:
        await ws.send(json.dumps({"type": "message", "content": "third question"}))
        seen: list[dict[str, Any]] = []
        while len([e for e in seen if e["type"] == "delta"]) < 2:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
    async with websockets.connect(f"{ws_url}?token={key}") as ws:
        await ws.send(json.dumps({"type": "resume", "last_event_id": seen[-1]["id"]}))
        rest = await _ws_events(ws, {"done", "error"})
    assert rest[-1]["type"] == "done" and rest[-1]["usage"]["completion_tokens"] == 30
    text = "".join(e.get("content", "") for e in [*seen, *rest] if e["type"] == "delta")
    assert len(text.split()) == 30

    stored = httpx.get(
        f"{gateway_server.url}/api/v1/conversations/{conversation}/messages",
        headers={"Authorization": f"Bearer {key}"},
    ).json()["results"]
    assert [m["role"] for m in stored] == ["user", "assistant"] * 3
    assert stored[3]["status"] == "partial" and stored[5]["status"] == "complete"


async def test_websocket_refuses_other_tenants_and_bad_tokens(
    gateway_server: GatewayServer, live_keys: dict[str, str]
) -> None:
    conversation = _conversation(gateway_server, live_keys["acme"])
    ws_url = f"ws://127.0.0.1:{gateway_server.port}/ws/{conversation}"
    async with websockets.connect(f"{ws_url}?token={live_keys['outsider']}") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    async with websockets.connect(f"{ws_url}?token=gwk_bogus") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def _usage_row(world: Any, request_id: str) -> Any:
    from django_tenants.utils import schema_context

    from billing.models import UsageRecord

    with schema_context(world.acme.tenant.schema_name):
        return UsageRecord.objects.get(request_id=request_id)


def _sse_data(text: str) -> list[Any]:
    datas = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


def test_streamed_and_non_streamed_answers_bill_the_same(
    gateway_server: GatewayServer, live_keys: dict[str, str], world: Any, knobs: Any, django_db_blocker: Any
) -> None:
    # Without the cache, or the second request would be an exact hit that costs nothing.
    headers = {"Authorization": f"Bearer {live_keys['acme']}", "Cache-Control": "no-cache"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "same question"}]}
    plain = httpx.post(f"{gateway_server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    streamed = httpx.post(
        f"{gateway_server.url}/v1/chat/completions",
        json=body | {"stream": True, "stream_options": {"include_usage": True}},
        headers=headers,
        timeout=30,
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = _sse_data(streamed.text)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain.json()["choices"][0]["message"]["content"]
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain.json()["usage"]
    with django_db_blocker.unblock():
        a = _usage_row(world, plain.headers["x-request-id"])
        b = _usage_row(world, streamed.headers["x-request-id"])
    assert (a.streamed, b.streamed) == (False, True)
    assert (a.prompt_tokens, a.completion_tokens, a.cost) == (b.prompt_tokens, b.completion_tokens, b.cost)
    assert a.cost > 0


def test_disconnect_mid_stream_keeps_partial_answer_and_bills_what_was_delivered(
    gateway_server: GatewayServer, live_keys: dict[str, str], world: Any, knobs: Any, django_db_blocker: Any
) -> None:
    knobs.knobs.update(
        {"provider": "openai", "model": "gpt-4o-mini", "disconnect_after_tokens": 3, "reply_tokens": 10}
    )
    response = httpx.post(
        f"{gateway_server.url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"Authorization": f"Bearer {live_keys['acme']}", "Cache-Control": "no-cache"},
        timeout=30,
    )
    payloads = _sse_data(response.text)
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p.get("choices"))
    assert len(text.split()) == 3
    errors = [p for p in payloads if "error" in p]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "upstream_disconnected"
    assert payloads[-1]["usage"]["completion_tokens"] == 3
    with django_db_blocker.unblock():
        row = _usage_row(world, response.headers["x-request-id"])
    assert row.outcome == "partial" and row.streamed and row.usage_estimated
    assert row.completion_tokens == 3
    # Nothing is retried after the first token: one upstream call.
    assert knobs.count("openai", "gpt-4o-mini", "total") == 1
