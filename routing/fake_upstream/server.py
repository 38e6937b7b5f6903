"""The aiohttp application, its control endpoints, and ways to run it (thread, process).

Control endpoints (JSON):

- `GET /_control/knobs`: all layers and the defaults; with `?provider=&model=`, the merged knobs
  that pair gets. `PUT /_control/knobs`: merge one update (or a list), e.g.
  `{"provider": "openai", "model": "gpt-4o", "error_status": 429, "retry_after": 1, "fail_next": 2}`;
  a null value unsets a knob. `DELETE /_control/knobs`: drop every layer (or just the one named by
  `?provider=&model=`).
- `GET /_control/stats`: `{provider: {model: {total, errors, streamed, disconnected}}}`.
  `POST /_control/reset`: zero the statistics and forget the request log.
- `GET /_control/requests?limit=N`: the last requests (path, model, headers, body), newest last.
- `GET /_control/health`: `{"status": "ok"}`, for readiness polling.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from routing.fake_upstream import anthropic_proto, embeddings_proto, ollama_proto, openai_proto
from routing.fake_upstream.knobs import DEFAULT_KNOBS, KnobError, UpstreamState
from routing.fake_upstream.serving import STATE_KEY, json_response, state_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024 * 1024  # base64 images make big but legitimate requests


def _control_error(message: str, status: int = 400) -> web.Response:
    return json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}}, status
    )


async def get_knobs(request: web.Request) -> web.Response:
    store = state_of(request).knobs
    provider, model = request.query.get("provider"), request.query.get("model")
    if provider and model:
        return json_response(
            {"provider": provider, "model": model, "knobs": asdict(store.resolve(provider, model))}
        )
    return json_response({"layers": store.layers(), "defaults": asdict(DEFAULT_KNOBS)})


async def put_knobs(request: web.Request) -> web.Response:
    try:
        updates = json.loads(await request.read())
        state_of(request).knobs.update_many(updates)
    except ValueError as exc:  # KnobError is a ValueError, like a JSON syntax error
        return _control_error(str(exc))
    return json_response({"layers": state_of(request).knobs.layers()})


async def delete_knobs(request: web.Request) -> web.Response:
    store = state_of(request).knobs
    if "provider" in request.query or "model" in request.query:
        store.remove(request.query.get("provider", "*"), request.query.get("model", "*"))
    else:
        store.clear()
    return json_response({"layers": store.layers()})


async def get_stats(request: web.Request) -> web.Response:
    return json_response(state_of(request).stats.snapshot())


async def reset_stats(request: web.Request) -> web.Response:
    state_of(request).stats.reset()
    return json_response({"status": "reset"})


async def recent_requests(request: web.Request) -> web.Response:
    limit = request.query.get("limit", "")
    return json_response(state_of(request).stats.recent(int(limit) if limit.isdigit() else None))


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def list_models(request: web.Request, provider: str = "openai") -> web.Response:
    # One path, two providers: the Anthropic SDK always sends `anthropic-version`.
    if provider == "openai" and "anthropic-version" in request.headers:
        return json_response(anthropic_proto.list_models_payload(request))
    return json_response(openai_proto.list_models_payload(request, provider))


async def ollama_tags(request: web.Request) -> web.Response:
    return json_response(ollama_proto.tags_payload(request))


async def ollama_version(request: web.Request) -> web.Response:
    return json_response({"version": "0.9.0-fake"})


def _as(handler: Callable[..., Awaitable[web.StreamResponse]], provider: str) -> Handler:
    return functools.partial(handler, provider=provider)


def build_app(
    knobs: dict[str, Any] | list[dict[str, Any]] | None = None, state: UpstreamState | None = None
) -> web.Application:
    """The fake upstream as an aiohttp application, with `knobs` applied at start.

    Raises KnobError for an unknown knob, so a typo in `--knobs` fails at start, not silently.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state if state is not None else UpstreamState(knobs)
    app.add_routes(
        [
            web.post("/v1/chat/completions", openai_proto.chat_completions),
            web.get("/v1/models", list_models),
            web.post("/v1/embeddings", embeddings_proto.embeddings),
            web.post("/llama/v1/chat/completions", _as(openai_proto.chat_completions, "llama")),
            web.get("/llama/v1/models", _as(list_models, "llama")),
            web.post("/llama/v1/embeddings", _as(embeddings_proto.embeddings, "llama")),
            web.post("/v1/messages", anthropic_proto.messages),
            web.post("/v1/messages/count_tokens", anthropic_proto.count_tokens),
            web.post("/api/chat", ollama_proto.chat),
            web.get("/api/tags", ollama_tags),
            web.get("/api/version", ollama_version),
            web.get("/_control/knobs", get_knobs),
            web.put("/_control/knobs", put_knobs),
            web.delete("/_control/knobs", delete_knobs),
            web.get("/_control/stats", get_stats),
            web.post("/_control/reset", reset_stats),
            web.get("/_control/requests", recent_requests),
            web.get("/_control/health", health),
        ]
    )
    return app


@dataclass
class RunningUpstream:
    """A fake upstream serving from a background thread. Use as a context manager or call stop()."""

    base_url: str  # http://host:port: the Anthropic SDK's and Ollama's base URL
    state: UpstreamState  # knobs and statistics, to change and read directly from tests
    _stop: Callable[[], None] = field(repr=False)

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> RunningUpstream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(
    host: str = "127.0.0.1", port: int = 0, knobs: dict[str, Any] | list[dict[str, Any]] | None = None
) -> RunningUpstream:
    """Serve on `host:port` (0 = a free port) from a daemon thread with its own event loop."""
    state = UpstreamState(knobs)
    app = build_app(state=state)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    def serve_forever() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, host, port).start())
            outcome["port"] = runner.addresses[0][1]
        except OSError as exc:
            outcome["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve_forever, name="fake-upstream", daemon=True)
    thread.start()
    if not ready.wait(10) or "error" in outcome:
        raise RuntimeError(f"fake upstream did not start on {host}:{port}: {outcome.get('error')}")

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    return RunningUpstream(f"http://{host}:{outcome['port']}", state, stop)


def run_in_thread(
    port: int = 0, host: str = "127.0.0.1", knobs: dict[str, Any] | list[dict[str, Any]] | None = None
) -> tuple[str, Callable[[], None]]:
    """(base_url, stop): the smallest way to get a fake upstream for a test."""
    running = start_in_thread(host, port, knobs)
    return running.base_url, running.stop


def load_knobs(text: str | None) -> dict[str, Any] | list[dict[str, Any]] | None:
    """`--knobs` value: inline JSON, or `@path` to a JSON file."""
    if not text:
        return None
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    knobs = json.loads(raw)
    if not isinstance(knobs, dict | list):
        raise KnobError("--knobs must be a JSON object or an array of objects")
    return knobs


async def serve(
    host: str, port: int, knobs: dict[str, Any] | list[dict[str, Any]] | None, announce: Callable[[str], None]
) -> None:
    """Serve until SIGINT or SIGTERM; `announce` gets one line with the URL once listening."""
    runner = web.AppRunner(build_app(knobs), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    announce(f"fake_upstream listening on http://{host}:{runner.addresses[0][1]}")
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()


def run_blocking(
    host: str, port: int, knobs: dict[str, Any] | list[dict[str, Any]] | None, announce: Callable[[str], None]
) -> None:
    """Run `serve` on uvloop when it is installed (it is for daphne), else on asyncio's loop."""
    try:
        import uvloop  # optional: faster loop
    except ImportError:
        asyncio.run(serve(host, port, knobs, announce))
    else:
        uvloop.run(serve(host, port, knobs, announce))


def main(argv: list[str] | None = None) -> None:
    """`python -m routing.fake_upstream`: the same server without Django."""
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic/Ollama upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--knobs", help="JSON object or array of knob updates, or @file.json")
    args = parser.parse_args(argv)
    run_blocking(args.host, args.port, load_knobs(args.knobs), lambda line: print(line, flush=True))
    sys.exit(0)
