"""Errors as the chat UI shows them: in plain words, with what to do next.

One table for both the server-rendered pages (no-script fallbacks) and the page's JavaScript,
which receives it as a JSON data block, so the two never word the same error differently.
Also: an HTML page instead of a JSON body when a browser asks for a tenant that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

# code -> (what happened, what to do next). Codes come from ApiError (config.errors) and the
# run events (chat.runs); statuses catch the codes this table does not name.
ERROR_TEXTS: dict[str, tuple[str, str]] = {
    "rate_limit_exceeded": (
        "You are sending messages faster than your workspace allows.",
        "Wait a few seconds, then send again.",
    ),
    "concurrency_limit_exceeded": (
        "Your workspace has too many answers being written at once.",
        "Wait a moment, then send again.",
    ),
    "quota_exceeded": (
        "Your workspace has used up its allowance for this month.",
        "Ask your workspace admin to raise the quota; it also resets on the 1st of next month.",
    ),
    "model_not_allowed": (
        "This conversation's model is not available to your workspace.",
        "Pick another model in the conversation settings.",
    ),
    "model_not_found": (
        "This conversation's model no longer exists.",
        "Pick another model in the conversation settings.",
    ),
    "run_in_progress": (
        "An answer is still being written.",
        "Stop it (Esc) or wait for it to finish.",
    ),
    "nothing_to_regenerate": ("There is no question to answer again.", "Send a message first."),
    "message_not_found": ("That message no longer exists.", "Reload the page to see the conversation."),
    "content_too_long": ("That message is too long.", "Shorten it, or split it into several messages."),
    "invalid_value": ("That message could not be sent.", "Type something before sending."),
    "timeout": ("The AI model took too long to answer.", "Try again, or pick a faster model in settings."),
    "admission_unavailable": ("The service is briefly unavailable.", "Try again in a few seconds."),
    "providers_unavailable": (
        "The AI providers are unavailable right now.",
        "Try again in a minute, or pick another model in settings.",
    ),
    "run_not_found": (
        "That answer can no longer be resumed.",
        "Reload the page: finished answers are saved in the conversation.",
    ),
}
STATUS_TEXTS: dict[int, tuple[str, str]] = {
    402: ERROR_TEXTS["quota_exceeded"],
    429: ERROR_TEXTS["rate_limit_exceeded"],
    502: (
        "The AI provider did not answer properly.",
        "Try again, or pick another model in the conversation settings.",
    ),
    503: ERROR_TEXTS["providers_unavailable"],
    504: ERROR_TEXTS["timeout"],
}
# By error type, for codes neither table names (providers' own codes, for one).
TYPE_TEXTS: dict[str, tuple[str, str]] = {
    "rate_limit_error": ERROR_TEXTS["rate_limit_exceeded"],
    "insufficient_quota": ERROR_TEXTS["quota_exceeded"],
    "upstream_error": STATUS_TEXTS[502],
    "timeout_error": ERROR_TEXTS["timeout"],
    "service_unavailable": ERROR_TEXTS["providers_unavailable"],
}
FALLBACK_TEXT = ("Something went wrong.", "Try again; if it keeps happening, tell your workspace admin.")
# A failure after the answer had started: what was delivered is kept.
PARTIAL_TEXT = (
    "The answer was cut off because the AI provider stopped responding.",
    "What arrived is kept. Regenerate to try again.",
)


def explain_error(code: str, status: int | None = None, error_type: str = "") -> str:
    what, next_step = (
        ERROR_TEXTS.get(code) or STATUS_TEXTS.get(status or 0) or TYPE_TEXTS.get(error_type) or FALLBACK_TEXT
    )
    return f"{what} {next_step}"


def error_texts_for_script() -> dict[str, Any]:
    return {
        "codes": {code: list(text) for code, text in ERROR_TEXTS.items()},
        "statuses": {str(status): list(text) for status, text in STATUS_TEXTS.items()},
        "types": {name: list(text) for name, text in TYPE_TEXTS.items()},
        "fallback": list(FALLBACK_TEXT),
        "partial": list(PARTIAL_TEXT),
    }


# --- unknown or suspended tenants, for browsers ------------------------------------------------

_TENANT_ERRORS = {"tenant_not_found": 404, "tenant_inactive": 403}


def _wants_page(request: HttpRequest) -> bool:
    return not request.path.startswith(("/api/", "/v1/", "/ws/")) and "text/html" in request.headers.get(
        "Accept", ""
    )


def _as_page(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if not isinstance(response, JsonResponse) or response.status_code not in (403, 404):
        return response
    if not _wants_page(request):
        return response
    code = json.loads(response.content).get("error", {}).get("code")
    if code not in _TENANT_ERRORS:
        return response
    host, _, port = request.get_host().partition(":")
    # Where a person can type the right workspace name: the base domain, same port.
    chooser = f"{request.scheme}://{settings.TENANT_BASE_DOMAIN}{':' + port if port else ''}/"
    body = render_to_string("chat/tenant_error.html", {"code": code, "host": host, "chooser": chooser})
    return HttpResponse(body, status=response.status_code)


class TenantErrorPageMiddleware:
    """Outside the tenant middleware: turns its JSON refusal into a page a person can read."""

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
        return _as_page(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return _as_page(request, await self.get_response(request))
