"""The cache's embedders: the offline int8 MiniLM (from installed packages) and a provider's API."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from asgiref.sync import async_to_sync

from routing.cache import embedding
from routing.cache.embedding import MAX_TOKENS, ApiEmbedder, LocalMiniLM, embed_async, get_embedder


def test_the_process_embedder_is_built_once_and_loads_lazily() -> None:
    fresh = LocalMiniLM()
    assert fresh._session is None  # nothing loaded until the first query
    fresh.embed("warm up")
    session = fresh._session
    fresh.embed("again")
    assert fresh._session is session
    assert get_embedder() is get_embedder()


def test_local_vectors_are_normalised_and_see_paraphrases() -> None:
    model = get_embedder()
    a = model.embed("How do I convert kilometres to miles?")
    b = model.embed("How can I convert km into miles?")
    c = model.embed("What is the best pizza in Naples?")
    assert a.vector.shape == (384,) and abs(float(np.linalg.norm(a.vector)) - 1) < 1e-5
    assert a.tokens is not None and a.pieces is not None and len(a.pieces) == len(a.tokens) == a.n_tokens
    assert float(a.vector @ b.vector) > 0.85 > float(a.vector @ c.vector)
    assert not a.truncated


def test_long_queries_are_marked_truncated() -> None:
    long_text = " ".join(f"word{i}" for i in range(MAX_TOKENS * 2))
    assert get_embedder().embed(long_text).truncated


def test_async_callers_embed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    model = get_embedder()
    original = model.embed

    def spy(text: str) -> Any:
        seen.append(threading.current_thread().name)
        return original(text)

    monkeypatch.setattr(model, "embed", spy)
    async_to_sync(embed_async)("Which thread am I on?")
    assert seen and seen[0].startswith("cache-embed")


def test_provider_embeddings_option_fits_the_same_column(upstream: Any, settings: Any) -> None:
    api = ApiEmbedder("text-embedding-3-small", upstream.openai_base_url, "fake-secret")
    result = api.embed("How do I convert km to miles?")
    assert result.vector.shape == (384,) and abs(float(np.linalg.norm(result.vector)) - 1) < 1e-5
    assert result.tokens is None and api.pieces("x") is None
    settings.CACHE_EMBEDDING_BACKEND = "api"
    settings.CACHE_EMBEDDING_API_BASE_URL = upstream.openai_base_url
    settings.CACHE_EMBEDDING_API_KEY = "fake-secret"
    try:
        embedding.set_embedder(None)
        assert isinstance(get_embedder(), ApiEmbedder)
        assert get_embedder().model_id == "api:text-embedding-3-small"
    finally:
        embedding.set_embedder(None)
        settings.CACHE_EMBEDDING_BACKEND = "local"
        assert isinstance(get_embedder(), LocalMiniLM)
