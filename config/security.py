"""Content-Security-Policy for every HTML page we serve.

The chat renders text that models and users wrote. It is sanitised on the server
(chat/rendering.py), and this header is the second wall: even if markup slipped through, the
browser runs no inline script, loads nothing from another origin and cannot be framed.

Our pages (chat UI, billing, the Django admin, which since Django 4 ships no inline script)
work under the strict policy. The one exception is Swagger UI at /api/docs/: drf-spectacular's
page is an inline script loading its bundle from a CDN, so it gets no policy rather than a
policy that breaks it (`CSP_EXEMPT_PATHS`); so do Django's debug error pages (DEBUG only).
JSON and event streams get none: they are not rendered as documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

DEFAULT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def _apply_policy(request: HttpRequest, response: HttpResponse) -> None:
    if "Content-Security-Policy" in response:
        return
    if not response.get("Content-Type", "").startswith("text/html"):
        return
    if request.path.startswith(tuple(getattr(settings, "CSP_EXEMPT_PATHS", ()))):
        return
    if settings.DEBUG and response.status_code >= 400:
        # Django's debug error pages are inline style and script: a developer needs them whole.
        return
    response["Content-Security-Policy"] = getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_POLICY)


class ContentSecurityPolicyMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response: HttpResponse = self.get_response(request)
        _apply_policy(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = await self.get_response(request)
        _apply_policy(request, response)
        return response
