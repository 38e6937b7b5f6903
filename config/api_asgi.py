"""The API chain: Django serving the `/v1/` endpoints with settings.API_MIDDLEWARE instead of
the full chain the pages and the REST API need (see the comment on API_MIDDLEWARE).

Measured with benchmarks/peer_gateway.sh (BENCHMARKS.md, "Gateway latency and throughput"):
every Django middleware hook runs in a worker thread under ASGI, and the full chain made a
dozen thread hops per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

Scope = Any
Receive = Any
Send = Any
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware of settings.API_MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        full_chain = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full_chain


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    # The API's paths are a handful of fixed routes: the path is the route.
    return f"{scope.get('method', 'HTTP')} {scope.get('path', '')}", {"http.route": scope.get("path", "")}


def api_application(tracing: bool) -> AsgiApp:
    app: AsgiApp = ApiASGIHandler()
    if tracing:
        # The request's server span, as the Django instrumentation gives the other chain.
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app, default_span_details=_span_details)
    return app


def by_path(prefixes: tuple[str, ...], api: AsgiApp, other: AsgiApp) -> AsgiApp:
    """HTTP requests whose path starts with one of `prefixes` go to `api`, the rest to `other`."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if str(scope.get("path", "")).startswith(prefixes):
            await api(scope, receive, send)
        else:
            await other(scope, receive, send)

    return dispatch
