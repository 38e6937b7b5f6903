"""Ollama native protocol: `/api/chat` (NDJSON stream by default), `/api/tags`, `/api/version`."""

from __future__ import annotations

import hashlib
import json
import time
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
    retry_headers,
    start_stream,
    state_of,
    stream_events,
    wait_ms,
)

PROVIDER = "ollama"
MODELS = ("llama3.2:latest", "llava:latest", "smollm2:135m")
_DONE_REASONS = {"stop": "stop", "length": "length", "stop_sequence": "stop"}
_FAKE_NS_PER_TOKEN = 10_000_000  # reported eval durations: a plausible 100 tokens/s


class BadRequest(Exception):
    pass


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


def _created_at() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def parse_messages(messages: Any) -> tuple[gen.Prompt, int]:
    if not isinstance(messages, list):
        raise BadRequest("messages must be an array")
    words = images = 0
    user_text, last_text, last_role = "", "", "user"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
            raise BadRequest(f"invalid message at index {index}: content must be a string")
        last_text, last_role = message.get("content", ""), message.get("role", "user")
        words += gen.count_words(last_text)
        images += len(message.get("images") or [])
        for call in message.get("tool_calls") or []:
            words += gen.count_words(json.dumps((call.get("function") or {}).get("arguments", {})))
        if last_role == "user":
            user_text = last_text
    tool_result = last_text if last_role == "tool" else None
    return gen.Prompt(words + gen.IMAGE_TOKENS * images, last_role, user_text, tool_result), images


def _chosen_tools(body: dict[str, Any], prompt: gen.Prompt) -> list[dict[str, Any]]:
    tools = [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if not tools or prompt.last_role != "user":
        return []
    return gen.choose_tools(tools, None, True, prompt.user_text)


def _reply(body: dict[str, Any], prompt: gen.Prompt, knobs: Knobs) -> str:
    fmt = body.get("format")
    if fmt == "json":
        return gen.json_answer(prompt, knobs)
    if isinstance(fmt, dict):
        return json.dumps(gen.value_for_schema(fmt, prompt.user_text))
    return gen.reply_text(knobs, prompt)


def _final(
    model: str, prompt: gen.Prompt, eval_count: int, done_reason: str, message: dict[str, Any]
) -> dict[str, Any]:
    eval_ns = eval_count * _FAKE_NS_PER_TOKEN
    return {
        "model": model,
        "created_at": _created_at(),
        "message": message,
        "done_reason": done_reason,
        "done": True,
        "total_duration": eval_ns + 2_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": prompt.tokens,
        "prompt_eval_duration": 1_000_000,
        "eval_count": eval_count,
        "eval_duration": eval_ns,
    }


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return error_response(400, "invalid JSON in request body")
    if not isinstance(body, dict):
        return error_response(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_response(400, "model is required")
    try:
        prompt, images = parse_messages(body.get("messages") or [])
    except BadRequest as exc:
        count_error(request, PROVIDER, model)
        return error_response(400, str(exc))
    streamed = body.get("stream", True) is not False
    knobs, failure = admit(request, PROVIDER, model, body, streamed)
    if images and not accepts_images(knobs, model):
        state_of(request).stats.record(PROVIDER, model, "errors")
        return error_response(400, f"model {model!r} does not support images")
    if failure is not None:
        await wait_ms(knobs.latency_ms)
        return error_response(
            failure, knobs.error_message or f"fake upstream error {failure}", retry_headers(knobs)
        )

    options = body.get("options") or {}
    num_predict = options.get("num_predict")
    max_tokens = num_predict if isinstance(num_predict, int) and num_predict > 0 else None
    stop = options.get("stop") or []
    tools = _chosen_tools(body, prompt)
    tool_calls = [
        {
            "function": {
                "index": i,
                "name": t["name"],
                "arguments": gen.tool_arguments(t.get("parameters"), prompt.user_text),
            }
        }
        for i, t in enumerate(tools)
    ]
    plan = (
        None
        if tool_calls
        else gen.plan_text(_reply(body, prompt, knobs), max_tokens, [stop] if isinstance(stop, str) else stop)
    )
    preamble = gen.plan_text(knobs.tool_preamble, None, []) if tool_calls and knobs.tool_preamble else None
    eval_count = sum(len(gen.split_pieces(json.dumps(c["function"]["arguments"]))) for c in tool_calls)
    eval_count = len(plan.pieces) if plan else eval_count + (len(preamble.pieces) if preamble else 0)
    done_reason = _DONE_REASONS[plan.finish] if plan else "stop"

    if not streamed:
        await wait_ms(knobs.latency_ms)
        if knobs.disconnect_after_tokens is not None:
            return drop_connection(request, PROVIDER, model)
        content = plan.text if plan else (preamble.text if preamble else "")
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return json_response(_final(model, prompt, eval_count, done_reason, message))

    created = _created_at()
    head = f'{{"model":{json.dumps(model)},"created_at":"{created}","message":{{"role":"assistant","content":'
    if plan:
        tokens = [f'{head}{json.dumps(piece)}}},"done":false}}\n'.encode() for piece in plan.pieces]
    else:
        # Ollama sends all tool calls in one chunk, complete, before the final "done" line.
        chunk = {
            "model": model,
            "created_at": created,
            "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
            "done": False,
        }
        tokens = (
            [f'{head}{json.dumps(piece)}}},"done":false}}\n'.encode() for piece in preamble.pieces]
            if preamble
            else []
        )
        tokens.append(encode_json(chunk) + b"\n")
    epilogue = (
        encode_json(_final(model, prompt, eval_count, done_reason, {"role": "assistant", "content": ""}))
        + b"\n"
    )
    error = (
        encode_json({"error": knobs.error_message or "an error was encountered while running the model"})
        + b"\n"
    )
    response = await start_stream(request, "application/x-ndjson", {})
    return await stream_events(
        request,
        response,
        knobs,
        prologue=b"",
        tokens=tokens,
        epilogue=epilogue,
        error_event=error,
        provider=PROVIDER,
        model=model,
    )


def tags_payload(request: web.Request) -> dict[str, Any]:
    models = list(dict.fromkeys([*MODELS, *state_of(request).knobs.configured_models(PROVIDER)]))
    details = {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "1B",
        "quantization_level": "Q4_K_M",
    }
    return {
        "models": [
            {
                "name": m,
                "model": m,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 1_000_000_000,
                "digest": hashlib.sha256(m.encode()).hexdigest(),
                "details": details,
            }
            for m in models
        ]
    }
