"""Reads of conversations, always scoped to their owner (in the tenant's schema)."""

from __future__ import annotations

import html
import itertools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import QuerySet, Sum

from chat.models import SEARCH_CONFIG, Conversation, Message, MessageStatus
from config.errors import ApiError
from tenants.models import Tenant


def conversations_of(user_id: int) -> QuerySet[Conversation]:
    return Conversation.objects.filter(user_id=user_id)


def conversation_for_user(conversation_id: uuid.UUID | str, user_id: int) -> Conversation:
    """The user's conversation, or 404 (also for another user's: ids are not probeable)."""
    try:
        key = uuid.UUID(str(conversation_id))
    except ValueError:
        key = None
    conversation = conversations_of(user_id).filter(pk=key).first() if key else None
    if conversation is None:
        raise ApiError(404, f"No conversation '{conversation_id}'", "conversation_not_found")
    return conversation


def superseded_answer_ids(messages: Sequence[Message]) -> set[int]:
    """Answers replaced by a regenerated one: an answer directly followed by another answer.

    Regenerating keeps the old answer (it was delivered and billed) and appends the new one after
    it, so "the answer to a question" is always the last of the answers that follow it.
    """
    return {
        message.pk
        for message, following in itertools.pairwise(messages)
        if message.role == "assistant" and following.role == "assistant"
    }


def history_of(conversation: Conversation) -> list[Message]:
    """The turns a model sees: user messages and the current answers that delivered something."""
    messages = list(conversation.messages.all())
    replaced = superseded_answer_ids(messages)
    return [
        m
        for m in messages
        if m.pk not in replaced
        and m.status != MessageStatus.ERROR
        and not (m.role == "assistant" and m.content == "" and not m.extra)
    ]


def pending_tool_calls(history: Sequence[Message]) -> dict[str, str]:
    """The tool calls the model is waiting on (id -> tool name): those of the latest answer, when
    it ended by calling tools, that have no result yet."""
    answered: set[str] = set()
    for message in reversed(history):
        if message.role == "tool":
            answered.add(str(message.extra.get("tool_call_id")))
            continue
        if message.role != "assistant" or message.status != MessageStatus.COMPLETE:
            return {}
        calls = message.extra.get("tool_calls", [])
        return {c["id"]: c["name"] for c in calls if c["id"] not in answered}
    return {}


@dataclass
class ThreadEntry:
    message: Message
    # For an answer: the earlier answers to the same question it replaced, oldest first.
    earlier: list[Message] = field(default_factory=list)


def thread_of(conversation: Conversation) -> list[ThreadEntry]:
    """What a reader sees: every message, with regenerated answers folded into their successor."""
    entries: list[ThreadEntry] = []
    pending: list[Message] = []
    messages = list(conversation.messages.all())
    replaced = superseded_answer_ids(messages)
    for message in messages:
        if message.pk in replaced:
            pending.append(message)
            continue
        entries.append(ThreadEntry(message, pending))
        pending = []
    return entries


# --- search ----------------------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+")
MAX_QUERY_WORDS = 12
_MARK_START, _MARK_END = "\x02", "\x03"


@dataclass
class SearchHit:
    conversation: Conversation
    # Safe HTML, escaped, with the matched words in <mark>: the title, and the best matching
    # passage of a message (empty when only the title matched).
    title: str
    snippet: str = ""
    message_id: int | None = None


def _raw_tsquery(text: str) -> str:
    # Only word characters reach the tsquery, so its operators cannot be injected.
    words = _WORD_RE.findall(text.lower())[:MAX_QUERY_WORDS]
    return " & ".join(f"{w}:*" for w in words)


def search_query(text: str) -> SearchQuery | None:
    """Every word of `text` as a prefix ("pyth" finds "Python"), all required."""
    raw = _raw_tsquery(text)
    return SearchQuery(raw, search_type="raw", config=SEARCH_CONFIG) if raw else None


def query_too_common(text: str) -> bool:
    """True when full-text search ignores every word of `text` ("the", "and then"): its
    dictionary drops such stop words, so the query could never match."""
    raw = _raw_tsquery(text)
    if not raw:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT numnode(to_tsquery(%s::regconfig, %s))", [SEARCH_CONFIG, raw])
        row = cursor.fetchone()
    return row is not None and row[0] == 0


def _marked(headline: str) -> str:
    escaped = html.escape(headline)
    return escaped.replace(_MARK_START, "<mark>").replace(_MARK_END, "</mark>")


def search_conversations(user_id: int, text: str, limit: int = 30) -> list[SearchHit]:
    """The user's conversations whose title or messages match, title matches first, then by
    the rank of their best matching message (Postgres full-text search, GIN-indexed)."""
    query = search_query(text)
    if query is None:
        return []
    title_doc = SearchVector("title", config=SEARCH_CONFIG)
    titles: Any = (
        conversations_of(user_id)
        .annotate(doc=title_doc)
        .filter(doc=query)
        .annotate(
            marked=SearchHeadline(
                "title",
                query,
                config=SEARCH_CONFIG,
                start_sel=_MARK_START,
                stop_sel=_MARK_END,
                highlight_all=True,
            )
        )[:limit]
    )
    hits: dict[uuid.UUID, SearchHit] = {c.pk: SearchHit(c, _marked(c.marked)) for c in titles}
    content_doc = SearchVector("content", config=SEARCH_CONFIG)
    messages: Any = (
        Message.objects.filter(conversation__user_id=user_id)
        .annotate(doc=content_doc)
        .filter(doc=query)
        .annotate(
            rank=SearchRank(content_doc, query),
            headline=SearchHeadline(
                "content",
                query,
                config=SEARCH_CONFIG,
                start_sel=_MARK_START,
                stop_sel=_MARK_END,
                max_words=24,
                min_words=8,
            ),
        )
        .select_related("conversation")
        .order_by("-rank", "-created_at")[: limit * 3]
    )
    for message in messages:
        hit = hits.get(message.conversation_id)
        if hit is None:
            if len(hits) >= limit:
                continue
            conversation = message.conversation
            hit = hits[message.conversation_id] = SearchHit(conversation, html.escape(conversation.title))
        if hit.message_id is None:
            hit.snippet = _marked(message.headline)
            hit.message_id = message.pk
    return list(hits.values())


# --- usage -----------------------------------------------------------------------------------


@dataclass
class MonthlyUsage:
    """This month's usage of one user and of their tenant, against the tenant's quotas."""

    user_tokens: int
    user_cost: Decimal
    tenant_tokens: int
    tenant_cost: Decimal
    token_quota: int | None
    cost_quota: Decimal | None
    resets_on: date

    @property
    def tokens_left(self) -> int | None:
        return None if self.token_quota is None else max(self.token_quota - self.tenant_tokens, 0)

    @property
    def percent_used(self) -> int | None:
        """The larger of the token and cost quota shares used, in percent (None: no quota)."""
        shares = []
        if self.token_quota:
            shares.append(self.tenant_tokens / self.token_quota)
        if self.cost_quota:
            shares.append(float(self.tenant_cost / self.cost_quota))
        if self.token_quota == 0 or self.cost_quota == 0:
            shares.append(1.0)
        return min(round(max(shares) * 100), 100) if shares else None


def monthly_usage(tenant: Tenant, user_id: int, today: date | None = None) -> MonthlyUsage:
    """Runs in the tenant's schema. The tenant's totals come from billing (rollups plus the
    latest ledger rows); the user's own from the ledger, this month's rows only."""
    from billing.models import UsageRecord
    from billing.selectors import month_bounds, tenant_month_used

    today = today or datetime.now(UTC).date()
    first, last = month_bounds(today)
    tenant_tokens, tenant_cost = tenant_month_used(tenant, today)
    sums = UsageRecord.objects.filter(
        user_id=user_id, created_at__gte=datetime.combine(first, time.min, tzinfo=UTC)
    ).aggregate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost"))
    return MonthlyUsage(
        user_tokens=int(sums["prompt"] or 0) + int(sums["completion"] or 0),
        user_cost=sums["cost"] or Decimal(0),
        tenant_tokens=tenant_tokens,
        tenant_cost=tenant_cost,
        token_quota=tenant.monthly_token_quota,
        cost_quota=tenant.monthly_cost_quota,
        resets_on=last + timedelta(days=1),
    )
