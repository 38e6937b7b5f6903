"""Anthropic wire protocol: messages (plain and SSE), count_tokens and the model list."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from routing.fake_upstream import generation as gen
from routing.fake_upstream.knobs import Knobs, accepts_images
from routing.fake_upstream.serving import (
    admit,
    count_error,
    drop_connection,
    json_response,
    new_id,
    read_json_object,
    retry_headers,
    start_stream,
    state_of,
    stream_events,
    wait_ms,
)

PROVIDER = "anthropic"
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, default = _STATUS_ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", "")
    )
    return {
        "type": "error",
        "error": {"type": kind, "message": message or default or f"Error {status}"},
        "request_id": new_id("req_"),
    }


def error_response(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(error_body(status, message), status=status, headers=headers)


def _sse(event: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _blocks_text(content: Any, where: str) -> tuple[str, int, list[str]]:
    """Words-bearing text, image count and tool-result texts of a content string or block list."""
    if isinstance(content, str):
        return content, 0, []
    if not isinstance(content, list):
        raise BadRequest(f"{where}: Input should be a valid string or list of content blocks")
    texts: list[str] = []
    results: list[str] = []
    images = 0
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "image":
            images += 1
        elif kind == "tool_use":
            texts.append(json.dumps(block.get("input", {})))
        elif kind == "tool_result":
            text, count, _ = _blocks_text(block.get("content", ""), f"{where}.{index}.content")
            images += count
            texts.append(text)
            results.append(text)
        elif kind == "thinking":
            texts.append(str(block.get("thinking", "")))
        elif kind not in ("document", "redacted_thinking", "search_result"):
            raise BadRequest(f"{where}.{index}.type: unknown content block type {kind!r}")
    return " ".join(texts), images, results


def parse_request(body: dict[str, Any]) -> tuple[gen.Prompt, int]:
    """Validate like the real API does and return the prompt and its image count."""
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise BadRequest(f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise BadRequest("model: Input should be a valid string")
    if (
        not isinstance(body["max_tokens"], int)
        or isinstance(body["max_tokens"], bool)
        or body["max_tokens"] < 1
    ):
        raise BadRequest("max_tokens: Input should be a valid integer greater than or equal to 1")
    return parse_messages(body)


def parse_messages(body: dict[str, Any]) -> tuple[gen.Prompt, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    system_text, _, _ = _blocks_text(body.get("system") or "", "system")
    words, images = gen.count_words(system_text), 0
    user_text, results = "", list[str]()
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        text, count, results = _blocks_text(message.get("content", ""), f"messages.{index}.content")
        words += gen.count_words(text)
        images += count
        if message["role"] == "user" and not results:
            user_text = text
    last_role = messages[-1]["role"]
    if last_role == "user" and results:
        return gen.Prompt(words + gen.IMAGE_TOKENS * images, "tool", user_text, " ".join(results)), images
    return gen.Prompt(words + gen.IMAGE_TOKENS * images, last_role, user_text, None), images


def _chosen_tools(body: dict[str, Any], prompt: gen.Prompt) -> list[dict[str, Any]]:
    # Server tools (web search and friends) carry a versioned `type` and no input schema: skip them.
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") in (None, "custom")]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none" or prompt.last_role != "user":
        return []
    forced = choice.get("name") if choice.get("type") == "tool" else None
    if forced is not None and forced not in {tool.get("name") for tool in tools}:
        raise BadRequest(f"tool_choice: tool {forced!r} not found in tools")
    parallel = not choice.get("disable_parallel_tool_use", False)
    return gen.choose_tools(tools, forced, parallel, prompt.user_text)


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    # `output_config.format` is the current spelling; `output_format` was the beta one.
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema") or {}
    return None


def plan_content(
    body: dict[str, Any], prompt: gen.Prompt, knobs: Knobs
) -> tuple[list[dict[str, Any]], str, Any]:
    """(content blocks, stop_reason, stop_sequence); text blocks carry their pieces under "_pieces"."""
    tools = _chosen_tools(body, prompt)
    if tools:
        blocks: list[dict[str, Any]] = []
        if knobs.tool_preamble:
            preamble = gen.plan_text(knobs.tool_preamble, None, [])
            blocks.append({"type": "text", "text": preamble.text, "_pieces": preamble.pieces})
        for tool in tools:
            arguments = gen.tool_arguments(tool.get("input_schema"), prompt.user_text)
            blocks.append(
                {"type": "tool_use", "id": new_id("toolu_"), "name": tool["name"], "input": arguments}
            )
        return blocks, "tool_use", None
    schema = _output_schema(body)
    text = json.dumps(gen.value_for_schema(schema, prompt.user_text)) if schema is not None else None
    stops = body.get("stop_sequences") or []
    plan = gen.plan_text(
        text if text is not None else gen.reply_text(knobs, prompt), body["max_tokens"], stops
    )
    return (
        [{"type": "text", "text": plan.text, "_pieces": plan.pieces}],
        _STOP_REASONS[plan.finish],
        plan.stop_sequence,
    )


def _block_pieces(block: dict[str, Any]) -> list[str]:
    return block["_pieces"] if block["type"] == "text" else gen.split_pieces(json.dumps(block["input"]))


def _public(block: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in block.items() if key != "_pieces"}


def message_payload(
    model: str, prompt: gen.Prompt, blocks: list[dict[str, Any]], stop_reason: str, stop_sequence: Any
) -> dict[str, Any]:
    output_tokens = sum(len(_block_pieces(block)) for block in blocks)
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_public(block) for block in blocks],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(prompt.tokens, output_tokens),
    }


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def stream_parts(
    model: str,
    prompt: gen.Prompt,
    blocks: list[dict[str, Any]],
    stop_reason: str,
    stop_sequence: Any,
    knobs: Knobs,
) -> tuple[bytes, list[bytes], bytes, bytes]:
    """(prologue, token events, epilogue, error event) in the exact order the real API sends them."""
    start: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(prompt.tokens, 1),
    }
    prologue = _sse("message_start", {"type": "message_start", "message": start})
    tokens: list[bytes] = []
    output_tokens = 0
    for index, block in enumerate(blocks):
        is_text = block["type"] == "text"
        opening: dict[str, Any] = (
            {"type": "text", "text": ""}
            if is_text
            else {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        )
        kind, key = ("text_delta", "text") if is_text else ("input_json_delta", "partial_json")
        delta_head = (
            'event: content_block_delta\ndata: {"type":"content_block_delta",'
            f'"index":{index},"delta":{{"type":"{kind}","{key}":'
        )
        structure = (
            b""
            if index == 0
            else _sse("content_block_stop", {"type": "content_block_stop", "index": index - 1})
        )
        structure += _sse(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
        )
        if index == 0:
            structure += _sse("ping", {"type": "ping"})
        if not is_text:
            structure += (delta_head + '""}}\n\n').encode()  # the real API opens with an empty partial
        pieces = _block_pieces(block)
        output_tokens += len(pieces)
        events = [(delta_head + json.dumps(piece) + "}}\n\n").encode() for piece in pieces]
        if index == 0:
            prologue += structure
        else:
            # Glue the structural events to the block's first token so token counting stays exact.
            events = [structure + events[0], *events[1:]] if events else [structure]
        tokens.extend(events)
    epilogue = _sse("content_block_stop", {"type": "content_block_stop", "index": len(blocks) - 1})
    delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    epilogue += _sse(
        "message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}}
    )
    epilogue += _sse("message_stop", {"type": "message_stop"})
    error_status = knobs.error_status if knobs.error_status in _STATUS_ERRORS else 529
    error = error_body(error_status, knobs.error_message)
    return prologue, tokens, epilogue, _sse("error", {"type": "error", "error": error["error"]})


def _authenticated(request: web.Request) -> bool:
    return bool(request.headers.get("x-api-key") or request.headers.get("Authorization"))


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    if body is None:
        return error_response(400, "The request body is not valid JSON.")
    if not _authenticated(request):
        return error_response(401, "x-api-key header is required")
    model: str = body["model"] if isinstance(body.get("model"), str) else ""
    try:
        prompt, images = parse_request(body)
    except BadRequest as exc:
        count_error(request, PROVIDER, model)
        return error_response(400, exc.message)
    streamed = bool(body.get("stream"))
    knobs, failure = admit(request, PROVIDER, model, body, streamed)
    if images and not accepts_images(knobs, model):
        state_of(request).stats.record(PROVIDER, model, "errors")
        return error_response(400, f"The model {model} does not support image input.")
    if failure is not None:
        await wait_ms(knobs.latency_ms)
        return error_response(failure, knobs.error_message, headers=retry_headers(knobs))
    try:
        blocks, stop_reason, stop_sequence = plan_content(body, prompt, knobs)
    except BadRequest as exc:
        state_of(request).stats.record(PROVIDER, model, "errors")
        return error_response(400, exc.message)
    headers = {"request-id": new_id("req_")}
    if not streamed:
        await wait_ms(knobs.latency_ms)
        if knobs.disconnect_after_tokens is not None:
            return drop_connection(request, PROVIDER, model)
        return json_response(
            message_payload(model, prompt, blocks, stop_reason, stop_sequence), headers=headers
        )
    prologue, tokens, epilogue, error = stream_parts(model, prompt, blocks, stop_reason, stop_sequence, knobs)
    response = await start_stream(request, "text/event-stream; charset=utf-8", headers)
    return await stream_events(
        request,
        response,
        knobs,
        prologue=prologue,
        tokens=tokens,
        epilogue=epilogue,
        error_event=error,
        provider=PROVIDER,
        model=model,
    )


async def count_tokens(request: web.Request) -> web.Response:
    """Input tokens by the module's rule; not counted in the call statistics (no generation)."""
    body = await read_json_object(request)
    if body is None:
        return error_response(400, "The request body is not valid JSON.")
    if not _authenticated(request):
        return error_response(401, "x-api-key header is required")
    if not isinstance(body.get("model"), str):
        return error_response(400, "model: Field required")
    try:
        prompt, _ = parse_messages(body)
    except BadRequest as exc:
        return error_response(400, exc.message)
    return json_response({"input_tokens": prompt.tokens})


def list_models_payload(request: web.Request) -> dict[str, Any]:
    models = list(dict.fromkeys([*MODELS, *state_of(request).knobs.configured_models(PROVIDER)]))
    data = [
        {
            "type": "model",
            "id": m,
            "display_name": m.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }
        for m in models
    ]
    return {"data": data, "has_more": False, "first_id": models[0], "last_id": models[-1]}
