"""The semantic layer's decision: may the answer cached for `cached_text` be served to `query`?

Three gates, all required (docs/semantic-cache.md has the measurements):
1. cosine similarity of the two query embeddings >= the tenant's threshold;
2. no lexical guard objects (numbers, negation, languages, question kind, names, opposites,
   direction; see guards.py);
3. every content word on each side has a counterpart on the other with contextual word-vector
   cosine >= CACHE_ALIGNMENT_FLOOR (skipped when the embedder gives no word vectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings

from routing.cache.embedding import Embedding, get_embedder
from routing.cache.guards import alignment, analyse, near_miss_reason
from routing.cache.keys import embedding_text


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    score: float  # the cosine similarity
    # Why a candidate above the threshold was refused ("" when accepted or below threshold).
    reason: str = ""


def verify(
    query: str,
    query_embedding: Embedding,
    cached_text: str,
    cached_tokens: np.ndarray | None,
    similarity: float,
    threshold: float,
) -> Verdict:
    if similarity < threshold:
        return Verdict(False, similarity)
    if settings.CACHE_NEAR_MISS_GUARDS:
        reason = near_miss_reason(analyse(query), analyse(cached_text))
        if reason:
            return Verdict(False, similarity, reason)
    floor = settings.CACHE_ALIGNMENT_FLOOR
    if floor > 0 and query_embedding.tokens is not None and query_embedding.pieces is not None:
        # The stored word vectors belong to the text as embedded, so split that text again.
        cached_pieces = (
            get_embedder().pieces(embedding_text(cached_text)) if cached_tokens is not None else None
        )
        if (
            cached_tokens is not None
            and cached_pieces is not None
            and len(cached_pieces) == len(cached_tokens)
        ):
            if (
                alignment(query_embedding.pieces, query_embedding.tokens, cached_pieces, cached_tokens)
                < floor
            ):
                return Verdict(False, similarity, "unmatched_word")
    return Verdict(True, similarity)
