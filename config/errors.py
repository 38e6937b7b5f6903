"""One JSON error shape for the whole API: `{"error": {"type", "message", "code"}}` (OpenAI's).

DRF exceptions, Django's 404/500 on API paths and our own `ApiError` all come out through here.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error meant for the client, with its status, type and machine-readable code."""

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.error_type = error_type or ERROR_TYPES.get(status_code, "api_error")
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status_code, self.message, self.code, self.error_type, self.param)


def error_body(
    status_code: int,
    message: str,
    code: str,
    error_type: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": error_type or ERROR_TYPES.get(status_code, "api_error"),
        "message": message,
        "code": code,
    }
    if param is not None:
        error["param"] = param
    return {"error": error}


def error_response(
    status_code: int,
    message: str,
    code: str,
    *,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse(error_body(status_code, message, code, error_type), status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _first_validation_error(detail: Any, path: str = "") -> tuple[str, str, str]:
    """Walks DRF's nested validation detail to the first message: (param, message, code)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = path if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
            return _first_validation_error(value, name)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], path)
    code = getattr(detail, "code", "invalid") or "invalid"
    return path, str(detail), str(code)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        return Response(exc.body(), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, exceptions.ValidationError):
        param, message, code = _first_validation_error(exc.detail)
        text = f"{param}: {message}" if param else message
        body = error_body(400, text, code, param=param or None)
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
            exc.status_code = status.HTTP_401_UNAUTHORIZED
        detail = exc.detail
        if isinstance(detail, dict):
            message = str(detail.get("detail", detail))
            code = str(getattr(detail.get("detail"), "code", None) or exc.default_code)
            # simplejwt puts its own code in the dict.
            if "code" in detail:
                code = str(detail["code"])
        else:
            message = str(detail)
            code = str(getattr(detail, "code", None) or exc.default_code)
        return Response(error_body(exc.status_code, message, code), status=exc.status_code, headers=headers)
    return None


def _is_api_path(path: str) -> bool:
    return path.startswith(("/api/", "/v1/"))


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, f"No route for {request.method} {request.path}", "not_found")


def json_server_error(request: HttpRequest) -> JsonResponse:
    return error_response(
        500, "Internal server error; the request id identifies it in logs.", "internal_error"
    )


def not_found_handler(request: HttpRequest, exception: Exception | None = None) -> Any:
    if _is_api_path(request.path):
        return json_not_found(request, exception)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def server_error_handler(request: HttpRequest) -> Any:
    if _is_api_path(request.path):
        return json_server_error(request)
    from django.views.defaults import server_error

    return server_error(request)
