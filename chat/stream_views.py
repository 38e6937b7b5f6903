"""Answering in a conversation: `POST .../messages` (JSON or SSE) and resuming its events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from chat.api import message_out
from chat.callers import resolve_caller
from chat.gateway import Caller, GatewayCall, answer
from chat.history import build_messages, stored_turn, to_chat, tools_for_history, turn_text
from chat.models import Conversation, Message
from chat.openai_compat import parse_content, parse_options
from chat.runs import RunEvent, latest_run, parse_event_id, read_run, run_belongs_to, start_run
from chat.selectors import conversation_for_user, history_of
from chat.services import (
    Replay,
    Turn,
    conversation_autotitle,
    conversation_open_turn,
    conversation_prepare_edit,
    conversation_prepare_regenerate,
)
from chat.v1_views import json_api, json_body, require_method
from config.errors import ApiError
from routing.catalog import catalog_target, refresh_catalog
from routing.router import plan_route
from routing.types import ChatMessage, ChatRequest
from tenants.models import Tenant
from tenants.schema import tenant_db

MAX_CONTENT_CHARS = 100_000
# Request options the conversation API refuses: a turn stores one answer, and has no place for
# log probabilities. `/v1/chat/completions` has both.
_SINGLE_ANSWER_ONLY = ("n", "logprobs", "top_logprobs")


@dataclass
class MessageIn:
    content: str  # the turn's text: what is stored, shown, searched and titled
    stream: bool
    use_cache: bool
    max_tokens: int | None
    # The turn as the model sees it (image parts, a tool result); None: a user message of `content`.
    turn: ChatMessage | None = None
    # Per-request `ChatRequest` options: tools, tool_choice, response_format, sampling controls.
    options: dict[str, Any] = field(default_factory=dict)


def _parse_turn(body: dict[str, Any]) -> ChatMessage:
    """A user message (text, or OpenAI-style text and image_url parts) or a tool result."""
    role = body.get("role", "user")
    if role not in ("user", "tool"):
        raise ApiError(400, "'role' must be 'user' or 'tool'", "invalid_value", param="role")
    content = parse_content(body.get("content"), "content")
    if role == "tool":
        call_id = body.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ApiError(
                400, "A tool result needs 'tool_call_id'", "missing_required_parameter", param="tool_call_id"
            )
        if content is None:
            raise ApiError(400, "'content' is required", "missing_required_parameter", param="content")
        is_error = body.get("is_error", False)
        if not isinstance(is_error, bool):
            raise ApiError(400, "'is_error' must be a boolean", "invalid_type", param="is_error")
        return ChatMessage(role="tool", content=content, tool_call_id=call_id, is_error=is_error)
    turn = ChatMessage(role="user", content=content)
    if not turn_text(turn).strip() and not turn.has_images():
        raise ApiError(
            400, "'content' must be a non-empty string or list of parts", "invalid_value", param="content"
        )
    return turn


def _parse_options(body: dict[str, Any]) -> dict[str, Any]:
    options = parse_options(body)
    asked = {"n": options["n"] != 1, "logprobs": options["logprobs"], "top_logprobs": options["top_logprobs"]}
    for name in _SINGLE_ANSWER_ONLY:
        if asked[name] not in (None, False):
            raise ApiError(
                400,
                f"'{name}' is not available on conversations (one stored answer a turn); "
                "use /v1/chat/completions",
                "unsupported_parameter",
                param=name,
            )
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ApiError(400, "'top_k' must be a non-negative integer", "invalid_value", param="top_k")
    options["top_k"] = top_k
    # `max_tokens` has its own field (it is capped by the model's context window).
    del options["max_tokens"], options["n"], options["logprobs"], options["top_logprobs"]
    return options


def parse_message_in(body: Any) -> MessageIn:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object", "invalid_json")
    turn = _parse_turn(body)
    content = turn_text(turn)
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
    return MessageIn(
        content,
        bool(body.get("stream", False)),
        bool(body.get("use_cache", True)),
        max_tokens,
        turn,
        _parse_options(body),
    )


def load_conversation(conversation_id: str, user_id: int) -> tuple[Conversation, list[Message]]:
    conversation = conversation_for_user(conversation_id, user_id)
    return conversation, history_of(conversation)


def open_turn(conversation_id: str, user_id: int, data: MessageIn) -> Turn:
    """The conversation and its context for a new turn (checked against waiting tool calls)."""
    return conversation_open_turn(conversation_id, user_id, data.turn or ChatMessage("user", data.content))


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
    turn = data.turn or ChatMessage(role="user", content=data.content)
    options = dict(data.options)
    temperature = options.pop("temperature", None)
    messages = build_messages(conversation, history, turn, context_window, max_tokens)
    options["tools"], options["tool_choice"] = tools_for_history(
        messages, options.get("tools", []), options.get("tool_choice")
    )
    request = ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=conversation.temperature if temperature is None else temperature,
        **options,
    )
    role, text, extra = stored_turn(turn)
    return GatewayCall(
        request=request,
        requested_model=conversation.model or None,
        fallback_model=conversation.fallback_model or None,
        use_cache=data.use_cache,
        conversation_id=conversation.id,
        user_text=text if new_turn else None,
        user_role=role,
        user_extra=extra,
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
    data = MessageIn(
        replay.question.content,
        data.stream,
        data.use_cache,
        data.max_tokens,
        to_chat(replay.question),
        data.options,
    )
    return conversation_call(tenant, conversation, replay.history, data, new_turn=False)


def parse_again_in(body: Any, *, edit: bool) -> MessageIn:
    """An edit's body is a message's (`content` required); a regeneration's needs no content and
    bypasses the cache (asking again means wanting a new answer, not the stored one)."""
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object", "invalid_json")
    if "role" in body:
        raise ApiError(
            400, "Only a question is answered again; 'role' is not allowed", "invalid_value", param="role"
        )
    if edit:
        if not isinstance(body.get("content"), str):
            raise ApiError(400, "An edit's 'content' must be a string", "invalid_value", param="content")
        return parse_message_in(body)
    # The stored question stands in for `content`, so `stream`, `max_tokens` and the options
    # are checked exactly as for a new message.
    data = parse_message_in({**body, "content": "stored question"})
    return MessageIn("", data.stream, False, data.max_tokens, options=data.options)


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
    turn = await tenant_db(caller.tenant, open_turn, conversation_id, caller.user_id, data)
    if turn.stored is not None:
        return waiting_response(turn)
    await refresh_catalog()
    call = conversation_call(caller.tenant, turn.conversation, turn.history, data)
    if not turn.conversation.title and turn.message.role == "user":
        await tenant_db(caller.tenant, conversation_autotitle, turn.conversation.id, data.content)
    return await respond_with_answer(caller, call, data.stream)


def waiting_body(turn: Turn) -> dict[str, Any]:
    assert turn.stored is not None
    return {"message": message_out(turn.stored), "pending_tool_calls": turn.waiting_for}


def waiting_response(turn: Turn) -> JsonResponse:
    """A tool result stored while the answer's other calls still wait for theirs: 202, and no
    model call (the model answers once it has every result)."""
    return JsonResponse(waiting_body(turn), status=202)


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
        # A request no model can serve (images for a model without vision, a schema...) is a 400
        # before the stream opens, as on /v1; the run would only report it as an error event.
        await plan_route(caller.tenant, call.request, call.requested_model, call.fallback_model)
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
