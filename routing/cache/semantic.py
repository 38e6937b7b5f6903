"""The semantic layer's storage: cached answers with their query embeddings, in the tenant's own
schema, searched with pgvector's HNSW index (cosine).

Everything here is synchronous ORM code: callers run it through `tenants.schema.tenant_db`, which
activates the tenant's schema in the worker thread, so a search can only ever see that tenant's
table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import F
from django.utils import timezone
from pgvector.django import CosineDistance

from routing.models import CacheEntry


@dataclass(slots=True)
class Candidate:
    entry_id: int
    query: str
    answer: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    similarity: float
    token_vectors: np.ndarray | None
    refreshed_at: datetime


def _enable_iterative_scans() -> None:
    """When the planner uses the HNSW index, the scope filter runs after the index scan; without
    iterative scans (pgvector >= 0.8) a tenant with many scopes would see too few of its own
    neighbours. Set once per database session rather than per query, to save round trips."""
    connection.ensure_connection()
    raw = connection.connection
    if getattr(connection, "_cache_iterative_scans_on", None) is not raw:
        with connection.cursor() as cursor:
            cursor.execute("SET hnsw.iterative_scan = relaxed_order")
        connection._cache_iterative_scans_on = raw  # type: ignore[attr-defined]


def pack_tokens(tokens: np.ndarray | None) -> bytes | None:
    return None if tokens is None else tokens.astype(np.float16).tobytes()


def unpack_tokens(blob: bytes | memoryview | None) -> np.ndarray | None:
    if blob is None:
        return None
    return np.frombuffer(bytes(blob), dtype=np.float16).astype(np.float32).reshape(-1, 384)


def semantic_candidates(
    *,
    scope: str,
    vector: np.ndarray,
    embedding_model: str,
    ttl_seconds: int,
    max_completion_tokens: int | None,
    limit: int,
    min_similarity: float,
) -> list[Candidate]:
    """The nearest fresh entries of one scope, most similar first, at least `min_similarity`."""
    fresh_after = timezone.now() - timedelta(seconds=ttl_seconds)
    fresh = CacheEntry.objects.filter(
        scope=scope,
        embedding_model=embedding_model,
        embedding__isnull=False,
        refreshed_at__gt=fresh_after,
    )
    if max_completion_tokens is not None:
        fresh = fresh.filter(completion_tokens__lte=max_completion_tokens)
    rows = (
        fresh.annotate(distance=CosineDistance("embedding", vector.tolist()))
        .filter(distance__lte=1.0 - min_similarity)
        .order_by("distance")
        .values(
            "id",
            "query",
            "answer",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "distance",
            "token_vectors",
            "refreshed_at",
        )[:limit]
    )
    _enable_iterative_scans()
    found = list(rows)
    return [
        Candidate(
            entry_id=row["id"],
            query=row["query"],
            answer=row["answer"],
            model=row["model"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            cost=row["cost"],
            similarity=1.0 - float(row["distance"]),
            token_vectors=unpack_tokens(row["token_vectors"]),
            refreshed_at=row["refreshed_at"],
        )
        for row in sorted(found, key=lambda r: r["distance"])
    ]


def semantic_store(
    *,
    scope: str,
    exact_key: str,
    query: str,
    vector: np.ndarray | None,
    token_vectors: np.ndarray | None,
    embedding_model: str,
    model: str,
    answer: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
    request: dict[str, Any],
    user_id: int | None = None,
    conversation_id: uuid.UUID | None = None,
) -> int:
    """Writes (or refreshes) the entry of one exact key; returns its id."""
    defaults: dict[str, Any] = {
        "scope": scope,
        "query": query,
        "embedding": vector.tolist() if vector is not None else None,
        "token_vectors": pack_tokens(token_vectors),
        "embedding_model": embedding_model,
        "model": model,
        "answer": answer,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost": cost,
        "request": request,
        "refreshed_at": timezone.now(),
    }
    # A refresh (warming) knows no user: the first asker stays recorded, for erasure.
    if user_id is not None:
        defaults["user_id"] = user_id
    if conversation_id is not None:
        defaults["conversation_id"] = conversation_id
    entry, _ = CacheEntry.objects.update_or_create(exact_key=exact_key, defaults=defaults)
    return int(entry.pk)


def record_hits(counts: dict[int, int]) -> None:
    """Adds each entry's count of hits (entry id -> hits since the last write)."""
    for entry_id, hits in counts.items():
        CacheEntry.objects.filter(pk=entry_id).update(hits=F("hits") + hits)


def semantic_delete(entry_id: int) -> None:
    CacheEntry.objects.filter(pk=entry_id).delete()


def semantic_purge() -> int:
    deleted, _ = CacheEntry.objects.all().delete()
    return int(deleted)
