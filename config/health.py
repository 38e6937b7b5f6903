"""Probes: `/healthz` says the process answers, `/readyz` that Postgres and Redis do too, and
that the process is not shutting down.

Graceful shutdown (docs/operations.md): on SIGTERM a web process
1. answers /readyz with 503, so the load balancer (a Kubernetes Service) stops sending to it;
2. refuses new chat requests with 503 `shutting_down` (clients retry; the next try lands on
   another process) and new WebSocket connections with close code 4012 (service restart);
3. closes its open WebSockets with 4012: clients reconnect to another process and resume the
   answer from its last event id (the run goes on here and writes its events to Redis);
4. waits until the answers in flight here are settled, at most SHUTDOWN_GRACE_SECONDS;
5. hands the signal to the server's own handler (daphne's or uvicorn's), which exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from config import metrics
from config.redis import get_redis

logger = logging.getLogger(__name__)

# "Service restart: reconnect (elsewhere) and resume". RFC 6455's 1012 says this, but daphne's
# WebSocket library lets an application send only 1000 or 3000-4999, so 4000 + 12 it is.
CLOSE_SERVICE_RESTART = 4012


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    if draining():
        return JsonResponse({"status": "draining", "checks": {}}, status=503)
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["postgres"] = f"error: {exc.__class__.__name__}"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {exc.__class__.__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


# --- graceful shutdown -------------------------------------------------------------------------

_draining = threading.Event()
_in_flight = 0  # gateway calls of this process not yet settled (event-loop thread only)
# This process' open chat WebSockets (consumer -> tenant); weak, so a lost consumer goes too.
_sockets: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_installed = False
_shutdown_tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references


def draining() -> bool:
    return _draining.is_set()


def gateway_call_started() -> None:
    """Refuses new work while draining; counts it otherwise (the gateway's entry decorator)."""
    global _in_flight
    if draining():
        from config.errors import ApiError

        raise ApiError(
            503,
            "This server is restarting; retry and another one will answer",
            "shutting_down",
            error_type="service_unavailable",
            headers={"Retry-After": "1", "Connection": "close"},
        )
    _in_flight += 1
    metrics.IN_FLIGHT.inc()


def gateway_call_ended() -> None:
    global _in_flight
    _in_flight -= 1
    metrics.IN_FLIGHT.dec()


def in_flight() -> int:
    return _in_flight


def websocket_opened(consumer: Any, tenant: str) -> None:
    """A chat socket was accepted: counted in the gauge, and closed first when draining."""
    _sockets[consumer] = tenant
    metrics.websocket_opened(tenant)


def websocket_closed(consumer: Any) -> None:
    tenant = _sockets.pop(consumer, None)
    if tenant is not None:  # only sockets websocket_opened counted (not refused ones)
        metrics.websocket_closed(tenant)


async def drain(grace_seconds: float) -> None:
    """Steps 1 to 4 above; returns when nothing is in flight or the grace period is over."""
    _draining.set()
    metrics.DRAINING.set(1)
    logger.info("shutdown: draining (%d answers in flight, %d sockets)", _in_flight, len(_sockets))
    for consumer in list(_sockets):
        try:
            await consumer.close(code=CLOSE_SERVICE_RESTART)
        except Exception:  # a socket that is already gone needs no closing; others must not stop us
            logger.warning("shutdown: could not close a socket", exc_info=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    while _in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    from routing.cache.service import cache_drain

    try:  # answers just settled write the cache in the background
        await asyncio.wait_for(cache_drain(), max(0.1, deadline - loop.time()))
    except TimeoutError:
        pass
    logger.info("shutdown: drained (%d answers still in flight)", _in_flight)


def install_graceful_shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Puts our SIGTERM handler in front of the server's. Called from the running server's
    first request (config/asgi.py): daphne and uvicorn install their own handlers at start,
    after the application is imported, and would replace one installed at import."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum: int, frame: FrameType | None) -> None:
        if draining():
            return

        async def drain_then_stop() -> None:
            try:
                await drain(float(settings.SHUTDOWN_GRACE_SECONDS))
            finally:
                signal.signal(signal.SIGTERM, previous)
                if callable(previous):
                    previous(signum, frame)
                else:  # SIG_DFL: end as the signal would have
                    signal.raise_signal(signum)

        def start() -> None:
            task = loop.create_task(drain_then_stop())
            _shutdown_tasks.add(task)
            task.add_done_callback(_shutdown_tasks.discard)

        loop.call_soon_threadsafe(start)

    signal.signal(signal.SIGTERM, handle)


def graceful_shutdown(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The ASGI application, wrapped: installs the handler on the first call and turns new
    WebSocket connections away while draining."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _installed:
            install_graceful_shutdown(asyncio.get_running_loop())
        if scope["type"] == "websocket" and draining():
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": CLOSE_SERVICE_RESTART})
            return
        await app(scope, receive, send)

    return application
