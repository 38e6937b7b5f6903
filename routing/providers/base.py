"""The interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import httpx2

from config.env import envint
from routing.types import ChatRequest, ChatResult, ModelTarget, StreamEvent

# Connections open at once to one provider endpoint, per process: every streamed answer holds
# one for its whole length. aiohttp queues requests past the limit, and its queue is costly to
# walk: at the SDKs' 1,000, 1,000 streaming sockets spent a sixth of the server's CPU there.
PROVIDER_MAX_CONNECTIONS = envint("PROVIDER_MAX_CONNECTIONS", 10_000)


def connection_limits() -> httpx2.Limits:
    """For the SDKs' aiohttp clients (their transport reads max_connections only)."""
    return httpx2.Limits(max_connections=PROVIDER_MAX_CONNECTIONS, max_keepalive_connections=100)


class ProviderAdapter(Protocol):
    """Talks one wire protocol. One instance per (kind, base_url, api key) per process, so its
    HTTP connection pool and keep-alive connections are shared by every request of the process.

    `timeout` is the seconds left of the request's overall deadline; the adapter must not wait
    past it. Errors are raised as `routing.types.ProviderError` (with `retryable` and
    `retry_after` filled in) or `routing.types.UnsupportedFeature`, never as SDK exceptions.
    The adapter makes exactly one upstream attempt: retries and fallback belong to the router.
    """

    async def complete(self, request: ChatRequest, target: ModelTarget, timeout: float) -> ChatResult: ...

    def stream(self, request: ChatRequest, target: ModelTarget, timeout: float) -> AsyncIterator[StreamEvent]:
        """Yields events as they arrive, ending with one `usage` event."""
        ...

    async def aclose(self) -> None: ...
