"""Upstream failures as `ProviderError`, the only exception the router sees from an adapter,
and the stream plumbing that notices them (deadlines, SSE framing, in-band error events).

Retryable means "another attempt, here or at another model, may well succeed": rate limits,
overload, 5xx, timeouts, dropped connections. Client errors (400, 401, 403, 404, 422) are not:
sending the same request again gets the same answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import aiohttp
import anthropic
import httpx2
import openai

from routing.types import ProviderError

T = TypeVar("T")

# 408 request timeout, 409 conflict (OpenAI's "try again"), 425 too early, 429 rate limited,
# 529 Anthropic overloaded; other 5xx below, except 501 which will not change on a retry.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})

_CODE_BY_STATUS = {
    400: "upstream_bad_request",
    401: "upstream_auth",
    403: "upstream_auth",
    404: "upstream_not_found",
    408: "upstream_timeout",
    413: "upstream_bad_request",
    422: "upstream_bad_request",
    429: "upstream_rate_limited",
    503: "upstream_overloaded",
    529: "upstream_overloaded",
}

# Everything an SDK or aiohttp may raise for an upstream failure; adapters catch these (and only
# these) and turn them into ProviderError with `provider_error_from`.
UPSTREAM_EXCEPTIONS: tuple[type[BaseException], ...] = (
    openai.OpenAIError,
    anthropic.AnthropicError,
    httpx2.HTTPError,
    httpx2.StreamError,
    aiohttp.ClientError,
    OSError,  # includes TimeoutError
)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms` (OpenAI, Anthropic) or `retry-after` as seconds or
    an HTTP date. None when absent or unreadable."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or (status >= 500 and status != 501)


def error_for_status(
    provider: str, status: int, message: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The ProviderError for an HTTP error answer; `message` is the provider's own words."""
    retryable = is_retryable_status(status)
    # Providers send Retry-After with 429 and sometimes with overload or 5xx answers; it is
    # advice about when to come back, so it is only kept where coming back makes sense.
    retry_after = parse_retry_after(headers) if retryable else None
    code = _CODE_BY_STATUS.get(status, "upstream_error")
    return ProviderError(
        message or f"{provider} answered HTTP {status}",
        provider=provider,
        status=status,
        retryable=retryable,
        retry_after=retry_after,
        code=code,
    )


def timeout_error(provider: str, timeout: float) -> ProviderError:
    return ProviderError(
        f"{provider} did not answer within {timeout:.1f}s",
        provider=provider,
        retryable=True,
        code="upstream_timeout",
    )


def disconnected_error(provider: str, detail: str = "") -> ProviderError:
    message = f"{provider} closed the connection before its answer was complete"
    return ProviderError(
        f"{message}: {detail}" if detail else message,
        provider=provider,
        retryable=True,
        code="upstream_disconnected",
    )


def unavailable_error(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        f"cannot reach {provider}: {detail}", provider=provider, retryable=True, code="upstream_unavailable"
    )


def invalid_answer_error(provider: str, detail: str) -> ProviderError:
    """A 200 answer that is not the protocol's JSON (a proxy's HTML page, a half-written body)."""
    return ProviderError(
        f"{provider} sent an unreadable answer: {detail}",
        provider=provider,
        retryable=True,
        code="upstream_invalid_response",
    )


def body_message(body: object) -> str:
    """The human message of an error body in OpenAI's, Anthropic's or Ollama's shape."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, str):
            return error
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str):
        return body
    return ""


def _error_type(body: object) -> str:
    if not isinstance(body, Mapping):
        return ""
    error = body.get("error")
    found = error.get("type") if isinstance(error, Mapping) else body.get("type")
    return found if isinstance(found, str) else ""


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _transport_error(exc: BaseException, provider: str, timeout: float, streaming: bool) -> ProviderError:
    """Classifies a transport failure by the deepest cause we recognise. The SDKs' aiohttp
    transport maps every aiohttp connection error (a server disconnect included) to httpx's
    ConnectTimeout, so their own class names cannot be trusted: the aiohttp cause decides."""
    for cause in reversed(_cause_chain(exc)):
        if isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
            return timeout_error(provider, timeout)
        if isinstance(cause, aiohttp.ClientConnectorError):
            return unavailable_error(provider, str(cause))
        if isinstance(cause, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return disconnected_error(provider, str(cause))
        if isinstance(cause, aiohttp.ClientError | ConnectionError):
            return (
                disconnected_error(provider, str(cause))
                if streaming
                else unavailable_error(provider, str(cause))
            )
    if isinstance(exc, httpx2.TimeoutException | openai.APITimeoutError | anthropic.APITimeoutError):
        return timeout_error(provider, timeout)
    if streaming or isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError):
        return disconnected_error(provider, str(exc))
    return unavailable_error(provider, str(exc))


def provider_error_from(
    exc: BaseException, provider: str, *, timeout: float, streaming: bool = False
) -> ProviderError:
    """Maps an SDK, httpx or aiohttp exception. `streaming`: the answer had begun, so a broken
    connection is a disconnect rather than an unreachable upstream."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError) and exc.status_code >= 400:
        message = body_message(exc.body) or str(exc)
        return error_for_status(provider, exc.status_code, message, exc.response.headers)
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError) or not isinstance(
        exc, openai.APIError | anthropic.APIError
    ):
        return _transport_error(exc, provider, timeout, streaming)
    # An error event inside a 200 stream, as the SDK saw it.
    return stream_error(provider, getattr(exc, "body", None), fallback=str(exc))


def stream_error(provider: str, payload: object, fallback: str = "") -> ProviderError:
    """An error event inside a 200 stream (OpenAI's `{"error": ...}` chunk, Anthropic's `error`
    event, Ollama's `{"error": ...}` line): the provider failed mid-answer, typically from
    overload, so another attempt may succeed unless it says the request itself is wrong."""
    kind = _error_type(payload)
    return ProviderError(
        body_message(payload) or fallback or f"{provider} failed mid-answer",
        provider=provider,
        retryable=kind not in ("invalid_request_error", "authentication_error", "permission_error"),
        code="upstream_overloaded" if kind == "overloaded_error" else "upstream_error",
    )


def deadline_after(timeout: float) -> float:
    """The event-loop time `timeout` seconds from now (for `asyncio.timeout_at`)."""
    return asyncio.get_running_loop().time() + timeout


async def until_deadline(iterator: AsyncIterator[T], deadline: float) -> AsyncIterator[T]:
    """Yields from `iterator`, raising TimeoutError once `deadline` passes. The timeout wraps each
    step, not the whole loop: a timeout scope spanning `yield` would cancel whatever the consumer
    happens to be doing between items instead of the upstream read."""
    while True:
        async with asyncio.timeout_at(deadline):
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
        yield item


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` of each server-sent event. Event names are not needed (OpenAI sends none;
    Anthropic repeats the name as the payload's `type`), nor ids or comments. A last event not
    closed by a blank line is still given: a cut stream then fails on its half JSON instead."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    if data:
        yield "\n".join(data)
