"""A cached request as JSON and back, so that warming can ask the same question again."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from routing.types import ChatMessage, ChatRequest, ContentPart, ResponseFormat, ToolCall, ToolSpec


def request_to_json(request: ChatRequest, model: str) -> dict[str, Any]:
    data = asdict(request)
    data["model"] = model
    data.pop("user", None)  # who asked first is not part of the answer
    data.pop("metadata", None)
    return data


def request_from_json(data: dict[str, Any]) -> ChatRequest:
    fields = dict(data)
    messages = []
    for raw in fields.pop("messages", []):
        content = raw.get("content")
        if isinstance(content, list):
            content = [ContentPart(**part) for part in content]
        messages.append(
            ChatMessage(
                role=raw["role"],
                content=content,
                tool_calls=[ToolCall(**call) for call in raw.get("tool_calls") or []],
                tool_call_id=raw.get("tool_call_id"),
                name=raw.get("name"),
            )
        )
    fields["tools"] = [ToolSpec(**tool) for tool in fields.get("tools") or []]
    if fields.get("response_format"):
        fields["response_format"] = ResponseFormat(**fields["response_format"])
    return ChatRequest(messages=messages, **fields)
