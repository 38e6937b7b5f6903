"""Request-wide middleware that is not about tenants."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _assign_request_id(request: HttpRequest) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
    request.request_id = request_id  # type: ignore[attr-defined]
    return request_id


class RequestIdMiddleware:
    """Gives every request an id (the caller's `X-Request-ID` when it is sane) and echoes it."""

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
        request_id = _assign_request_id(request)
        response: HttpResponse = self.get_response(request)
        response["x-request-id"] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request_id = _assign_request_id(request)
        response: HttpResponse = await self.get_response(request)
        response["x-request-id"] = request_id
        return response


class InlineHooksMixin:
    """For Django middleware (MiddlewareMixin) whose hooks only compute, never wait on I/O: under
    ASGI, Django runs each hook in the request's worker thread, a thread hop per hook and per
    request. This calls them on the event loop instead. Used by the API chain only (API_MIDDLEWARE),
    which is always async."""

    get_response: Callable[[HttpRequest], Any]

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse | None = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            response = process_request(request)
        if response is None:
            response = await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            response = process_response(request, response)
        assert response is not None
        return response


class ApiSecurityMiddleware(InlineHooksMixin, SecurityMiddleware):
    """Django's security headers (nosniff, referrer policy, HSTS, SSL redirect), hooks inline."""


class ApiPrometheusBeforeMiddleware(InlineHooksMixin, PrometheusBeforeMiddleware):
    """The django_http_* request metrics of the dashboards, for the API chain too."""


class ApiPrometheusAfterMiddleware(InlineHooksMixin, PrometheusAfterMiddleware):
    async def process_view(self, request: HttpRequest, view_func: Any, *args: Any, **kwargs: Any) -> None:
        super().process_view(request, view_func, *args, **kwargs)  # type: ignore[no-untyped-call]
