"""Answering in a conversation: `POST .../messages` (JSON or SSE) and resuming its events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from chat.api import message_out
from chat.callers import resolve_caller
from chat.gateway import Caller, GatewayCall, answer
from chat.history import build_messages
from chat.models import Conversation, Message
from chat.runs import RunEvent, latest_run, parse_event_id, read_run, run_belongs_to, start_run
from chat.selectors import conversation_for_user, history_of
from chat.services import (
    Replay,
    conversation_autotitle,
    conversation_prepare_edit,
    conversation_prepare_regenerate,
)
from chat.v1_views import json_api, json_body, require_method
from config.errors import ApiError
from routing.catalog import catalog_target, refresh_catalog
from routing.types import ChatRequest
from tenants.models import Tenant
from tenants.schema import tenant_db

MAX_CONTENT_CHARS = 100_000


@dataclass
class MessageIn:
    content: str
    stream: bool
    use_cache: bool
    max_tokens: int | None


def parse_message_in(body: Any) -> MessageIn:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object", "invalid_json")
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ApiError(400, "'content' must be a non-empty string", "invalid_value", param="content")
    if len(content) > MAX_CONTENT_CHARS:
        raise ApiError(
            400,
            f"'content' is longer than {MAX_CONTENT_CHARS} characters",
            "content_too_long",
            param="content",
        )
    for name in ("stream", "use_cache"):
        if name in body and not isinstance(body[name], bool):
            raise ApiError(400, f"'{name}' must be a boolean", "invalid_type", param=name)
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ApiError(400, "'max_tokens' must be a positive integer", "invalid_value", param="max_tokens")
    return MessageIn(content, bool(body.get("stream", False)), bool(body.get("use_cache", True)), max_tokens)


def load_conversation(conversation_id: str, user_id: int) -> tuple[Conversation, list[Message]]:
    conversation = conversation_for_user(conversation_id, user_id)
    return conversation, history_of(conversation)


def conversation_call(
    tenant: Tenant,
    conversation: Conversation,
    history: list[Message],
    data: MessageIn,
    *,
    new_turn: bool = True,
) -> GatewayCall:
    """The gateway call for a new turn: history trimmed to the model's context window.

    `new_turn=False` answers a question that is already stored (regenerate, edit): settlement
    then stores only the answer."""
    model = conversation.model or tenant.primary_model
    target = catalog_target(model)
    context_window = target.context_window if target else 8192
    max_tokens = min(data.max_tokens or (target.max_output_tokens if target else 1024), context_window // 2)
    request = ChatRequest(
        model=model,
        messages=build_messages(conversation, history, data.content, context_window, max_tokens),
        max_tokens=max_tokens,
        temperature=conversation.temperature,
    )
    return GatewayCall(
        request=request,
        requested_model=conversation.model or None,
        fallback_model=conversation.fallback_model or None,
        use_cache=data.use_cache,
        conversation_id=conversation.id,
        user_text=data.content if new_turn else None,
    )


def prepare_again(
    conversation_id: str, user_id: int, edit: tuple[int, str] | None = None
) -> tuple[Conversation, Replay]:
    """Regenerate (no `edit`) or edit-and-resubmit: the question to answer again, and its context."""
    conversation = conversation_for_user(conversation_id, user_id)
    if edit is None:
        return conversation, conversation_prepare_regenerate(conversation)
    return conversation, conversation_prepare_edit(conversation, *edit)


def again_call(tenant: Tenant, conversation: Conversation, replay: Replay, data: MessageIn) -> GatewayCall:
    """The one way both entries (REST, WebSocket) answer a stored question again. `data.content`
    is ignored: the question's stored text is asked."""
    data = MessageIn(replay.question.content, data.stream, data.use_cache, data.max_tokens)
    return conversation_call(tenant, conversation, replay.history, data, new_turn=False)


def parse_again_in(body: Any, *, edit: bool) -> MessageIn:
    """An edit's body is a message's (`content` required); a regeneration's needs no content and
    bypasses the cache (asking again means wanting a new answer, not the stored one)."""
    if edit:
        return parse_message_in(body)
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object", "invalid_json")
    # The stored question stands in for `content`, so `stream` and `max_tokens` are checked
    # exactly as for a new message.
    data = parse_message_in({**body, "content": "stored question"})
    return MessageIn("", data.stream, False, data.max_tokens)


def sse_frame(event: RunEvent) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n"


def sse_response(tenant: str, run_id: str, after: str) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for event in read_run(tenant, run_id, after):
                yield sse_frame(event)
        except ApiError as exc:
            yield f"event: error\ndata: {json.dumps(exc.body())}\n\n"

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@json_api
async def post_message(request: HttpRequest, conversation_id: str) -> HttpResponseBase:
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    data = parse_message_in(json_body(request))
    assert caller.user_id is not None
    conversation, history = await tenant_db(caller.tenant, load_conversation, conversation_id, caller.user_id)
    await refresh_catalog()
    call = conversation_call(caller.tenant, conversation, history, data)
    if not conversation.title:
        await tenant_db(caller.tenant, conversation_autotitle, conversation.id, data.content)
    return await respond_with_answer(caller, call, data.stream)


@json_api
async def regenerate(request: HttpRequest, conversation_id: str) -> HttpResponseBase:
    """Answers the conversation's last question again (its previous answer is kept, superseded)."""
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    data = parse_again_in(json_body(request), edit=False)
    assert caller.user_id is not None
    conversation, replay = await tenant_db(caller.tenant, prepare_again, conversation_id, caller.user_id)
    await refresh_catalog()
    return await respond_with_answer(
        caller, again_call(caller.tenant, conversation, replay, data), data.stream
    )


@json_api
async def edit_message(request: HttpRequest, conversation_id: str, message_id: int) -> HttpResponseBase:
    """Replaces a question's text, drops everything after it, and answers it again."""
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    data = parse_again_in(json_body(request), edit=True)
    assert caller.user_id is not None
    conversation, replay = await tenant_db(
        caller.tenant, prepare_again, conversation_id, caller.user_id, (message_id, data.content)
    )
    await refresh_catalog()
    return await respond_with_answer(
        caller, again_call(caller.tenant, conversation, replay, data), data.stream
    )


async def respond_with_answer(caller: Caller, call: GatewayCall, stream: bool) -> HttpResponseBase:
    """An SSE stream of a background run, or the settled answer as JSON (201)."""
    if stream:
        run_id = await start_run(caller, call)
        response = sse_response(caller.tenant.slug, run_id, "0-0")
        response["x-request-id"] = caller.request_id
        response["x-run-id"] = run_id
        return response
    result = await answer(caller, call)
    message = await tenant_db(caller.tenant, Message.objects.get, pk=result.settlement.message_id)
    settlement = result.settlement
    body = {
        "message": message_out(message),
        "usage": {
            "prompt_tokens": settlement.prompt_tokens,
            "completion_tokens": settlement.completion_tokens,
            "total_tokens": settlement.prompt_tokens + settlement.completion_tokens,
        },
        "cost": str(settlement.cost),
    }
    created = JsonResponse(body, status=201)
    for name, value in result.headers.items():
        created[name] = value
    return created


@json_api
async def conversation_events(request: HttpRequest, conversation_id: str) -> HttpResponseBase:
    """Resumes an answer's events: `Last-Event-ID` (or `?last_event_id=`) says where from;
    without it, the conversation's latest answer from its start."""
    require_method(request, "GET")
    caller = await resolve_caller(request, "chat")
    assert caller.user_id is not None
    conversation, _ = await tenant_db(caller.tenant, load_conversation, conversation_id, caller.user_id)
    last = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if last:
        run_id, after = parse_event_id(last)
    else:
        latest = await latest_run(caller.tenant.slug, conversation.id)
        if latest is None:
            raise ApiError(
                404, "This conversation has no answer in progress or recently finished", "run_not_found"
            )
        run_id, after = latest, "0-0"
    if not await run_belongs_to(caller.tenant.slug, run_id, caller.user_id, conversation.id):
        raise ApiError(404, "No such answer in this conversation", "run_not_found")
    return sse_response(caller.tenant.slug, run_id, after)


def _page_of_messages(conversation_id: str, user_id: int, limit: int, offset: int) -> dict[str, Any]:
    conversation = conversation_for_user(conversation_id, user_id)
    messages = conversation.messages.all()
    total = messages.count()
    return {
        "count": total,
        "limit": limit,
        "offset": offset,
        "results": [message_out(m) for m in messages[offset : offset + limit]],
    }


def _int_param(request: HttpRequest, name: str, default: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > high:
        raise ApiError(400, f"'{name}' must be an integer from 0 to {high}", "invalid_value", param=name)
    return int(raw)


@json_api
async def messages(request: HttpRequest, conversation_id: str) -> HttpResponseBase:
    """GET lists the conversation's messages (oldest first, paginated); POST answers a new one."""
    if request.method == "POST":
        return await post_message(request, conversation_id)
    require_method(request, "GET")
    caller = await resolve_caller(request, "chat")
    assert caller.user_id is not None
    limit = _int_param(request, "limit", 50, 500)
    offset = _int_param(request, "offset", 0, 10**9)
    page = await tenant_db(caller.tenant, _page_of_messages, conversation_id, caller.user_id, limit, offset)
    return JsonResponse(page)
