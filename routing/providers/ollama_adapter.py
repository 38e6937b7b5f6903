"""Ollama's native chat API (`POST /api/chat`, NDJSON when streamed) over one aiohttp session.

There is no official async SDK worth its weight here: the protocol is one endpoint and JSON lines,
so a shared `aiohttp.ClientSession` (keep-alive pool) does it with the least overhead. Mapping is
in pure functions (`build_ollama_payload`, `parse_ollama_response`, `OllamaStreamTranslator`).

What does not translate: `n > 1` and logprobs (UnsupportedFeature), images by http(s) URL (Ollama
takes base64 only, and fetching URLs on a client's behalf is not the gateway's business),
`tool_choice` beyond "none" and a named tool (Ollama cannot force a call; "required" is sent as
plain tools), `user` and `metadata` (dropped). Ollama cannot be told to call one tool at most, so
with `parallel_tool_calls: false` the gateway keeps the first call of an answer and drops the rest
(they are still billed: the model wrote them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from routing.providers.anthropic_adapter import split_data_url, tool_input
from routing.providers.base import PROVIDER_MAX_CONNECTIONS
from routing.providers.errors import (
    UPSTREAM_EXCEPTIONS,
    body_message,
    deadline_after,
    disconnected_error,
    error_for_status,
    invalid_answer_error,
    provider_error_from,
    stream_error,
    timeout_error,
    until_deadline,
)
from routing.providers.tokens import estimate_request_tokens, estimate_usage
from routing.types import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    Choice,
    ContentPart,
    FinishReason,
    ModelTarget,
    StreamEvent,
    ToolCall,
    UnsupportedFeature,
    Usage,
)

_OPTION_NAMES = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")


# --- request mapping -------------------------------------------------------------------------


def ollama_image(part: ContentPart) -> str:
    if not part.image_url.startswith("data:"):
        raise UnsupportedFeature(
            "Ollama takes images as data URLs (base64) only, not by URL", param="messages"
        )
    return split_data_url(part.image_url)[1]


def ollama_message(message: ChatMessage, tool_names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text()}
    if isinstance(message.content, list):
        images = [ollama_image(p) for p in message.content if p.type == "image"]
        if images:
            out["images"] = images
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": tool_input(c.arguments)}} for c in message.tool_calls
        ]
    if message.role == "tool":
        # Ollama matches results to calls by tool name, not id: recover it from the call.
        name = tool_names.get(message.tool_call_id or "") or message.name
        if name:
            out["tool_name"] = name
    return out


def _tools(request: ChatRequest) -> list[dict[str, Any]]:
    choice = request.tool_choice
    if choice == "none":
        return []
    specs = request.tools
    if isinstance(choice, dict):
        # Ollama cannot force a tool; offering only that one is the closest it gets.
        specs = [t for t in specs if t.name == choice.get("name")]
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in specs
    ]


def build_ollama_payload(request: ChatRequest, target: ModelTarget, *, stream: bool) -> dict[str, Any]:
    if request.n > 1:
        raise UnsupportedFeature("Ollama returns one answer a request (n must be 1)", param="n")
    if request.logprobs:
        raise UnsupportedFeature("logprobs are not supported for Ollama models", param="logprobs")
    tool_names = {call.id: call.name for m in request.messages for call in m.tool_calls}
    payload: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": [ollama_message(m, tool_names) for m in request.messages],
        "stream": stream,  # Ollama streams unless told not to
    }
    options = {name: getattr(request, name) for name in _OPTION_NAMES if getattr(request, name) is not None}
    if request.stop:
        options["stop"] = list(request.stop)
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if options:
        payload["options"] = options
    tools = _tools(request)
    if tools:
        payload["tools"] = tools
    response_format = request.response_format
    if response_format is not None and response_format.type == "json_object":
        payload["format"] = "json"
    elif response_format is not None and response_format.type == "json_schema":
        if response_format.schema is None:
            raise UnsupportedFeature("response_format json_schema needs a schema", param="response_format")
        payload["format"] = response_format.schema
    return payload


# --- answer mapping --------------------------------------------------------------------------


def ollama_tool_calls(message: dict[str, Any], first_index: int = 0) -> list[ToolCall]:
    """Ollama gives calls no ids and arguments as an object; ours need both as the OpenAI shape."""
    calls: list[ToolCall] = []
    for offset, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        calls.append(
            ToolCall(
                id=f"call_{first_index + offset}",
                name=str(function.get("name", "")),
                arguments=arguments
                if isinstance(arguments, str)
                else json.dumps(arguments, ensure_ascii=False),
            )
        )
    return calls


def finish_reason_from_ollama(done_reason: str | None, *, tool_called: bool) -> FinishReason:
    if done_reason == "length":
        return "length"
    return "tool_calls" if tool_called else "stop"


def usage_from_ollama(data: dict[str, Any], request: ChatRequest, written: list[str]) -> Usage:
    """Ollama omits prompt_eval_count when the whole prompt came from its cache; the missing count
    is estimated and the usage marked so."""
    prompt, completion = data.get("prompt_eval_count"), data.get("eval_count")
    if prompt is None and completion is None:
        return estimate_usage(request, written)
    if prompt is None:
        return Usage(estimate_request_tokens(request), int(completion or 0), estimated=True)
    return Usage(int(prompt), int(completion or 0))


def _one_call_only(request: ChatRequest) -> bool:
    return request.parallel_tool_calls is False


def parse_ollama_response(data: dict[str, Any], request: ChatRequest) -> ChatResult:
    message = data.get("message") or {}
    calls = ollama_tool_calls(message)
    written = [c.arguments for c in calls]
    if _one_call_only(request):
        calls = calls[:1]
    text = str(message.get("content") or "")
    finish = finish_reason_from_ollama(data.get("done_reason"), tool_called=bool(calls))
    usage = usage_from_ollama(data, request, [text, *written])
    return ChatResult(
        choices=[
            Choice(
                index=0,
                message=ChatMessage(
                    role="assistant", content=text or (None if calls else ""), tool_calls=calls
                ),
                finish_reason=finish,
            )
        ],
        usage=usage,
        upstream_model=str(data.get("model", "")),
    )


class OllamaStreamTranslator:
    """Turns NDJSON objects into StreamEvents; the `done: true` object ends the answer and carries
    the counts. Tool calls arrive whole in one object, so each becomes a single event."""

    def __init__(self, request: ChatRequest, provider: str) -> None:
        self._request = request
        self._provider = provider
        self._tool_count = 0
        self._written: list[str] = []
        self._usage: Usage | None = None
        self.complete = False

    def feed(self, data: dict[str, Any]) -> list[StreamEvent]:
        if "error" in data:  # the model failed mid-answer (out of memory, runner crash)
            raise stream_error(self._provider, data)
        events: list[StreamEvent] = []
        message = data.get("message") or {}
        text = message.get("content")
        if text:
            self._written.append(text)
            events.append(StreamEvent(kind="text", text=text))
        for call in ollama_tool_calls(message, self._tool_count):
            self._written.append(call.arguments)
            if self._tool_count and _one_call_only(self._request):
                continue
            events.append(
                StreamEvent(
                    kind="tool_call",
                    tool_index=self._tool_count,
                    tool_call_id=call.id,
                    tool_name=call.name,
                    arguments=call.arguments,
                )
            )
            self._tool_count += 1
        if data.get("done"):
            self.complete = True
            self._usage = usage_from_ollama(data, self._request, self._written)
            reason = finish_reason_from_ollama(data.get("done_reason"), tool_called=self._tool_count > 0)
            events.append(StreamEvent(kind="finish", finish_reason=reason))
        return events

    def usage_event(self) -> StreamEvent:
        return StreamEvent(kind="usage", usage=self._usage or estimate_usage(self._request, self._written))


# --- I/O -------------------------------------------------------------------------------------


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class OllamaAdapter:
    """One aiohttp session (keep-alive connection pool) per Ollama endpoint."""

    def __init__(self, *, base_url: str, api_key: str = "") -> None:
        self._url = base_url.rstrip("/") + "/api/chat"
        # Plain Ollama has no auth; one behind a proxy (or Ollama's cloud) takes a bearer token.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will use it (aiohttp binds to one loop).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=PROVIDER_MAX_CONNECTIONS, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None),  # the deadline is enforced per call
                read_bufsize=1 << 20,  # a streamed line can carry a whole tool call
            )
        return self._session

    async def _post(self, payload: dict[str, Any], provider: str) -> aiohttp.ClientResponse:
        response = await self._client().post(self._url, json=payload, headers=self._headers)
        if response.status >= 400:
            try:
                body = await response.read()
            finally:
                response.release()
            raise error_for_status(provider, response.status, body_message(_decode(body)), response.headers)
        return response

    async def complete(self, request: ChatRequest, target: ModelTarget, timeout: float) -> ChatResult:
        payload = build_ollama_payload(request, target, stream=False)
        if timeout <= 0:
            raise timeout_error(target.provider, timeout)
        try:
            async with asyncio.timeout(timeout):
                response = await self._post(payload, target.provider)
                async with response:
                    data = await response.json(content_type=None)
        except UPSTREAM_EXCEPTIONS as exc:
            raise provider_error_from(exc, target.provider, timeout=timeout) from exc
        except ValueError as exc:
            raise invalid_answer_error(target.provider, str(exc)) from exc
        return parse_ollama_response(data, request)

    async def stream(
        self, request: ChatRequest, target: ModelTarget, timeout: float
    ) -> AsyncIterator[StreamEvent]:
        payload = build_ollama_payload(request, target, stream=True)
        if timeout <= 0:
            raise timeout_error(target.provider, timeout)
        translator = OllamaStreamTranslator(request, target.provider)
        deadline = deadline_after(timeout)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._post(payload, target.provider)
        except UPSTREAM_EXCEPTIONS as exc:
            raise provider_error_from(exc, target.provider, timeout=timeout) from exc
        try:
            async for line in until_deadline(aiter(response.content), deadline):
                if line.strip():
                    for event in translator.feed(json.loads(line)):
                        yield event
        except UPSTREAM_EXCEPTIONS as exc:
            raise provider_error_from(exc, target.provider, timeout=timeout, streaming=True) from exc
        except ValueError as exc:  # a line cut in half by a dropped connection, typically
            raise disconnected_error(target.provider, f"invalid JSON line: {exc}") from exc
        finally:
            # A fully read response returns its connection to the pool; a broken one is closed.
            if translator.complete:
                response.release()
            else:
                response.close()
        if not translator.complete:
            raise disconnected_error(target.provider)
        yield translator.usage_event()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
