"""Anthropic's messages shapes <-> the gateway's types, so the `anthropic` SDK works unchanged.

Pure functions, no I/O. Errors keep our one shape inside Anthropic's envelope:
`{"type": "error", "error": {"type", "message", "code"}}`.
"""

from __future__ import annotations

import json
import uuid
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

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, "invalid_request", param=param)


def _image_url(source: Any, param: str) -> str:
    if not isinstance(source, dict):
        raise _bad(f"{param}.source: must be an object", f"{param}.source")
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise _bad("image source must be base64 or url", param)


def _tool_result_content(content: Any, param: str) -> str | list[ContentPart]:
    """A tool result's text, or its parts when it carries images (a screenshot tool's answer)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise _bad(f"{param}: must be a string or a list of blocks", param)
    parts: list[ContentPart] = []
    for j, block in enumerate(content):
        if block.get("type") == "text":
            parts.append(ContentPart(type="text", text=_text(block, f"{param}.{j}")))
        elif block.get("type") == "image":
            parts.append(ContentPart(type="image", image_url=_image_url(block.get("source"), f"{param}.{j}")))
        else:
            raise _bad(f"{param}.{j}: unsupported block type '{block.get('type')}'", f"{param}.{j}")
    if all(p.type == "text" for p in parts):
        return "".join(p.text for p in parts)
    return parts


def _text(block: dict[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{param}.text: must be a string", f"{param}.text")
    return text


def _required_string(block: dict[str, Any], name: str, param: str) -> str:
    value = block.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"{param}.{name}: Field required (a string)", f"{param}.{name}")
    return value


def _messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages: must be a non-empty list", "messages")
    out: list[ChatMessage] = []
    for i, message in enumerate(raw):
        param = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _bad(f"{param}.role: must be 'user' or 'assistant'", f"{param}.role")
        content = message.get("content")
        if isinstance(content, str):
            out.append(ChatMessage(role=role, content=content))
            continue
        if not isinstance(content, list):
            raise _bad(f"{param}.content: must be a string or a list of blocks", f"{param}.content")
        parts: list[ContentPart] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            where = f"{param}.content.{j}"
            if kind == "text":
                parts.append(ContentPart(type="text", text=_text(block, where)))
            elif kind == "image":
                parts.append(ContentPart(type="image", image_url=_image_url(block.get("source"), where)))
            elif kind == "tool_use" and role == "assistant":
                tool_input = block.get("input", {})
                if not isinstance(tool_input, dict):
                    raise _bad(f"{where}.input: must be an object", f"{where}.input")
                calls.append(
                    ToolCall(
                        _required_string(block, "id", where),
                        _required_string(block, "name", where),
                        json.dumps(tool_input),
                    )
                )
            elif kind == "tool_result" and role == "user":
                out.append(
                    ChatMessage(
                        role="tool",
                        content=_tool_result_content(block.get("content"), f"{where}.content"),
                        tool_call_id=_required_string(block, "tool_use_id", where),
                        is_error=block.get("is_error") is True,
                    )
                )
            else:
                raise _bad(f"{where}: unsupported block type '{kind}'", where)
        if parts or calls:
            plain = all(p.type == "text" for p in parts)
            text_or_parts: str | list[ContentPart] | None = "".join(p.text for p in parts) if plain else parts
            out.append(ChatMessage(role=role, content=text_or_parts or None, tool_calls=calls))
    return out


def _system(raw: Any) -> list[ChatMessage]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [ChatMessage(role="system", content=raw)] if raw else []
    if isinstance(raw, list):
        if not all(isinstance(b, dict) and b.get("type") == "text" for b in raw):
            raise _bad("system: must be a string or a list of text blocks", "system")
        text = "".join(_text(b, f"system.{i}") for i, b in enumerate(raw))
        return [ChatMessage(role="system", content=text)] if text else []
    raise _bad("system: must be a string or text blocks", "system")


def _tools(body: dict[str, Any]) -> tuple[list[ToolSpec], Any, bool | None]:
    raw_tools = body.get("tools") or []
    if not isinstance(raw_tools, list):
        raise _bad("tools: must be a list", "tools")
    tools = []
    for i, tool in enumerate(raw_tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools.{i}: needs a name", f"tools.{i}")
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise _bad(f"tools.{i}.input_schema: must be a JSON schema object", f"tools.{i}.input_schema")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise _bad(f"tools.{i}.description: must be a string", f"tools.{i}.description")
        tools.append(ToolSpec(tool["name"], description, schema or {"type": "object"}))
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, dict):
        raise _bad("tool_choice: must be an object such as {'type': 'auto'}", "tool_choice")
    parallel: bool | None = None
    mapped: Any = None
    if isinstance(choice, dict):
        kind = choice.get("type")
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
        if kind == "tool":
            mapped = {"name": _required_string(choice, "name", "tool_choice")}
            if mapped["name"] not in {t.name for t in tools}:
                raise _bad(f"tool_choice.name: '{mapped['name']}' is not among tools", "tool_choice.name")
        if mapped is None:
            raise _bad("tool_choice.type: must be auto, any, tool or none", "tool_choice.type")
        if choice.get("disable_parallel_tool_use"):
            parallel = False
    return tools, mapped, parallel


def _num(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"{name}: must be between {low} and {high}", name)
    return float(value)


def _output_format(body: dict[str, Any]) -> ResponseFormat | None:
    """Structured output: `output_config.format` (current) or `output_format` (the beta's name)."""
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise _bad("output_config: must be an object", "output_config")
    fmt = (config or {}).get("format") or body.get("output_format")
    if fmt is None:
        return None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(fmt.get("schema"), dict)
    ):
        raise _bad(
            "output_config.format: must be {'type': 'json_schema', 'schema': {...}}", "output_config.format"
        )
    return ResponseFormat(type="json_schema", name="output", schema=fmt["schema"], strict=True)


def _metadata_user(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _bad("metadata: must be an object", "metadata")
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise _bad("metadata.user_id: must be a string", "metadata.user_id")
    return user or None


def parse_messages_request(body: Any) -> tuple[ChatRequest, bool]:
    if not isinstance(body, dict):
        raise _bad("The body must be a JSON object", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens: Field required (a positive integer)", "max_tokens")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop_sequences: must be a list of strings", "stop_sequences")
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise _bad("top_k: must be a non-negative integer", "top_k")
    tools, tool_choice, parallel = _tools(body)
    request = ChatRequest(
        model=model,
        messages=[*_system(body.get("system")), *_messages(body.get("messages"))],
        max_tokens=max_tokens,
        temperature=_num(body, "temperature", 0, 1),
        top_p=_num(body, "top_p", 0, 1),
        top_k=top_k,
        stop=list(stops),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=_output_format(body),
        user=_metadata_user(body),
    )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: must be a boolean", "stream")
    return request, stream


def _stop_reason(finish_reason: str | None, stop_sequence: str | None) -> str:
    if stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def message_json(result: ChatResult, message_id: str, model: str) -> dict[str, Any]:
    choice = result.choices[0]
    content: list[dict[str, Any]] = []
    if choice.message.text():
        content.append({"type": "text", "text": choice.message.text()})
    for call in choice.message.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _json_or_empty(call.arguments)}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choice.finish_reason, choice.stop_sequence),
        "stop_sequence": choice.stop_sequence,
        "usage": _usage(result.usage),
    }


def _json_or_empty(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}


def _frame(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class AnthropicStreamWriter:
    """Turns stream events into Anthropic's SSE sequence with correct block indices."""

    def __init__(self, message_id: str, model: str, estimated_input_tokens: int) -> None:
        self.message_id = message_id
        self.model = model
        self.estimated_input_tokens = estimated_input_tokens
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", tool_index)
        self._index = -1
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None

    def start(self) -> str:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.estimated_input_tokens, "output_tokens": 0},
        }
        return _frame("message_start", {"type": "message_start", "message": message}) + _frame(
            "ping", {"type": "ping"}
        )

    def _close(self) -> str:
        if self._open is None:
            return ""
        self._open = None
        return _frame("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def event(self, event: StreamEvent) -> str:
        if event.choice != 0:
            return ""
        out = ""
        if event.kind == "text" and event.text:
            if self._open != ("text", -1):
                out += self._close()
                self._index += 1
                self._open = ("text", -1)
                out += _frame(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": self._index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            out += _frame(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._index,
                    "delta": {"type": "text_delta", "text": event.text},
                },
            )
        elif event.kind == "tool_call":
            if self._open != ("tool", event.tool_index):
                out += self._close()
                self._index += 1
                self._open = ("tool", event.tool_index)
                block = {
                    "type": "tool_use",
                    "id": event.tool_call_id or f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": event.tool_name or "",
                    "input": {},
                }
                out += _frame(
                    "content_block_start",
                    {"type": "content_block_start", "index": self._index, "content_block": block},
                )
            if event.arguments:
                out += _frame(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._index,
                        "delta": {"type": "input_json_delta", "partial_json": event.arguments},
                    },
                )
        elif event.kind == "finish":
            self.finish_reason = event.finish_reason
            self.stop_sequence = event.stop_sequence
        return out

    def end(self, usage: Usage) -> str:
        delta = {
            "stop_reason": _stop_reason(self.finish_reason, self.stop_sequence),
            "stop_sequence": self.stop_sequence,
        }
        final_usage = {
            "output_tokens": usage.completion_tokens,
            "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        }
        return (
            self._close()
            + _frame("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
            + _frame("message_stop", {"type": "message_stop"})
        )

    @staticmethod
    def error(message: str, error_type: str = "api_error", code: str = "upstream_error") -> str:
        return _frame(
            "error", {"type": "error", "error": {"type": error_type, "message": message, "code": code}}
        )
