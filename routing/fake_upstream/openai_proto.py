"""OpenAI wire protocol: chat completions (plain and SSE) and the model list.

The same handlers serve `/llama/v1/...` with provider "llama", standing in for an
OpenAI-compatible Llama server (llama.cpp, vLLM) with its own knobs and statistics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from routing.fake_upstream import generation as gen
from routing.fake_upstream.knobs import Knobs, accepts_images
from routing.fake_upstream.serving import (
    admit,
    count_error,
    drop_connection,
    encode_json,
    json_response,
    new_id,
    read_json_object,
    retry_headers,
    start_stream,
    state_of,
    stream_events,
    wait_ms,
)

FINGERPRINT = "fp_fake_upstream"
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-3.5-turbo", "text-embedding-3-small")
_FINISH = {"stop": "stop", "length": "length", "stop_sequence": "stop"}
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM). Please try again.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_body(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind, code, default = _STATUS_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}")
    )
    return {"error": {"message": message or default, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str | None = None, param: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(error_body(status, message, param), status=status, headers=headers)


async def knob_failure(knobs: Knobs, status: int) -> web.Response:
    await wait_ms(knobs.latency_ms)
    return error_response(status, knobs.error_message, headers=retry_headers(knobs))


def _content_text(content: Any, where: str) -> tuple[str, int]:
    """Text and image count of a message's content (a string or a list of parts)."""
    if content is None or isinstance(content, str):
        return content or "", 0
    if not isinstance(content, list):
        raise BadRequest(f"Invalid type for '{where}': expected a string or an array of parts.", where)
    texts, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        elif kind == "image_url":
            images += 1
        elif kind not in ("input_audio", "file"):
            raise BadRequest(f"Invalid content part type {kind!r} in '{where}'.", where)
    return " ".join(texts), images


def parse_messages(messages: Any) -> tuple[gen.Prompt, int]:
    """The protocol-neutral prompt and the number of images in it."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    words = images = 0
    user_text, last_text = "", ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise BadRequest(
                f"Invalid value for 'messages[{index}]': a role is required.", f"messages[{index}]"
            )
        last_text, count = _content_text(message.get("content"), f"messages[{index}].content")
        images += count
        words += gen.count_words(last_text)
        for call in message.get("tool_calls") or []:
            words += gen.count_words(str((call.get("function") or {}).get("arguments", "")))
        if message["role"] == "user":
            user_text = last_text
    role = messages[-1]["role"]
    last_role = "tool" if role in ("tool", "function") else role
    tool_result = last_text if last_role == "tool" else None
    return gen.Prompt(words + gen.IMAGE_TOKENS * images, last_role, user_text, tool_result), images


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    @property
    def pieces(self) -> list[str]:
        return gen.split_pieces(self.arguments)


@dataclass(slots=True)
class ChoicePlan:
    text: gen.TextPlan | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else _FINISH[self.text.finish if self.text else "stop"]

    @property
    def tokens(self) -> int:
        text = len(self.text.pieces) if self.text else 0
        return text + sum(len(call.pieces) for call in self.tool_calls)


def _chosen_tools(body: dict[str, Any], prompt: gen.Prompt) -> list[dict[str, Any]]:
    tools = [
        t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
    ]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or prompt.last_role != "user":
        return []
    forced = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        forced = (choice.get("function") or {}).get("name")
        if forced not in {tool.get("name") for tool in tools}:
            raise BadRequest(f"Tool choice {forced!r} is not one of the provided tools.", "tool_choice")
    return gen.choose_tools(tools, forced, body.get("parallel_tool_calls") is not False, prompt.user_text)


def _reply_text(body: dict[str, Any], prompt: gen.Prompt, knobs: Knobs) -> str:
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return gen.json_answer(prompt, knobs)
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest(
                "Missing required parameter: 'response_format.json_schema.schema'.", "response_format"
            )
        return json.dumps(gen.value_for_schema(schema, prompt.user_text))
    return gen.reply_text(knobs, prompt)


def _limits(body: dict[str, Any]) -> tuple[int, int | None, list[str]]:
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise BadRequest("Invalid 'n': must be an integer between 1 and 128.", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest(
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1.", "max_tokens"
        )
    stop = body.get("stop") or []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4:
        raise BadRequest("Invalid 'stop': a string or an array of at most 4 strings.", "stop")
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise BadRequest("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    return n, max_tokens, stops


def plan_choices(
    body: dict[str, Any], prompt: gen.Prompt, knobs: Knobs, limits: tuple[int, int | None, list[str]]
) -> list[ChoicePlan]:
    n, max_tokens, stops = limits
    tools = _chosen_tools(body, prompt)
    if tools:
        preamble = gen.plan_text(knobs.tool_preamble, None, []) if knobs.tool_preamble else None
        return [
            ChoicePlan(
                text=preamble,
                tool_calls=[
                    ToolCall(
                        new_id("call_"),
                        tool["name"],
                        json.dumps(gen.tool_arguments(tool.get("parameters"), prompt.user_text)),
                    )
                    for tool in tools
                ],
            )
            for _ in range(n)
        ]
    plan = gen.plan_text(_reply_text(body, prompt, knobs), max_tokens, stops)
    return [ChoicePlan(text=plan) for _ in range(n)]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _logprobs(pieces: list[str], body: dict[str, Any]) -> dict[str, Any] | None:
    if not body.get("logprobs"):
        return None
    top = body.get("top_logprobs") or 0
    return {"content": [gen.logprob_entry(piece, top) for piece in pieces], "refusal": None}


def completion_payload(
    body: dict[str, Any], model: str, prompt: gen.Prompt, plans: list[ChoicePlan]
) -> dict[str, Any]:
    choices = []
    for index, plan in enumerate(plans):
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        if plan.text is not None:
            message["content"] = plan.text.text
        if plan.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in plan.tool_calls
            ]
        logprobs = _logprobs(plan.text.pieces, body) if plan.text else None
        choices.append(
            {"index": index, "message": message, "logprobs": logprobs, "finish_reason": plan.finish_reason}
        )
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(prompt.tokens, sum(plan.tokens for plan in plans)),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def stream_parts(
    body: dict[str, Any], model: str, prompt: gen.Prompt, plans: list[ChoicePlan], knobs: Knobs
) -> tuple[bytes, list[bytes], bytes, bytes]:
    """(prologue, token events, epilogue, error event) of a chat completion SSE stream."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = (
        f'data: {{"id":"{new_id("chatcmpl-")}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":['
    )
    tail = '],"usage":null}\n\n' if include_usage else "]}\n\n"

    def chunk(index: int, delta: str, finish: str | None = None, logprobs: str = "null") -> bytes:
        reason = json.dumps(finish)
        return f'{head}{{"index":{index},"delta":{delta},"logprobs":{logprobs},"finish_reason":{reason}}}{tail}'.encode()

    prologue, epilogue = b"", b""
    streams: list[list[bytes]] = []
    for index, plan in enumerate(plans):
        content = "null" if plan.tool_calls else '""'
        prologue += chunk(index, f'{{"role":"assistant","content":{content},"refusal":null}}')
        events: list[bytes] = []
        # Text first: a model that explains itself ("Let me check.") does so before its calls.
        if plan.text is not None:
            top = body.get("top_logprobs") or 0
            for piece in plan.text.pieces:
                logprobs = "null"
                if body.get("logprobs"):
                    logprobs = json.dumps({"content": [gen.logprob_entry(piece, top)], "refusal": None})
                events.append(chunk(index, json.dumps({"content": piece}), logprobs=logprobs))
        for k, call in enumerate(plan.tool_calls):
            first = {
                "index": k,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk(index, json.dumps({"tool_calls": [first]})))
            for piece in call.pieces:
                delta = {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
                events.append(chunk(index, json.dumps(delta)))
        streams.append(events)
        epilogue += chunk(index, "{}", plan.finish_reason)
    # Choices are interleaved position by position, as the real API does for n > 1.
    tokens = [
        events[i] for i in range(max(map(len, streams), default=0)) for events in streams if i < len(events)
    ]
    if include_usage:
        usage = json.dumps(_usage(prompt.tokens, sum(plan.tokens for plan in plans)))
        epilogue += f'{head}],"usage":{usage}}}\n\n'.encode()
    epilogue += b"data: [DONE]\n\n"
    error = encode_json(error_body(knobs.error_status or 500, knobs.error_message))
    return prologue, tokens, epilogue, b"data: " + error + b"\n\n"


async def chat_completions(request: web.Request, provider: str = "openai") -> web.StreamResponse:
    body = await read_json_object(request)
    if body is None:
        return error_response(400, "We could not parse the JSON body of your request.")
    if not request.headers.get("Authorization"):
        return error_response(401, "You didn't provide an API key.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        count_error(request, provider, "")
        return error_response(400, "you must provide a model parameter", "model")
    try:
        prompt, images = parse_messages(body.get("messages"))
        limits = _limits(body)
    except BadRequest as exc:
        count_error(request, provider, model)
        return error_response(400, exc.message, exc.param)
    streamed = bool(body.get("stream"))
    knobs, failure = admit(request, provider, model, body, streamed)
    if images and not accepts_images(knobs, model):
        state_of(request).stats.record(provider, model, "errors")
        return error_response(
            400, "Invalid content type. image_url is only supported by certain models.", "messages"
        )
    if failure is not None:
        return await knob_failure(knobs, failure)
    try:
        plans = plan_choices(body, prompt, knobs, limits)
    except BadRequest as exc:
        state_of(request).stats.record(provider, model, "errors")
        return error_response(400, exc.message, exc.param)
    headers = {"x-request-id": new_id("req_")}
    if not streamed:
        await wait_ms(knobs.latency_ms)
        if knobs.disconnect_after_tokens is not None:
            return drop_connection(request, provider, model)
        return json_response(completion_payload(body, model, prompt, plans), headers=headers)
    prologue, tokens, epilogue, error = stream_parts(body, model, prompt, plans, knobs)
    response = await start_stream(request, "text/event-stream; charset=utf-8", headers)
    return await stream_events(
        request,
        response,
        knobs,
        prologue=prologue,
        tokens=tokens,
        epilogue=epilogue,
        error_event=error,
        provider=provider,
        model=model,
    )


def _model_catalogue(request: web.Request, provider: str) -> list[str]:
    extra = state_of(request).knobs.configured_models(provider)
    return list(dict.fromkeys([*MODELS, *extra]))


def list_models_payload(request: web.Request, provider: str) -> dict[str, Any]:
    models = _model_catalogue(request, provider)
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"} for m in models]
    return {"object": "list", "data": data}
