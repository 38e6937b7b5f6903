"""Answering: the pages' no-script forms (new chat, send, regenerate, edit) through the whole
gateway, and regenerate/edit over the REST API and the WebSocket on the live server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import GatewayServer, World
from tests.ui.conftest import Browser, in_acme

pytestmark = pytest.mark.django_db


def _messages(world: World, conversation_id: Any) -> list[tuple[str, str, str]]:
    from chat.models import Message

    with in_acme(world):
        return [
            (m.role, m.content, m.status) for m in Message.objects.filter(conversation_id=conversation_id)
        ]


def test_no_script_new_chat_send_regenerate_edit(
    member: Browser, world: World, gateway: Any, knobs: Any
) -> None:
    from chat.models import Conversation

    knobs.knobs.update({"provider": "*", "model": "*", "reply_text": "Hello **there**"})
    response = member.post("/c/new", {"content": "What is a monad, really?", "model": ""})
    assert response.status_code == 302
    # Other tests (live servers) may have committed conversations of this member: find ours by
    # where the form sent us.
    assert response["Location"].startswith("/c/")
    with in_acme(world):
        conversation = Conversation.objects.get(
            user_id=world.acme.member.pk, pk=response["Location"].removeprefix("/c/")
        )
    assert conversation.title == "What is a monad, really?"
    assert _messages(world, conversation.pk) == [
        ("user", "What is a monad, really?", "complete"),
        ("assistant", "Hello **there**", "complete"),
    ]
    page = member.get(response["Location"]).content.decode()
    assert "Hello <strong>there</strong>" in page

    assert member.post(f"/c/{conversation.pk}/send", {"content": "And a functor?"}).status_code == 302
    assert member.post(f"/c/{conversation.pk}/regenerate").status_code == 302
    roles = [m[0] for m in _messages(world, conversation.pk)]
    assert roles == ["user", "assistant", "user", "assistant", "assistant"]
    assert "1 earlier answer" in member.get(f"/c/{conversation.pk}").content.decode()

    with in_acme(world):
        first = conversation.messages.filter(role="user").first()
    assert first is not None
    member.post(f"/c/{conversation.pk}/messages/{first.pk}/edit", {"content": "What is a monoid?"})
    assert _messages(world, conversation.pk) == [
        ("user", "What is a monoid?", "complete"),
        ("assistant", "Hello **there**", "complete"),
    ]


def test_no_script_errors_are_explained(member: Browser, world: World, gateway: Any, knobs: Any) -> None:
    from chat.models import Conversation
    from tenants.models import Tenant
    from tenants.selectors import forget_cached_tenants

    with in_acme(world):
        conversation = Conversation.objects.create(user_id=world.acme.member.pk, model="claude-3-5-sonnet")
    Tenant.objects.filter(pk=world.acme.tenant.pk).update(allowed_models=["gpt-4o-mini"])
    forget_cached_tenants()
    page = member.post(f"/c/{conversation.pk}/send", {"content": "hi"}, follow=True).content.decode()
    assert "model is not available to your workspace" in page and "Pick another model" in page
    assert _messages(world, conversation.pk) == []
    empty = member.post(f"/c/{conversation.pk}/send", {"content": "   "}, follow=True).content.decode()
    assert "Type something before sending" in empty


# --- live server: the REST API and the WebSocket ------------------------------------------
# These answers skip the cache (`use_cache: false`): they run in acme, like other tests, and a
# cached answer of one test must not answer another's question.


def _conversation(server: GatewayServer, headers: dict[str, str]) -> str:
    response = httpx.post(server.url + "/api/v1/conversations", json={}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _stored(server: GatewayServer, conversation: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    body = httpx.get(f"{server.url}/api/v1/conversations/{conversation}/messages", headers=headers).json()
    return list(body["results"])


def test_rest_regenerate_and_edit(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    headers = {"Authorization": f"Bearer {live_keys['acme']}"}
    conversation = _conversation(gateway_server, headers)
    base = f"{gateway_server.url}/api/v1/conversations/{conversation}"
    refused = httpx.post(base + "/regenerate", headers=headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "nothing_to_regenerate"

    asked = httpx.post(
        base + "/messages",
        json={"content": "Regenerate me over REST", "use_cache": False},
        headers=headers,
        timeout=30,
    )
    assert asked.status_code == 201
    assert httpx.get(base, headers=headers).json()["title"] == "Regenerate me over REST"

    again = httpx.post(base + "/regenerate", json={"max_tokens": 5}, headers=headers, timeout=30)
    assert again.status_code == 201, again.text
    assert again.json()["usage"]["completion_tokens"] == 5
    stored = _stored(gateway_server, conversation, headers)
    assert [m["role"] for m in stored] == ["user", "assistant", "assistant"]
    assert stored[2]["id"] == again.json()["message"]["id"]

    question = stored[0]["id"]
    edited = httpx.post(
        f"{base}/messages/{question}/edit",
        json={"content": "Edited over REST", "stream": True, "use_cache": False},
        headers=headers,
        timeout=30,
    )
    assert edited.headers["content-type"].startswith("text/event-stream")
    assert "event: done" in edited.text
    stored = _stored(gateway_server, conversation, headers)
    assert (stored[0]["role"], stored[0]["content"]) == ("user", "Edited over REST")
    assert [m["role"] for m in stored] == ["user", "assistant"]

    bad = httpx.post(f"{base}/messages/{stored[1]['id']}/edit", json={"content": "x"}, headers=headers)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "message_not_found"
    empty = httpx.post(f"{base}/messages/{question}/edit", json={"content": ""}, headers=headers)
    assert empty.status_code == 400
    foreign = {"Authorization": f"Bearer {live_keys['outsider']}"}
    assert httpx.post(base + "/regenerate", headers=foreign).status_code == 404


async def _until(ws: Any, kinds: set[str]) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 15))
        events.append(event)
        if event["type"] in kinds:
            return events


async def test_websocket_regenerate_and_edit(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    key = live_keys["acme"]
    headers = {"Authorization": f"Bearer {key}"}
    conversation = _conversation(gateway_server, headers)
    async with websockets.connect(
        f"ws://127.0.0.1:{gateway_server.port}/ws/{conversation}?token={key}"
    ) as ws:
        await ws.send(json.dumps({"type": "regenerate"}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert refused["type"] == "error" and refused["error"]["code"] == "nothing_to_regenerate"

        await ws.send(
            json.dumps({"type": "message", "content": "Regenerate me over a socket", "use_cache": False})
        )
        assert (await _until(ws, {"done", "error"}))[-1]["type"] == "done"
        await ws.send(json.dumps({"type": "regenerate"}))
        done = (await _until(ws, {"done", "error"}))[-1]
        assert done["type"] == "done" and done["message_id"]

        stored = await asyncio.to_thread(_stored, gateway_server, conversation, headers)
        assert [m["role"] for m in stored] == ["user", "assistant", "assistant"]
        edit = {
            "type": "edit",
            "message_id": stored[0]["id"],
            "content": "Edited over a socket",
            "use_cache": False,
        }
        await ws.send(json.dumps(edit))
        assert (await _until(ws, {"done", "error"}))[-1]["type"] == "done"
        await ws.send(json.dumps({"type": "edit", "message_id": "1", "content": "x"}))
        bad = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert bad["error"]["param"] == "message_id"

    stored = await asyncio.to_thread(_stored, gateway_server, conversation, headers)
    assert (stored[0]["role"], stored[0]["content"]) == ("user", "Edited over a socket")
    assert len(stored) == 2


async def test_websocket_refuses_a_cookie_from_another_site(
    gateway_server: GatewayServer, live_keys: dict[str, str], world: Any
) -> None:
    """Cross-site WebSocket hijacking: a page elsewhere cannot ride the user's session."""
    headers = {"Authorization": f"Bearer {live_keys['acme']}"}
    conversation = await asyncio.to_thread(_conversation, gateway_server, headers)
    session = await asyncio.to_thread(_session_cookie, gateway_server, world)
    # The tenant from the query: this resolver may not know that *.localhost is loopback.
    url = f"ws://127.0.0.1:{gateway_server.port}/ws/{conversation}?tenant=acme"
    cookie = {"Cookie": f"sessionid={session}"}
    async with websockets.connect(url, additional_headers=cookie, origin="http://evil.test") as ws:  # type: ignore[arg-type]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    same_site = f"http://127.0.0.1:{gateway_server.port}"
    async with websockets.connect(url, additional_headers=cookie, origin=same_site) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}


def _session_cookie(server: GatewayServer, world: Any) -> str:
    from tests.conftest import PASSWORD

    with httpx.Client(base_url=server.url, headers={"Host": f"acme.localhost:{server.port}"}) as client:
        page = client.get("/login")
        token = page.cookies["csrftoken"]
        signed_in = client.post(
            "/login",
            data={"email": world.acme.member.email, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": f"http://acme.localhost:{server.port}/login"},
        )
        assert signed_in.status_code == 302, signed_in.text
        return str(client.cookies["sessionid"])
