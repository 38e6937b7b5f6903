"""The cache in front of every provider call: exact layer, then semantic layer with guards.

The gateway asks `cache_lookup` before routing and, after a complete answer was settled, hands it
to `cache_store_later`, which writes off the request path. The cache never fails a request: any
error inside it is logged and answered as a miss.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db.models import Q
from django_tenants.utils import tenant_context

from billing.privacy import register_erasure_hook
from config.metrics import count_cache_lookup
from config.tracing import span
from routing.cache import stats
from routing.cache.embedding import Embedding, embed_async, get_embedder
from routing.cache.exact import ExactEntry, bump_generation, exact_get, exact_purge, exact_put, generation
from routing.cache.keys import CacheKeys, bypass_reason, cache_keys, embedding_text
from routing.cache.semantic import (
    record_hits,
    semantic_candidates,
    semantic_delete,
    semantic_purge,
    semantic_store,
)
from routing.cache.serialise import request_to_json
from routing.cache.verifier import verify
from routing.catalog import catalog_target, model_family, refresh_catalog
from routing.models import CacheEntry
from routing.pricing import compute_cost
from routing.types import ChatRequest, StreamEvent, Usage
from tenants.models import Tenant
from tenants.schema import active_schema_name, give_back_connection, tenant_db

log = logging.getLogger(__name__)


@dataclass
class CacheHit:
    text: str  # the cached answer (assistant message content)
    kind: str  # "exact" | "semantic"
    similarity: float
    saved_usage: Usage  # the usage the original answer cost (tokens saved)
    model: str  # the model that produced it
    entry_id: int | None = None
    saved_cost: Decimal = Decimal(0)


def hit_stream_events(hit: CacheHit, chunk_chars: int = 48) -> list[StreamEvent]:
    """A cached answer as the events a live stream would carry (text deltas at word boundaries,
    then a "stop" finish), so every entry point streams a hit in its own protocol. No usage
    event: nothing was used upstream (the gateway reports what it bills)."""
    events, start = [], 0
    text = hit.text
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space if space > start else end
        events.append(StreamEvent(kind="text", text=text[start:end]))
        start = end
    events.append(StreamEvent(kind="finish", finish_reason="stop"))
    return events


async def _family(model: str) -> str:
    await refresh_catalog()
    try:
        return model_family(model)
    except SynchronousOnlyOperation:  # the catalog went stale between the two calls
        return await sync_to_async(model_family)(model)


def _saved_cost(model: str, usage: Usage, stored: Decimal) -> Decimal:
    """What the tenant would have paid for this answer from the model it asked for now."""
    try:
        target = catalog_target(model)
    except SynchronousOnlyOperation:
        target = None
    return compute_cost(target, usage) if target is not None else stored


# Embeddings computed by a lookup, reused by the store that follows the miss: most misses are
# stored a few seconds later, so a small, short-lived memory saves the second embedding.
_recent_embeddings: OrderedDict[str, tuple[float, Embedding]] = OrderedDict()
_RECENT_SECONDS = 300.0
_RECENT_MAX = 2000


def _remember_embedding(exact: str, embedding: Embedding) -> None:
    _recent_embeddings[exact] = (time.monotonic() + _RECENT_SECONDS, embedding)
    _recent_embeddings.move_to_end(exact)
    while len(_recent_embeddings) > _RECENT_MAX:
        _recent_embeddings.popitem(last=False)


def _recalled_embedding(exact: str) -> Embedding | None:
    remembered = _recent_embeddings.pop(exact, None)
    return remembered[1] if remembered and remembered[0] > time.monotonic() else None


async def cache_lookup(
    tenant: Tenant, request: ChatRequest, model: str, use_cache: bool
) -> tuple[CacheHit | None, str]:
    """(hit, "exact" | "semantic") or (None, "miss" | "bypass:<why>")."""
    reason = bypass_reason(tenant, request, use_cache)
    if reason:
        stats.count_later(tenant.slug, bypasses=1)
        count_cache_lookup(tenant.slug, "bypass")
        return None, f"bypass:{reason}"
    try:
        hit = await _lookup(tenant, request, model)
    except Exception:
        log.exception("cache lookup failed for tenant %s; answering as a miss", tenant.slug)
        stats.count_later(tenant.slug, errors=1)
        count_cache_lookup(tenant.slug, "error")
        return None, "bypass:error"
    if hit is None:
        stats.count_later(tenant.slug, misses=1)
        count_cache_lookup(tenant.slug, "miss")
        return None, "miss"
    stats.count_hit_later(tenant.slug, hit.kind, hit.saved_usage, hit.saved_cost)
    count_cache_lookup(tenant.slug, hit.kind, hit.saved_usage.total_tokens, hit.saved_cost)
    if hit.entry_id is not None:
        _count_entry_hit(tenant, hit.entry_id)
    return hit, hit.kind


# Hits per entry (warming refreshes the most served), written at most once a second per tenant
# and process: one UPDATE per hit was the largest part of the cache's own work on an exact hit
# (benchmarks/cache_bench.sh, profiled), and a hot entry's row lock serialised its hits.
_HIT_FLUSH_SECONDS = 1.0
_hit_counts: dict[str, tuple[Tenant, Counter[int]]] = {}


def _count_entry_hit(tenant: Tenant, entry_id: int) -> None:
    pending = _hit_counts.get(tenant.schema_name)
    if pending is None:
        pending = _hit_counts[tenant.schema_name] = (tenant, Counter())
        _background(_flush_hits_later(tenant.schema_name))
    pending[1][entry_id] += 1


async def _flush_hits_later(schema_name: str) -> None:
    # Short naps, so that cache_drain (which writes the counts itself) need not wait a second.
    deadline = time.monotonic() + _HIT_FLUSH_SECONDS
    while schema_name in _hit_counts and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await _flush_hits(schema_name)


async def _flush_hits(schema_name: str) -> None:
    pending = _hit_counts.pop(schema_name, None)
    if pending:
        await tenant_db(pending[0], record_hits, dict(pending[1]))


async def _lookup(tenant: Tenant, request: ChatRequest, model: str) -> CacheHit | None:
    keys = cache_keys(tenant, request, await _family(model))
    limit = request.max_tokens
    entry = await exact_get(tenant.slug, keys.exact, tenant.cache_ttl_seconds)
    if entry is not None and (limit is None or entry.completion_tokens <= limit):
        usage = Usage(prompt_tokens=entry.prompt_tokens, completion_tokens=entry.completion_tokens)
        return CacheHit(
            entry.answer, "exact", 1.0, usage, entry.model, entry.entry_id,
            _saved_cost(model, usage, Decimal(entry.cost)),
        )  # fmt: skip
    if keys.semantic_block:
        return None
    with span("cache.embedding"):
        embedding = await embed_async(embedding_text(keys.query))
    _remember_embedding(keys.exact, embedding)
    if embedding.truncated:
        return None  # the model saw only the start of this query
    candidates = await tenant_db(
        tenant,
        semantic_candidates,
        scope=keys.scope,
        vector=embedding.vector,
        embedding_model=get_embedder().model_id,
        ttl_seconds=tenant.cache_ttl_seconds,
        max_completion_tokens=limit,
        limit=settings.CACHE_SEMANTIC_CANDIDATES,
        min_similarity=tenant.semantic_cache_threshold,
    )
    for candidate in candidates:
        verdict = verify(keys.query, embedding, candidate.query, candidate.token_vectors,
                         candidate.similarity, tenant.semantic_cache_threshold)  # fmt: skip
        if verdict.accept:
            usage = Usage(
                prompt_tokens=candidate.prompt_tokens, completion_tokens=candidate.completion_tokens
            )
            return CacheHit(
                candidate.answer, "semantic", verdict.score, usage, candidate.model, candidate.entry_id,
                _saved_cost(model, usage, candidate.cost),
            )  # fmt: skip
        if verdict.reason:
            stats.count_later(tenant.slug, **{"refused_" + verdict.reason: 1})
    return None


def cache_store_later(
    tenant: Tenant,
    request: ChatRequest,
    model: str,
    answer_text: str,
    usage: Usage,
    cost: Decimal,
    *,
    finish_reason: str | None = "stop",
    user_id: int | None = None,
    conversation_id: uuid.UUID | None = None,
) -> None:
    """Schedules the write of a complete answer and returns at once. Errors, partial answers (any
    finish other than "stop"), empty and oversized answers, and bypassed requests are not cached."""
    if not _cacheable(tenant, request, answer_text, finish_reason):
        return
    snapshot = copy.deepcopy(request)
    _background(
        cache_store(
            tenant,
            snapshot,
            model,
            answer_text,
            usage,
            cost,
            user_id=user_id,
            conversation_id=conversation_id,
        )
    )


def _cacheable(tenant: Tenant, request: ChatRequest, answer_text: str, finish_reason: str | None) -> bool:
    if finish_reason != "stop" or not answer_text.strip():
        return False
    if len(answer_text) > settings.CACHE_MAX_ANSWER_CHARS:
        return False
    return not bypass_reason(tenant, request, True)


async def cache_store(
    tenant: Tenant,
    request: ChatRequest,
    model: str,
    answer_text: str,
    usage: Usage,
    cost: Decimal,
    *,
    finish_reason: str | None = "stop",
    user_id: int | None = None,
    conversation_id: uuid.UUID | None = None,
) -> int | None:
    """Writes the answer to both layers now; returns the entry id (None when not cached).
    `cache_store_later` runs this off the request path; tests and benchmarks await it."""
    if not _cacheable(tenant, request, answer_text, finish_reason):
        return None
    try:
        started_in = await generation(tenant.slug, fresh=True)
        keys = cache_keys(tenant, request, await _family(model))
        embedding = await _embedding_for(keys)
        entry_id = await tenant_db(
            tenant,
            semantic_store,
            scope=keys.scope,
            exact_key=keys.exact,
            query=keys.query,
            vector=embedding.vector if embedding else None,
            token_vectors=embedding.tokens if embedding else None,
            embedding_model=get_embedder().model_id if embedding else "",
            model=model,
            answer=answer_text,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=cost,
            request=request_to_json(request, model),
            user_id=user_id,
            conversation_id=conversation_id,
        )
        if await generation(tenant.slug, fresh=True) != started_in:
            # Purged while this answer was being written: it must not outlive the purge.
            await tenant_db(tenant, semantic_delete, entry_id)
            return None
        entry = ExactEntry(entry_id, answer_text, model, usage.prompt_tokens, usage.completion_tokens,
                           str(cost), time.time())  # fmt: skip
        await exact_put(tenant.slug, keys.exact, entry, tenant.cache_ttl_seconds, started_in)
        await stats.count(tenant.slug, stores=1)
        return entry_id
    except Exception:
        log.exception("cache write failed for tenant %s", tenant.slug)
        return None


async def _embedding_for(keys: CacheKeys) -> Embedding | None:
    if keys.semantic_block:
        return None
    embedding = _recalled_embedding(keys.exact) or await embed_async(embedding_text(keys.query))
    return None if embedding.truncated else embedding


def purge_tenant_cache(tenant: Tenant) -> int:
    """Deletes every cached answer of the tenant (both layers); returns how many entries went.
    Sync, for the purge endpoint and the admin action; restores the schema it found."""
    exact_purge(tenant.slug)
    with tenant_context(tenant):
        return semantic_purge()


async def cache_purge(tenant: Tenant) -> int:
    return await sync_to_async(purge_tenant_cache)(tenant)


async def cache_stats(tenant: Tenant) -> dict[str, object]:
    """Hits, misses, tokens and cost saved for the tenant, since counting began (or a reset)."""
    return await stats.read(tenant.slug)


# Strong references: the event loop keeps only weak ones to its tasks.
_pending: set[asyncio.Task[object]] = set()


async def _off_request(awaitable: Coroutine[Any, Any, object]) -> object:
    try:
        return await awaitable
    finally:
        await sync_to_async(give_back_connection, thread_sensitive=True)()


def _background(awaitable: Coroutine[Any, Any, object]) -> None:
    """Runs work that follows the answer (store, hit count) without holding the caller up.

    It runs in a context of its own, not the request's: the request's thread-sensitive executor
    goes away when the request ends (asgiref then refuses the call), or worse, a write that raced
    the end of the request opened a connection in that dying thread, which nothing ever gave back
    to the pool: after DB_POOL_MAX_SIZE cached answers every request waited DB_POOL_TIMEOUT and
    failed. In its own context the database calls run on asgiref's shared sync thread (under an
    async_to_sync caller, such as a test, on the caller's thread and in its transaction), and the
    connection goes back when the job ends."""
    job = _off_request(awaitable)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # called from sync code: a thread with its own loop keeps it off the caller
        threading.Thread(target=asyncio.run, args=(job,), daemon=True).start()
        return
    future = loop.create_task(job, context=contextvars.Context())
    _pending.add(future)
    future.add_done_callback(_pending.discard)


async def cache_drain() -> None:
    """Waits for this process' pending cache writes and counters (tests, benchmarks, shutdown)."""
    for schema_name in list(_hit_counts):  # the hit counts now, not in a second
        await _off_request(_flush_hits(schema_name))
    while _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)
    await stats.drain()


def erase_user_cache(user_id: int, conversation_ids: list[uuid.UUID]) -> int:
    """billing.privacy's erasure hook (sync, in the tenant's schema, inside its transaction):
    deletes the answers the user's questions put in the cache."""
    rows = CacheEntry.objects.filter(Q(user_id=user_id) | Q(conversation_id__in=conversation_ids))
    deleted, _ = rows.delete()
    slug = Tenant.objects.filter(schema_name=active_schema_name()).values_list("slug", flat=True).first()
    if deleted and slug:
        # Exact entries are keyed by hash, not by user: make the whole exact layer unreachable.
        bump_generation(slug)
    return int(deleted)


# Registered on import: every process that serves chat imports this module through the gateway.
register_erasure_hook(erase_user_cache)
