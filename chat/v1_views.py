"""The OpenAI-compatible API (`/v1/...`): the official `openai` SDK works by changing base_url."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from chat.anthropic_compat import AnthropicStreamWriter, message_json, parse_messages_request
from chat.callers import resolve_caller
from chat.gateway import GatewayCall, answer, open_answer_stream
from chat.openai_compat import ChunkWriter, completion_json, parse_chat_request
from config.errors import ApiError
from routing.catalog import catalog_targets, refresh_catalog
from routing.providers.tokens import estimate_request_tokens
from routing.router import check_model_allowed
from routing.types import ProviderError, Usage

AsyncView = Callable[..., Awaitable[HttpResponseBase]]


def json_api(view: AsyncView) -> Any:  # Any: django-stubs does not type async views
    """Async view wrapper: method check, JSON errors in the one shape."""

    @csrf_exempt  # authenticated by bearer credentials, never by a cookie
    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return await view(request, *args, **kwargs)
        except ApiError as exc:
            response = JsonResponse(exc.body(), status=exc.status_code)
            for name, value in exc.headers.items():
                response[name] = value
            return response

    return wrapper


def json_body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", "invalid_json") from exc


def cache_allowed(request: HttpRequest) -> bool:
    """`Cache-Control: no-cache` or `no-store` on a request bypasses the gateway's cache (the
    SDKs can send it through `extra_headers`); the REST API has `use_cache` in its body."""
    directives = request.headers.get("Cache-Control", "").lower()
    return "no-cache" not in directives and "no-store" not in directives


def require_method(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise ApiError(405, f"Use {method} on {request.path}", "method_not_allowed")


@json_api
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    chat_request, stream, include_usage = parse_chat_request(json_body(request))
    call = GatewayCall(
        request=chat_request, requested_model=chat_request.model, use_cache=cache_allowed(request)
    )
    completion_id = "chatcmpl-" + caller.request_id
    if not stream:
        result = await answer(caller, call)
        plain = JsonResponse(completion_json(result.result, completion_id, result.target.name))
        for name, value in result.headers.items():
            plain[name] = value
        return plain
    answer_stream = await open_answer_stream(caller, call)
    writer = ChunkWriter(completion_id, answer_stream.target.name)

    async def body() -> AsyncIterator[str]:
        try:
            async for event in answer_stream.events():
                chunk = writer.event(event)
                if chunk is not None:
                    yield chunk
            if answer_stream.error is not None:
                error: ProviderError = answer_stream.error
                yield writer.error(f"The model stopped answering: {error.message}", error.code)
        finally:
            settlement = await answer_stream.finish()
        if include_usage:
            yield writer.usage(
                Usage(settlement.prompt_tokens, settlement.completion_tokens, settlement.cached_tokens)
            )
        yield writer.done()

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    for name, value in answer_stream.headers.items():
        response[name] = value
    return response


@json_api
async def count_chat_tokens(request: HttpRequest) -> HttpResponseBase:
    """`POST /v1/chat/completions/count_tokens`: the prompt size of an OpenAI-shaped request, as
    the gateway meters it (the estimate admission reserves; tools and images included). The body
    is a chat-completions body, validated the same way; no model is called."""
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    chat_request, _, _ = parse_chat_request(json_body(request))
    await refresh_catalog()
    check_model_allowed(caller.tenant, chat_request.model)
    return JsonResponse(
        {
            "object": "chat.completion.token_count",
            "model": chat_request.model,
            "input_tokens": estimate_request_tokens(chat_request),
        }
    )


@json_api
async def list_models(request: HttpRequest) -> HttpResponseBase:
    require_method(request, "GET")
    caller = await resolve_caller(request, "models")
    await refresh_catalog()
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": target.provider}
        for name, target in sorted(catalog_targets().items())
        if caller.tenant.allows_model(name)
    ]
    return JsonResponse({"object": "list", "data": data})


def anthropic_api(view: AsyncView) -> Any:
    """Like `json_api`, with errors inside Anthropic's envelope so its SDK raises typed errors."""

    @csrf_exempt
    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return await view(request, *args, **kwargs)
        except ApiError as exc:
            error_type = "overloaded_error" if exc.status_code == 503 else exc.error_type
            if error_type not in ANTHROPIC_ERROR_TYPES:
                error_type = "api_error"
            body = {"type": "error", "error": exc.body()["error"] | {"type": error_type}}
            response = JsonResponse(body, status=exc.status_code)
            for name, value in exc.headers.items():
                response[name] = value
            return response

    return wrapper


ANTHROPIC_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
}


@anthropic_api
async def messages(request: HttpRequest) -> HttpResponseBase:
    """`POST /v1/messages` in Anthropic's shape, through the same gateway."""
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    chat_request, stream = parse_messages_request(json_body(request))
    call = GatewayCall(
        request=chat_request, requested_model=chat_request.model, use_cache=cache_allowed(request)
    )
    message_id = "msg_" + caller.request_id
    if not stream:
        result = await answer(caller, call)
        plain = JsonResponse(message_json(result.result, message_id, result.target.name))
        for name, value in result.headers.items():
            plain[name] = value
        return plain
    answer_stream = await open_answer_stream(caller, call)
    writer = AnthropicStreamWriter(
        message_id, answer_stream.target.name, estimate_request_tokens(chat_request)
    )

    async def body() -> AsyncIterator[str]:
        yield writer.start()
        try:
            async for event in answer_stream.events():
                frame = writer.event(event)
                if frame:
                    yield frame
        finally:
            settlement = await answer_stream.finish()
        if answer_stream.error is not None:
            yield writer.error(
                f"The model stopped answering: {answer_stream.error.message}",
                "api_error",
                answer_stream.error.code,
            )
            return
        yield writer.end(
            Usage(settlement.prompt_tokens, settlement.completion_tokens, settlement.cached_tokens)
        )

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in answer_stream.headers.items():
        response[name] = value
    return response


@anthropic_api
async def count_message_tokens(request: HttpRequest) -> HttpResponseBase:
    """`POST /v1/messages/count_tokens`: the prompt's size as the gateway meters it."""
    require_method(request, "POST")
    caller = await resolve_caller(request, "chat")
    body = json_body(request)
    if isinstance(body, dict):
        body = {"max_tokens": 1} | body
    chat_request, _ = parse_messages_request(body)
    await refresh_catalog()
    check_model_allowed(caller.tenant, chat_request.model)
    return JsonResponse({"input_tokens": estimate_request_tokens(chat_request)})
