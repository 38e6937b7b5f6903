"""Building the model's input from a conversation, within the model's context window."""

from __future__ import annotations

from chat.models import Conversation, Message
from routing.providers.tokens import estimate_tokens
from routing.types import ChatMessage, ToolCall

# Room kept for the provider's own formatting of each message.
PER_MESSAGE_OVERHEAD = 4


def _to_chat(message: Message) -> ChatMessage:
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in message.extra.get("tool_calls", [])]
    return ChatMessage(role=message.role, content=message.content or None, tool_calls=calls)  # type: ignore[arg-type]


def build_messages(
    conversation: Conversation, history: list[Message], new_text: str, context_window: int, max_tokens: int
) -> list[ChatMessage]:
    """System prompt + as many of the latest turns as fit + the new user message.

    The oldest turns are dropped first; the system prompt and the new message always stay.
    """
    budget = context_window - max_tokens
    system = (
        [ChatMessage(role="system", content=conversation.system_prompt)] if conversation.system_prompt else []
    )
    new = ChatMessage(role="user", content=new_text)
    used = sum(estimate_tokens(m.text()) + PER_MESSAGE_OVERHEAD for m in [*system, new])
    kept: list[ChatMessage] = []
    for message in reversed(history):
        cost = estimate_tokens(message.content) + PER_MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        kept.append(_to_chat(message))
        used += cost
    kept.reverse()
    # A kept history must not start with an answer whose question was trimmed away.
    while kept and kept[0].role != "user":
        kept.pop(0)
    return [*system, *kept, new]
