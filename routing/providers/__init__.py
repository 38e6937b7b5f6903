"""Provider adapters: one per (kind, endpoint, key) and event loop, shared by every request.

Sharing matters: each adapter owns an HTTP connection pool, and a new pool per request would pay a
TCP (and TLS) handshake every time. An aiohttp session belongs to the event loop it was made in, so
the cache is per loop as well; loops that have gone away drop out of it on their own.

Kinds: `openai` and `openai_compatible` (llama.cpp, vLLM; the OpenAI adapter with their
differences handled), `anthropic`, `ollama` (native API).
"""

from __future__ import annotations

import asyncio
import weakref

from routing.providers.anthropic_adapter import AnthropicAdapter
from routing.providers.base import ProviderAdapter
from routing.providers.ollama_adapter import OllamaAdapter
from routing.providers.openai_adapter import OpenAIAdapter
from routing.types import ModelTarget

__all__ = ["ProviderAdapter", "close_adapters", "get_adapter", "make_adapter"]

_AdapterKey = tuple[str, str, str]

# loop -> adapters made in it. Weak keys: a finished loop (a test's, an async_to_sync call's) must
# not be kept alive by this cache, nor keep its adapters alive.
_adapters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_AdapterKey, ProviderAdapter]] = (
    weakref.WeakKeyDictionary()
)


def make_adapter(target: ModelTarget) -> ProviderAdapter:
    """A new, unshared adapter for `target`'s kind and endpoint (the caller closes it)."""
    if target.kind in ("openai", "openai_compatible"):
        return OpenAIAdapter(kind=target.kind, base_url=target.base_url, api_key=target.api_key)
    if target.kind == "anthropic":
        return AnthropicAdapter(base_url=target.base_url, api_key=target.api_key)
    if target.kind == "ollama":
        return OllamaAdapter(base_url=target.base_url, api_key=target.api_key)
    raise ValueError(f"unknown provider kind {target.kind!r}")


def get_adapter(target: ModelTarget) -> ProviderAdapter:
    """The running event loop's adapter for `target`'s kind, base URL and key; call from async code.

    No lock is needed: there is no await between the lookup and the insert, and a loop runs one
    task at a time.
    """
    loop = asyncio.get_running_loop()
    per_loop = _adapters.get(loop)
    if per_loop is None:
        per_loop = _adapters[loop] = {}
    key = (target.kind, target.base_url, target.api_key)
    adapter = per_loop.get(key)
    if adapter is None:
        adapter = per_loop[key] = make_adapter(target)
    return adapter


async def close_adapters() -> None:
    """Closes the running loop's adapters (their connection pools) and forgets them. Call it before
    a loop ends (ASGI lifespan shutdown, the end of a test); other loops' adapters cannot be closed
    from here, as their sessions belong to their own loops."""
    per_loop = _adapters.pop(asyncio.get_running_loop(), {})
    for adapter in per_loop.values():
        await adapter.aclose()
