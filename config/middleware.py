"""Request-wide middleware that is not about tenants."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

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
