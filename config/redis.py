"""Shared Redis clients (sync and asyncio), one pool per process, keys under one prefix."""

from __future__ import annotations

import asyncio
import functools
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


# One asyncio client per event loop (a connection pool cannot be shared across loops); weak
# keys, so a loop that is gone (tests, async_to_sync) takes its client with it.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def new_async_client(url: str, *, socket_timeout: float, pool_timeout: float) -> aioredis.Redis:
    """An asyncio client on a blocking pool of REDIS_MAX_CONNECTIONS: at the limit a call waits up
    to `pool_timeout` for a connection instead of failing at once (redis-py's default pool
    raises past 100 connections, which 1,000 streaming sockets reach)."""
    pool: aioredis.BlockingConnectionPool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 2),
    )
    return aioredis.Redis(connection_pool=pool)


def get_async_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A reply is read when the event loop gets to it: on a loaded process that lags, so this
        # is not the place for a tight timeout (REDIS_SOCKET_TIMEOUT).
        client = new_async_client(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            pool_timeout=settings.REDIS_POOL_TIMEOUT,
        )
        _async_clients[loop] = client
    return client


def rkey(*parts: object) -> str:
    """A Redis key under the deployment's prefix: rkey('cb', 'openai', 'gpt-4o')."""
    return ":".join([settings.REDIS_KEY_PREFIX, *map(str, parts)])
