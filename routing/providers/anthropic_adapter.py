"""Anthropic's Messages API over the official SDK (aiohttp transport).

Mapping is in pure functions (`build_anthropic_params`, `parse_anthropic_message`,
`AnthropicStreamTranslator`). What does not translate:
- `n > 1` and logprobs: Anthropic has neither, so UnsupportedFeature rather than a quiet change.
- temperature above 1: Anthropic's range is 0..1 and clamping would silently change sampling.
- presence/frequency penalty, seed and metadata other than `user`: no equivalent; they are hints
  whose absence leaves the request answerable, so they are dropped.
- response_format: Anthropic is asked to call a tool whose input schema is the wanted format, and
  that tool's input becomes the answer's text (see `structured_tool`).
The SDK (2.x) no longer takes temperature/top_p/top_k as arguments; the API does, so they go in
`extra_body`. As in the OpenAI adapter, the SDK sends the request and raises on error statuses and
the answer is read as raw JSON: the mapping below is over the wire format, not the SDK's classes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic

from routing.providers.base import connection_limits
from routing.providers.errors import (
    UPSTREAM_EXCEPTIONS,
    deadline_after,
    disconnected_error,
    invalid_answer_error,
    provider_error_from,
    sse_data,
    stream_error,
    timeout_error,
    until_deadline,
)
from routing.providers.tokens import estimate_usage
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
    ToolSpec,
    UnsupportedFeature,
    Usage,
)

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^,]*)?;base64,(?P<data>.*)$", re.DOTALL)
_TOOL_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_PERMISSIVE_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


# --- request mapping -------------------------------------------------------------------------


def split_data_url(url: str) -> tuple[str, str]:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL."""
    match = _DATA_URL.match(url)
    if match is None:
        raise UnsupportedFeature(
            "an image data URL must be base64: data:<type>;base64,<data>", param="messages"
        )
    return match["media"], match["data"]


def anthropic_image(part: ContentPart) -> dict[str, Any]:
    if part.image_url.startswith("data:"):
        media_type, data = split_data_url(part.image_url)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if part.image_url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": part.image_url}}
    raise UnsupportedFeature("an image must be an http(s) URL or a data URL", param="messages")


def _content_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    # Anthropic refuses empty text blocks, so they are left out.
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [
        anthropic_image(p) if p.type == "image" else {"type": "text", "text": p.text}
        for p in content
        if p.type == "image" or p.text
    ]


def tool_input(arguments: str) -> dict[str, Any]:
    """Anthropic wants a tool call's input as an object; ours is JSON text from some model, which
    may be truncated. Unparseable text is kept under a key so the model still sees it."""
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {"_raw_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def _message_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        blocks = _content_blocks(message.content)
        if blocks:
            result["content"] = blocks
        if message.is_error:
            result["is_error"] = True
        return [result]
    if message.role == "assistant" and message.has_images():
        raise UnsupportedFeature("an assistant message cannot carry images", param="messages")
    blocks = _content_blocks(message.content)
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)}
        for call in message.tool_calls
    )
    return blocks


def anthropic_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, turns). Anthropic takes the system prompt apart and needs user and assistant
    turns to alternate, so same-role neighbours (tool results are user turns) are merged."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.has_images():
                raise UnsupportedFeature("a system message cannot carry images", param="messages")
            system.append(message.text())
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _message_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Tool results must open their user turn, before any text merged into it.
        if turn["role"] == "user" and len(turn["content"]) > 1:
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return "\n\n".join(text for text in system if text), turns


def anthropic_tool(spec: ToolSpec) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": spec.name, "input_schema": spec.parameters}
    if spec.description:
        tool["description"] = spec.description
    if spec.strict:
        tool["strict"] = True
    return tool


def structured_tool_name(name: str, tools: list[ToolSpec]) -> str:
    """A tool name Anthropic accepts, different from every client tool."""
    candidate = _TOOL_NAME_UNSAFE.sub("_", name)[:60] or "response"
    taken = {t.name for t in tools}
    while candidate in taken:
        candidate += "_"
    return candidate


@dataclass(slots=True)
class AnthropicCall:
    params: dict[str, Any]
    # The forced tool standing in for response_format, whose input is the answer's text.
    structured_tool: str | None = None


def _tools_and_choice(request: ChatRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    tools = [anthropic_tool(t) for t in request.tools]
    choice = request.tool_choice
    response_format = request.response_format
    structured: str | None = None
    tool_choice: dict[str, Any] | None = None
    if response_format is not None and response_format.type != "text" and choice in (None, "auto", "none"):
        # With "required" or a named tool the client asked for a tool call, and the format
        # applies to a later answer, so only a free choice turns into the structured tool.
        schema = response_format.schema if response_format.type == "json_schema" else _PERMISSIVE_OBJECT
        if not schema or schema.get("type") != "object":
            raise UnsupportedFeature(
                "Anthropic needs a json_schema whose root is an object", param="response_format"
            )
        structured = structured_tool_name(response_format.name, request.tools)
        spec = ToolSpec(structured, "Give your answer as this tool's input.", schema, response_format.strict)
        if tools and choice != "none":
            tools.append(anthropic_tool(spec))
            tool_choice = {"type": "any"}  # a client tool, or the answer in the structured tool
        else:
            tools = [anthropic_tool(spec)]
            tool_choice = {"type": "tool", "name": structured}
    elif isinstance(choice, dict):
        if not choice.get("name"):
            raise UnsupportedFeature("a named tool_choice needs a function name", param="tool_choice")
        tool_choice = {"type": "tool", "name": choice["name"]}
    elif choice is not None:
        mapped = {"auto": "auto", "none": "none", "required": "any"}.get(choice)
        if mapped is None:
            raise UnsupportedFeature(f"unknown tool_choice {choice!r}", param="tool_choice")
        tool_choice = {"type": mapped}
    if request.parallel_tool_calls is False and tools:
        tool_choice = tool_choice or {"type": "auto"}
        if tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
    return tools, (tool_choice if tools else None), structured


def build_anthropic_params(request: ChatRequest, target: ModelTarget) -> AnthropicCall:
    if request.n > 1:
        raise UnsupportedFeature("Anthropic models return one answer a request (n must be 1)", param="n")
    if request.logprobs:
        raise UnsupportedFeature("Anthropic models do not return logprobs", param="logprobs")
    if request.temperature is not None and request.temperature > 1:
        raise UnsupportedFeature(
            f"temperature {request.temperature} is out of range for Anthropic models (0 to 1)",
            param="temperature",
        )
    system, messages = anthropic_messages(request.messages)
    params: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": messages,
        "max_tokens": request.max_tokens if request.max_tokens is not None else target.max_output_tokens,
    }
    if system:
        params["system"] = system
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    tools, tool_choice, structured = _tools_and_choice(request)
    if tools:
        params["tools"] = tools
    if tool_choice is not None:
        params["tool_choice"] = tool_choice
    if request.user:
        params["metadata"] = {"user_id": request.user}
    sampling = {
        name: getattr(request, name)
        for name in ("temperature", "top_p", "top_k")
        if getattr(request, name) is not None
    }
    if sampling:
        params["extra_body"] = sampling
    return AnthropicCall(params=params, structured_tool=structured)


# --- answer mapping --------------------------------------------------------------------------


def finish_reason_from_anthropic(stop_reason: str | None, *, client_tool_called: bool) -> FinishReason | None:
    if stop_reason is None:
        return None
    if stop_reason == "tool_use" and not client_tool_called:
        return "stop"  # it called the structured-output tool: that was the answer
    return _STOP_REASONS.get(stop_reason, "stop")


def usage_from_anthropic(usage: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens excludes cache reads and writes; our prompt_tokens is the whole
    prompt, so they are added back, and cache reads are reported as cached."""
    cache_read = usage.get("cache_read_input_tokens") or 0
    return Usage(
        prompt_tokens=(usage.get("input_tokens") or 0)
        + cache_read
        + (usage.get("cache_creation_input_tokens") or 0),
        completion_tokens=usage.get("output_tokens") or 0,
        cached_tokens=cache_read,
    )


def parse_anthropic_message(data: dict[str, Any], call: AnthropicCall, request: ChatRequest) -> ChatResult:
    """A message object (the response JSON) as our result."""
    texts: list[str] = []
    structured: list[str] = []
    calls: list[ToolCall] = []
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use" and block.get("name") == call.structured_tool:
            structured.append(json.dumps(block.get("input") or {}, ensure_ascii=False))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(ToolCall(id=block.get("id", ""), name=block.get("name", ""), arguments=arguments))
        # Thinking and server-tool blocks have no place in our vocabulary and are left out.
    # A structured answer is the JSON alone: any text around it would make it unparseable.
    text = structured[0] if structured else "".join(texts)
    finish = finish_reason_from_anthropic(data.get("stop_reason"), client_tool_called=bool(calls))
    chat_message = ChatMessage(role="assistant", content=text or (None if calls else ""), tool_calls=calls)
    usage = data.get("usage")
    return ChatResult(
        choices=[
            Choice(
                index=0,
                message=chat_message,
                finish_reason=finish,
                stop_sequence=data.get("stop_sequence") if finish == "stop" else None,
            )
        ],
        usage=usage_from_anthropic(usage) if usage else estimate_usage(request, [text]),
        upstream_id=data.get("id") or "",
        upstream_model=data.get("model") or "",
    )


class AnthropicStreamTranslator:
    """Turns Anthropic's block-structured events (the JSON of each `data:` line) into StreamEvents.

    Blocks are numbered across text and tool blocks; our `tool_index` counts client tool calls only.
    The structured-output tool's input arrives as JSON pieces, which become text.
    """

    def __init__(self, request: ChatRequest, structured_tool: str | None, provider: str = "") -> None:
        self._request = request
        self._structured_tool = structured_tool
        self._provider = provider
        self._blocks: dict[int, tuple[str, int]] = {}  # block index -> (kind, tool index)
        self._tool_count = 0
        self._usage: dict[str, int] = {}
        self._written: list[str] = []
        self.complete = False  # message_stop arrived

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        if kind == "content_block_delta":  # by far the most frequent: first
            return self._delta(event.get("index", 0), event.get("delta") or {})
        if kind == "content_block_start":
            return self._block_start(event.get("index", 0), event.get("content_block") or {})
        if kind == "message_start":
            self._update_usage((event.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._update_usage(event.get("usage"))
            delta = event.get("delta") or {}
            reason = finish_reason_from_anthropic(
                delta.get("stop_reason"), client_tool_called=self._tool_count > 0
            )
            if reason is not None:
                stop_sequence = delta.get("stop_sequence") if reason == "stop" else None
                return [StreamEvent(kind="finish", finish_reason=reason, stop_sequence=stop_sequence)]
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            raise stream_error(self._provider, event)
        return []  # ping, content_block_stop

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        block, tool_index = self._blocks.get(index, ("other", 0))
        if delta.get("type") == "text_delta" and delta.get("text"):
            self._written.append(delta["text"])
            return [StreamEvent(kind="text", text=delta["text"])]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            piece = delta["partial_json"]
            self._written.append(piece)
            if block == "structured":
                return [StreamEvent(kind="text", text=piece)]
            if block == "tool":
                return [StreamEvent(kind="tool_call", tool_index=tool_index, arguments=piece)]
        return []  # thinking and signature deltas are not ours to show

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "tool_use" and block.get("name") == self._structured_tool:
            self._blocks[index] = ("structured", 0)
        elif kind == "tool_use":
            tool_index = self._tool_count
            self._tool_count += 1
            self._blocks[index] = ("tool", tool_index)
            return [
                StreamEvent(
                    kind="tool_call",
                    tool_index=tool_index,
                    tool_call_id=block.get("id"),
                    tool_name=block.get("name"),
                )
            ]
        elif kind == "text":
            self._blocks[index] = ("text", 0)
            if block.get("text"):
                self._written.append(block["text"])
                return [StreamEvent(kind="text", text=block["text"])]
        return []

    def _update_usage(self, report: dict[str, Any] | None) -> None:
        """message_start reports every count; message_delta repeats them cumulatively (input
        counts only sometimes), so each count keeps its latest reported value."""
        for name, value in (report or {}).items():
            if isinstance(value, int):
                self._usage[name] = value

    def usage_event(self) -> StreamEvent:
        if not self._usage:
            return StreamEvent(kind="usage", usage=estimate_usage(self._request, self._written))
        return StreamEvent(kind="usage", usage=usage_from_anthropic(self._usage))


# --- I/O -------------------------------------------------------------------------------------


class AnthropicAdapter:
    """One `AsyncAnthropic` client (one aiohttp connection pool) per endpoint and key."""

    def __init__(self, *, base_url: str, api_key: str) -> None:
        # The SDK appends /v1/messages itself; a catalog entry ending in /v1 would double it.
        base_url = base_url.rstrip("/").removesuffix("/v1")
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url,
            api_key=api_key or "no-key",
            max_retries=0,  # one attempt: retries belong to the router
            http_client=anthropic.DefaultAioHttpClient(limits=connection_limits()),
        )

    async def complete(self, request: ChatRequest, target: ModelTarget, timeout: float) -> ChatResult:
        call = build_anthropic_params(request, target)
        if timeout <= 0:
            raise timeout_error(target.provider, timeout)
        try:
            async with asyncio.timeout(timeout):
                raw = await self._client.messages.with_raw_response.create(**call.params, timeout=timeout)
                data = json.loads(raw.http_response.content)
        except UPSTREAM_EXCEPTIONS as exc:
            raise provider_error_from(exc, target.provider, timeout=timeout) from exc
        except ValueError as exc:
            raise invalid_answer_error(target.provider, str(exc)) from exc
        return parse_anthropic_message(data, call, request)

    async def stream(
        self, request: ChatRequest, target: ModelTarget, timeout: float
    ) -> AsyncIterator[StreamEvent]:
        call = build_anthropic_params(request, target)
        if timeout <= 0:
            raise timeout_error(target.provider, timeout)
        translator = AnthropicStreamTranslator(request, call.structured_tool, target.provider)
        deadline = deadline_after(timeout)
        create = self._client.messages.with_streaming_response.create
        try:
            async with asyncio.timeout_at(deadline):
                # Entered by hand: the response outlives this block and is closed below.
                response = await create(**call.params, stream=True, timeout=timeout).__aenter__()
        except UPSTREAM_EXCEPTIONS as exc:
            raise provider_error_from(exc, target.provider, timeout=timeout) from exc
        try:
            async for payload in until_deadline(sse_data(response.iter_lines()), deadline):
                for event in translator.feed(json.loads(payload)):
                    yield event
        except UPSTREAM_EXCEPTIONS as exc:
            raise provider_error_from(exc, target.provider, timeout=timeout, streaming=True) from exc
        except ValueError as exc:  # an event cut in half by a dropped connection
            raise disconnected_error(target.provider, f"invalid JSON: {exc}") from exc
        finally:
            await response.close()
        if not translator.complete:
            raise disconnected_error(target.provider)
        yield translator.usage_event()

    async def aclose(self) -> None:
        await self._client.close()
