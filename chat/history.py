"""Building the model's input from a conversation, within the model's context window.

A stored `Message` keeps its text in `content` (what is shown, searched and titled) and what
only the model needs in `extra`: a user turn's content parts (`parts`, images included, in
OpenAI's shape), an answer's `tool_calls`, a tool result's `tool_call_id`, tool `name` and
`is_error`. `to_chat` and `stored_turn` translate between the two.
"""

from __future__ import annotations

from typing import Any

from chat.models import Conversation, Message
from chat.openai_compat import parse_content
from routing.providers.openai_adapter import openai_content_part
from routing.providers.tokens import estimate_message_tokens
from routing.types import ChatMessage, ToolCall, ToolChoice, ToolSpec


def to_chat(message: Message) -> ChatMessage:
    extra = message.extra
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in extra.get("tool_calls", [])]
    if message.role == "tool":
        return ChatMessage(
            role="tool",
            content=message.content,
            tool_call_id=extra.get("tool_call_id"),
            name=extra.get("name"),
            is_error=bool(extra.get("is_error")),
        )
    content = parse_content(extra["parts"], "content") if extra.get("parts") else message.content or None
    return ChatMessage(role=message.role, content=content, tool_calls=calls)  # type: ignore[arg-type]


def turn_text(turn: ChatMessage) -> str:
    """A turn's text as stored in `Message.content`: its text parts, a paragraph each."""
    if isinstance(turn.content, list):
        return "\n\n".join(part.text for part in turn.content if part.type == "text")
    return turn.content or ""


def stored_turn(turn: ChatMessage) -> tuple[str, str, dict[str, Any]]:
    """(role, content, extra) of a user or tool turn, as `Message` stores it."""
    extra: dict[str, Any] = {}
    if isinstance(turn.content, list):
        extra["parts"] = [openai_content_part(part) for part in turn.content]
    if turn.role == "tool":
        extra |= {"tool_call_id": turn.tool_call_id, "name": turn.name}
        if turn.is_error:
            extra["is_error"] = True
    return turn.role, turn_text(turn), extra


def _answered_calls_only(turns: list[ChatMessage], new: ChatMessage) -> list[ChatMessage]:
    """Drops tool calls without a result (an answer stopped mid-call) and results without their
    call: providers refuse either. An answer left with nothing is dropped too."""
    results = {t.tool_call_id for t in [*turns, new] if t.role == "tool"}
    calls = {c.id for t in turns for c in t.tool_calls}
    kept: list[ChatMessage] = []
    for turn in turns:
        if turn.role == "tool" and turn.tool_call_id not in calls:
            continue
        if turn.tool_calls:
            turn.tool_calls = [c for c in turn.tool_calls if c.id in results]
            if not turn.tool_calls and not turn.text() and not turn.has_images():
                continue
        kept.append(turn)
    return kept


def build_messages(
    conversation: Conversation, history: list[Message], new: ChatMessage, context_window: int, max_tokens: int
) -> list[ChatMessage]:
    """System prompt + as many of the latest turns as fit + the new turn.

    The oldest exchanges are dropped first, whole: what is kept starts at a user message, so a tool
    call is never separated from its result. The system prompt and the new turn always stay; when
    the new turn is a tool result, so does the exchange it belongs to (the question and the calls
    it answers, which the model needs to make sense of it).
    """
    budget = context_window - max_tokens
    system = (
        [ChatMessage(role="system", content=conversation.system_prompt)] if conversation.system_prompt else []
    )
    turns = _answered_calls_only([to_chat(m) for m in history], new)
    current = len(turns)
    if new.role == "tool":
        questions = [index for index, turn in enumerate(turns) if turn.role == "user"]
        current = questions[-1] if questions else 0
    pinned = [*turns[current:], new]
    used = sum(estimate_message_tokens(m) for m in [*system, *pinned])
    kept: list[ChatMessage] = []
    for turn in reversed(turns[:current]):
        cost = estimate_message_tokens(turn)
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    # A kept history must not start with an answer (or a tool result) whose question was trimmed.
    while kept and kept[0].role != "user":
        kept.pop(0)
    return [*system, *kept, *pinned]


def tools_for_history(
    messages: list[ChatMessage], tools: list[ToolSpec], tool_choice: ToolChoice | None
) -> tuple[list[ToolSpec], ToolChoice | None]:
    """The request's tools, or, when it offers none but the history has tool calls, those tools
    back as placeholders that cannot be called (`tool_choice: "none"`).

    Tools are per request, but the calls stay in the conversation, and Anthropic refuses a
    history with tool calls unless the request defines tools."""
    names = list(dict.fromkeys(call.name for message in messages for call in message.tool_calls))
    if tools or not names:
        return tools, tool_choice
    placeholders = [ToolSpec(name, "Used earlier in this conversation; not offered now.") for name in names]
    return placeholders, "none"
