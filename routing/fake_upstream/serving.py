"""HTTP plumbing shared by the three protocols: admission, latency, paced streaming, disconnects."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from routing.fake_upstream.knobs import Knobs, UpstreamState

STATE_KEY: web.AppKey[UpstreamState] = web.AppKey("fake_upstream_state", UpstreamState)


def state_of(request: web.Request) -> UpstreamState:
    return request.app[STATE_KEY]


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + os.urandom(length // 2).hex()


def encode_json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encode_json(payload), status=status, headers=headers, content_type="application/json"
    )


async def read_json_object(request: web.Request) -> dict[str, Any] | None:
    """The request body as a dict, or None when it is not a JSON object."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def retry_headers(knobs: Knobs) -> dict[str, str]:
    """Retry-After in whole seconds (RFC 9110) plus OpenAI's retry-after-ms for sub-second waits."""
    if knobs.retry_after is None:
        return {}
    return {
        "retry-after": str(math.ceil(knobs.retry_after)),
        "retry-after-ms": str(round(knobs.retry_after * 1000)),
    }


def admit(
    request: web.Request, provider: str, model: str, body: dict[str, Any], streamed: bool
) -> tuple[Knobs, int | None]:
    """Count the call, log it, and return its knobs and the error status it must fail with."""
    state = state_of(request)
    knobs, failure = state.knobs.admit(provider, model)
    entry = {
        "provider": provider,
        "model": model,
        "path": request.path,
        "stream": streamed,
        "time": time.time(),
        "headers": dict(request.headers),
        "body": body,
    }
    state.stats.record(provider, model, "total", entry)
    if streamed:
        state.stats.record(provider, model, "streamed")
    if failure is not None:
        state.stats.record(provider, model, "errors")
    return knobs, failure


def count_error(request: web.Request, provider: str, model: str) -> None:
    """Count a call refused by validation, which `admit` never saw."""
    stats = state_of(request).stats
    stats.record(provider, model, "total")
    stats.record(provider, model, "errors")


async def wait_ms(milliseconds: float) -> None:
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)


def drop_connection(request: web.Request, provider: str, model: str) -> web.Response:
    """Close the TCP connection without (the rest of) an answer.

    aiohttp then fails to write the returned response, sees a ConnectionError and moves on quietly,
    so the client sees a truncated chunked body or no response at all.
    """
    state_of(request).stats.record(provider, model, "disconnected")
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


async def stream_events(
    request: web.Request,
    response: web.StreamResponse,
    knobs: Knobs,
    *,
    prologue: bytes,
    tokens: Sequence[bytes],
    epilogue: bytes,
    error_event: bytes,
    provider: str,
    model: str,
) -> web.StreamResponse:
    """Write a prepared stream: prologue, token events (paced by the knobs), epilogue.

    Each item of `tokens` is one token's worth of wire bytes (structural events such as a new
    content block are glued to the token after them). The prologue goes out with the first token,
    after `ttft_ms`. Without pacing the whole stream is written at once: cheap for benchmarks.

    `disconnect_after_tokens` drops the connection after N tokens; `stream_error_after_tokens`
    writes the provider's error event after N tokens and ends the stream. A knob larger than the
    reply still fires, after the last token and before the closing events, so "this stream
    breaks" does not depend on the reply length. When both are set, the smaller N wins.
    """
    cut, tail, disconnect = len(tokens), epilogue, False
    disconnect_at, error_at = knobs.disconnect_after_tokens, knobs.stream_error_after_tokens
    if disconnect_at is not None and (error_at is None or disconnect_at <= error_at):
        cut, tail, disconnect = min(cut, max(disconnect_at, 0)), b"", True
    elif error_at is not None:
        cut, tail = min(cut, max(error_at, 0)), error_event
        state_of(request).stats.record(provider, model, "errors")
    try:
        await wait_ms(knobs.ttft_ms)
        await _write_paced(response, knobs.tokens_per_second, prologue, tokens[:cut], tail)
        if disconnect:
            drop_connection(request, provider, model)
        else:
            await response.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream, as clients that cancel do: nothing left to send
    return response


async def _write_paced(
    response: web.StreamResponse,
    tokens_per_second: float,
    prologue: bytes,
    tokens: Sequence[bytes],
    tail: bytes,
) -> None:
    if tokens_per_second <= 0:
        await response.write(prologue + b"".join(tokens) + tail)
        return
    interval = 1.0 / tokens_per_second
    loop = asyncio.get_running_loop()
    started = loop.time()
    await response.write(prologue + (tokens[0] if tokens else b""))
    for index in range(1, len(tokens)):
        # Sleep to a schedule rather than a fixed interval so slow writes do not add drift.
        delay = started + index * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await response.write(tokens[index])
    if tail:
        await response.write(tail)


async def start_stream(
    request: web.Request, content_type: str, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    return response
