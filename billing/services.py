"""Settling a request: its usage row and the assistant's message, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction

from billing.models import Outcome, UsageRecord


@dataclass
class Settlement:
    """Everything known about one request once it is over (answered, stopped or failed)."""

    request_id: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    usage_estimated: bool
    cost: Decimal
    cache_status: str
    streamed: bool
    outcome: str
    attempts: int
    latency_ms: int
    ttft_ms: int | None
    user_id: int | None = None
    api_key_id: int | None = None
    conversation_id: uuid.UUID | None = None
    # The assistant message to store with it (conversations only).
    text: str = ""
    finish_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The user's turn that asked, stored with the answer so neither exists without the other.
    user_text: str | None = None
    # That turn's role ("tool" for a tool result) and its `Message.extra` (parts, tool call id).
    user_role: str = "user"
    user_extra: dict[str, Any] = field(default_factory=dict)
    # Filled in by settle_usage: the stored assistant message's id.
    message_id: int | None = None
    # For a cache hit: what the answer would have cost at the model's price (compute_cost of the
    # cached answer's usage); reports show it as the cache's saving.
    cost_saved: Decimal = Decimal(0)


def settle_usage(settlement: Settlement) -> UsageRecord:
    """Writes the usage row and, for a conversation, the assistant message, atomically.

    Runs in the tenant's schema. Idempotent by request id: settling twice (a retried task, a
    reconnecting client) returns the first row and writes nothing more.
    """
    from chat.models import Message, MessageStatus

    with transaction.atomic():
        # A slice, not .first(): no ORDER BY to compile and sort for a unique column (this runs
        # once per answered request; .first() was a tenth of the gateway's CPU under load).
        existing = next(iter(UsageRecord.objects.filter(request_id=settlement.request_id)[:1]), None)
        if existing is not None:
            return existing
        record = UsageRecord.objects.create(
            request_id=settlement.request_id,
            user_id=settlement.user_id,
            api_key_id=settlement.api_key_id,
            conversation_id=settlement.conversation_id,
            model=settlement.model,
            provider=settlement.provider,
            prompt_tokens=settlement.prompt_tokens,
            completion_tokens=settlement.completion_tokens,
            cached_tokens=settlement.cached_tokens,
            usage_estimated=settlement.usage_estimated,
            cost=settlement.cost,
            cost_saved=settlement.cost_saved,
            cache_status=settlement.cache_status,
            streamed=settlement.streamed,
            outcome=settlement.outcome,
            attempts=settlement.attempts,
            latency_ms=settlement.latency_ms,
            ttft_ms=settlement.ttft_ms,
        )
        if settlement.conversation_id is not None:
            if settlement.user_text is not None:
                Message.objects.create(
                    conversation_id=settlement.conversation_id,
                    role=settlement.user_role,
                    content=settlement.user_text,
                    extra=settlement.user_extra,
                )
            status = {
                Outcome.OK: MessageStatus.COMPLETE,
                Outcome.PARTIAL: MessageStatus.PARTIAL,
            }.get(settlement.outcome, MessageStatus.ERROR)  # type: ignore[call-overload]
            answer = Message.objects.create(
                conversation_id=settlement.conversation_id,
                role="assistant",
                content=settlement.text,
                extra=settlement.extra,
                model=settlement.model,
                provider=settlement.provider,
                status=status,
                finish_reason=settlement.finish_reason,
                cache_status=settlement.cache_status,
                prompt_tokens=settlement.prompt_tokens,
                completion_tokens=settlement.completion_tokens,
                cost=settlement.cost,
            )
            settlement.message_id = answer.pk
            # Touching the conversation keeps "newest first" lists right.
            from chat.models import Conversation

            Conversation.objects.filter(pk=settlement.conversation_id).update(updated_at=answer.created_at)
        return record
