"""Writes for conversations (creation, rename, delete, titles, answering again)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q

from chat.history import stored_turn
from chat.models import Conversation, Message
from chat.selectors import conversation_for_user, history_of, pending_tool_calls
from config.errors import ApiError
from routing.router import check_model_allowed
from routing.types import ChatMessage
from tenants.models import Tenant

TITLE_MAX_CHARS = 60


def conversation_create(*, tenant: Tenant, user_id: int, **fields: Any) -> Conversation:
    if fields.get("model"):
        check_model_allowed(tenant, fields["model"])
    if fields.get("fallback_model"):
        check_model_allowed(tenant, fields["fallback_model"])
    return Conversation.objects.create(user_id=user_id, **fields)


def conversation_update(conversation: Conversation, *, tenant: Tenant, **fields: Any) -> Conversation:
    for name in ("model", "fallback_model"):
        if fields.get(name):
            check_model_allowed(tenant, fields[name])
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.save()
    return conversation


def title_from_text(text: str) -> str:
    """A short title from a question: its first non-empty line, Markdown markers trimmed, cut at
    a word boundary."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split()).lstrip("#>*-` ").rstrip("`")
    if len(line) <= TITLE_MAX_CHARS:
        return line
    cut = line[: TITLE_MAX_CHARS - 1]
    if " " in cut[TITLE_MAX_CHARS // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "…"


def conversation_autotitle(conversation_id: uuid.UUID, text: str) -> str | None:
    """Titles an untitled conversation from its first question; returns the title it set.

    No model call: it costs nothing, is there before the answer starts, and cannot fail or
    leak anything the user did not write. A title the user set is never overwritten.
    """
    title = title_from_text(text)
    if not title:
        return None
    updated = Conversation.objects.filter(pk=conversation_id, title="").update(title=title)
    return title if updated else None


@dataclass
class Replay:
    """A question to answer again: the turns before it (the model's context) and the question."""

    history: list[Message]
    question: Message


def conversation_prepare_regenerate(conversation: Conversation) -> Replay:
    """The last question and what came before it; its current answer leaves the model's context.

    Nothing is deleted: the old answer stays in the conversation (it was delivered and billed)
    and the new one, stored after it, supersedes it (`chat.selectors.superseded_answer_ids`).
    """
    history = history_of(conversation)
    questions = [index for index, message in enumerate(history) if message.role == "user"]
    if not questions:
        raise ApiError(409, "This conversation has no question to answer again", "nothing_to_regenerate")
    last = questions[-1]
    return Replay(history[:last], history[last])


def conversation_prepare_edit(conversation: Conversation, message_id: int, content: str) -> Replay:
    """Replaces a question's text and truncates the conversation after it, atomically; the
    question is then answered again like a regenerated one."""
    with transaction.atomic():
        message = conversation.messages.select_for_update().filter(pk=message_id, role="user").first()
        if message is None:
            raise ApiError(
                404, f"No question {message_id} in this conversation", "message_not_found", param="message_id"
            )
        conversation.messages.filter(
            Q(created_at__gt=message.created_at) | Q(created_at=message.created_at, pk__gt=message.pk)
        ).delete()
        message.content = content
        if message.extra.get("parts"):
            # The new text replaces the question's text parts; its images stay.
            images = [part for part in message.extra["parts"] if part.get("type") != "text"]
            message.extra["parts"] = [{"type": "text", "text": content}, *images]
        message.save(update_fields=["content", "extra"])
    return conversation_prepare_regenerate(conversation)


@dataclass
class Turn:
    """A new turn checked against the conversation: the context to answer it in, or, for a tool
    result while other calls of the same answer still wait for theirs, the stored result."""

    conversation: Conversation
    history: list[Message]
    message: ChatMessage
    stored: Message | None = None
    waiting_for: list[str] = field(default_factory=list)


def conversation_open_turn(conversation_id: str, user_id: int, message: ChatMessage) -> Turn:
    """Checks a user message or tool result against the tool calls the model is waiting on.

    While an answer's tool calls wait for results, a user message is refused (every provider
    refuses a call without its result). A tool result must answer one of the waiting calls; it
    gets the call's tool name (Ollama matches results by name). The model answers once the last
    one arrives: earlier ones are stored at once, the last with the answer. The conversation row
    is locked so two results sent together cannot both think they are the last or the first.
    """
    with transaction.atomic():
        conversation = conversation_for_user(conversation_id, user_id)
        Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        history = history_of(conversation)
        pending = pending_tool_calls(history)
        if message.role == "user":
            if pending:
                raise ApiError(
                    409,
                    "The last answer called tools; send a message with role 'tool' for each call "
                    f"first (waiting for: {', '.join(pending)})",
                    "tool_results_pending",
                )
            return Turn(conversation, history, message)
        call_id = message.tool_call_id or ""
        if call_id not in pending:
            waiting = f"waiting for: {', '.join(pending)}" if pending else "no call is waiting for a result"
            raise ApiError(
                409 if not pending else 400,
                f"'{call_id}' is not a tool call waiting for its result ({waiting})",
                "no_pending_tool_call" if not pending else "unknown_tool_call_id",
                param="tool_call_id",
            )
        message.name = pending.pop(call_id)
        if not pending:
            return Turn(conversation, history, message)
        role, content, extra = stored_turn(message)
        stored = Message.objects.create(conversation=conversation, role=role, content=content, extra=extra)
        return Turn(conversation, history, message, stored, list(pending))
