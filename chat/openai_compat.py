"""OpenAI's chat-completions shapes <-> the gateway's types. Pure functions, no I/O.

Validation follows OpenAI's: a bad value is a 400 `invalid_request_error` naming the `param`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from config.errors import ApiError
from routing.types import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    ContentPart,
    ResponseFormat,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)

ROLES = {"system", "developer", "user", "assistant", "tool"}


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code, param=param)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"'{name}' must be a number between {low} and {high}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _bad(f"'{name}' must be an integer {bound}", name)
    return value


def _boolean(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"'{name}' must be a boolean", name, "invalid_type")
    return value


def _string(raw: dict[str, Any], name: str, param: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"'{name}' must be a string", param, "invalid_type")
    return value


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    """OpenAI's rule: at most 16 pairs of string keys (64 chars) and string values (512 chars)."""
    raw = body.get("metadata")
    if raw is None:
        return {}
    if (
        not isinstance(raw, dict)
        or len(raw) > 16
        or not all(isinstance(k, str) and len(k) <= 64 for k in raw)
        or not all(isinstance(v, str) and len(v) <= 512 for v in raw.values())
    ):
        raise _bad(
            "'metadata' must be an object of at most 16 string values (keys up to 64 characters, "
            "values up to 512)",
            "metadata",
            "invalid_type",
        )
    return dict(raw)


def parse_content(raw: Any, param: str) -> str | list[ContentPart] | None:
    """A message's `content`: a string, or a list of text and image_url parts (OpenAI's shape)."""
    if raw is None or isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise _bad("content must be a string or a list of content parts", param, "invalid_type")
    parts: list[ContentPart] = []
    for i, part in enumerate(raw):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(ContentPart(type="text", text=part["text"]))
        elif (
            kind == "image_url"
            and isinstance(part.get("image_url"), dict)
            and isinstance(part["image_url"].get("url"), str)
        ):
            parts.append(
                ContentPart(
                    type="image", image_url=part["image_url"]["url"], detail=part["image_url"].get("detail")
                )
            )
        else:
            raise _bad(f"unsupported content part at index {i}", f"{param}[{i}]", "invalid_type")
    return parts


def _message(raw: Any, index: int) -> ChatMessage:
    param = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise _bad("each message must be an object", param, "invalid_type")
    role = raw.get("role")
    if role not in ROLES:
        raise _bad(f"'{role}' is not a valid role", f"{param}.role")
    content = parse_content(raw.get("content"), f"{param}.content")
    tool_calls: list[ToolCall] = []
    raw_calls = raw.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _bad("tool_calls must be a list", f"{param}.tool_calls", "invalid_type")
    for j, call in enumerate(raw_calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad("tool_calls need a function with a name", f"{param}.tool_calls[{j}]")
        # JSON text, as the model wrote it; an object here would reach the model as Python repr.
        arguments = _string(fn, "arguments", f"{param}.tool_calls[{j}].function.arguments")
        call_id = _string(call, "id", f"{param}.tool_calls[{j}].id")
        tool_calls.append(ToolCall(id=call_id or "", name=fn["name"], arguments=arguments or "{}"))
    tool_call_id = _string(raw, "tool_call_id", f"{param}.tool_call_id")
    if role == "tool" and not tool_call_id:
        raise _bad("a tool message needs tool_call_id", f"{param}.tool_call_id", "missing_required_parameter")
    if content is None and not tool_calls:
        raise _bad("message content is required", f"{param}.content", "missing_required_parameter")
    return ChatMessage(
        role="system" if role == "developer" else role,
        content=content,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
        name=_string(raw, "name", f"{param}.name"),
    )


def _tools(body: dict[str, Any]) -> list[ToolSpec]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("tools must be a list", "tools", "invalid_type")
    tools = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad("each tool must be {'type': 'function', 'function': {'name': ...}}", f"tools[{i}]")
        parameters = fn.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad("a tool's parameters must be a JSON schema object", f"tools[{i}].function.parameters")
        tools.append(
            ToolSpec(
                name=fn["name"],
                description=_string(fn, "description", f"tools[{i}].function.description") or "",
                parameters=parameters or {"type": "object", "properties": {}},
                strict=bool(fn.get("strict", False)),
            )
        )
    return tools


def _tool_choice(body: dict[str, Any], tools: list[ToolSpec]) -> str | dict[str, str] | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise _bad("tool_choice 'required' needs tools", "tool_choice")
        return str(choice)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in {t.name for t in tools}:
            raise _bad(f"tool_choice names '{name}', which is not among tools", "tool_choice")
        return {"name": str(name)}
    raise _bad("tool_choice must be auto, none, required or a named function", "tool_choice")


def _response_format(body: dict[str, Any]) -> ResponseFormat | None:
    raw = body.get("response_format")
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    if kind == "json_schema" and isinstance(raw.get("json_schema"), dict):
        spec = raw["json_schema"]
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("schema", {}), dict):
            raise _bad("json_schema needs a name and a schema object", "response_format.json_schema")
        return ResponseFormat(
            type="json_schema",
            name=spec["name"],
            schema=spec.get("schema") or {},
            strict=bool(spec.get("strict")),
        )
    raise _bad("response_format.type must be text, json_object or json_schema", "response_format.type")


def parse_options(body: dict[str, Any]) -> dict[str, Any]:
    """Everything of a chat-completions body but `model`, `messages` and streaming, validated, as
    `ChatRequest` keyword arguments: sampling and output controls, tools, response format.

    Shared by `/v1/chat/completions` and the REST conversation API, so both refuse the same bad
    values with the same messages."""
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop)
    ):
        raise _bad("'stop' must be a string or a list of at most 4 strings", "stop")
    logprobs = bool(_boolean(body, "logprobs"))
    top_logprobs = _integer(body, "top_logprobs", 0, 20)
    if top_logprobs is not None and not logprobs:
        raise _bad("top_logprobs needs logprobs: true", "top_logprobs")
    tools = _tools(body)
    return {
        "max_tokens": _integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1),
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1),
        "n": _integer(body, "n", 1, 128) or 1,
        "stop": list(stop or []),
        "seed": _integer(body, "seed", -(2**63), 2**63 - 1),
        "presence_penalty": _number(body, "presence_penalty", -2, 2),
        "frequency_penalty": _number(body, "frequency_penalty", -2, 2),
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
        "tools": tools,
        "tool_choice": _tool_choice(body, tools),
        "parallel_tool_calls": _boolean(body, "parallel_tool_calls"),
        "response_format": _response_format(body),
        "user": _string(body, "user", "user"),
        "metadata": _metadata(body),
    }


def parse_chat_request(body: Any) -> tuple[ChatRequest, bool, bool]:
    """(request, stream, include_usage) from an OpenAI chat-completions body."""
    if not isinstance(body, dict):
        raise _bad("The body must be a JSON object", "body", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required", "model", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages", "missing_required_parameter")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream", "invalid_type")
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise _bad("stream_options is only allowed with stream: true", "stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise _bad("stream_options must be an object", "stream_options", "invalid_type")
    request = ChatRequest(
        model=model, messages=[_message(m, i) for i, m in enumerate(messages)], **parse_options(body)
    )
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    return request, stream, include_usage


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _logprobs_json(choice_logprobs: Any) -> dict[str, Any] | None:
    if choice_logprobs is None:
        return None
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.token.encode()),
                "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in lp.top],
            }
            for lp in choice_logprobs
        ]
    }


def completion_json(result: ChatResult, completion_id: str, model: str) -> dict[str, Any]:
    choices = []
    for choice in result.choices:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": choice.message.text() or None,
            "refusal": None,
        }
        if choice.message.tool_calls:
            message["tool_calls"] = _tool_calls_json(choice.message.tool_calls)
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": _logprobs_json(choice.logprobs),
                "finish_reason": choice.finish_reason or "stop",
            }
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_json(result.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Turns stream events into OpenAI chunks: one id for all, role in each choice's first delta."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time())
        self._started: set[int] = set()

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> str:
        payload: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage_json(usage)
        return "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n"

    def event(self, event: StreamEvent) -> str | None:
        delta: dict[str, Any] = {}
        if event.choice not in self._started:
            self._started.add(event.choice)
            delta["role"] = "assistant"
            if event.kind != "text":
                delta["content"] = ""
        choice: dict[str, Any] = {
            "index": event.choice,
            "delta": delta,
            "logprobs": None,
            "finish_reason": None,
        }
        if event.kind == "text":
            delta["content"] = event.text
            if event.logprobs:
                choice["logprobs"] = _logprobs_json(event.logprobs)
        elif event.kind == "tool_call":
            call: dict[str, Any] = {"index": event.tool_index, "function": {"arguments": event.arguments}}
            if event.tool_call_id:
                call.update({"id": event.tool_call_id, "type": "function"})
                call["function"]["name"] = event.tool_name or ""
            delta["tool_calls"] = [call]
        elif event.kind == "logprobs":
            choice["logprobs"] = _logprobs_json(event.logprobs)
        elif event.kind == "finish":
            choice["finish_reason"] = event.finish_reason or "stop"
        else:
            return None
        return self._chunk([choice])

    def usage(self, usage: Usage) -> str:
        return self._chunk([], usage)

    @staticmethod
    def error(message: str, code: str, error_type: str = "api_error") -> str:
        body = {"error": {"type": error_type, "message": message, "code": code}}
        return "data: " + json.dumps(body) + "\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
