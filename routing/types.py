"""The gateway's one vocabulary for chat requests, answers and stream events.

Every entry point (REST, WebSocket, OpenAI- and Anthropic-compatible APIs) translates its input
into a `ChatRequest`; every provider adapter translates a `ChatRequest` into its wire protocol and
its answer back into `ChatResult` / `StreamEvent`. The shape is OpenAI's chat-completions model,
which is the widest (tools, structured output, content parts, several choices, logprobs), so
translation to Anthropic or Ollama only ever narrows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
ProviderKind = Literal["openai", "anthropic", "ollama", "openai_compatible"]


@dataclass(slots=True)
class ContentPart:
    """A piece of a message: text, or an image as a URL or a `data:` URL."""

    type: Literal["text", "image"]
    text: str = ""
    image_url: str = ""
    detail: str | None = None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@dataclass(slots=True)
class ChatMessage:
    role: Role
    # A plain string, or parts when the message carries images; None for a pure tool-call turn.
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # on role=tool: which call this answers
    name: str | None = None
    is_error: bool = False  # on role=tool: the tool failed (Anthropic's tool_result is_error)

    def text(self) -> str:
        """The message's text with image parts left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type == "text")

    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(p.type == "image" for p in self.content)


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False


# "auto" | "none" | "required" | {"name": "<function>"}
ToolChoice = str | dict[str, str]


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = "response"
    schema: dict[str, Any] | None = None
    strict: bool = False


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def system_prompt(self) -> str:
        return "\n\n".join(m.text() for m in self.messages if m.role == "system")

    def has_images(self) -> bool:
        return any(m.has_images() for m in self.messages)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the provider served from its own prompt cache
    # True when the provider reported nothing and we counted ourselves.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(slots=True)
class Choice:
    index: int
    message: ChatMessage
    finish_reason: FinishReason | None
    logprobs: list[TokenLogprob] | None = None
    # The stop sequence that ended the answer, where the provider says which (Anthropic does).
    stop_sequence: str | None = None


@dataclass(slots=True)
class ChatResult:
    """A complete (non-streamed) answer."""

    choices: list[Choice]
    usage: Usage
    upstream_id: str = ""
    upstream_model: str = ""


@dataclass(slots=True)
class StreamEvent:
    """One event of a streamed answer, the same for every provider.

    kind="text": `text` is a delta of choice `choice` (with its `logprobs`, when asked for).
    kind="tool_call": a delta of tool call `tool_index` of that choice; the first delta of a call
        carries `tool_call_id` and `tool_name`, later ones only `arguments` pieces.
    kind="logprobs": `logprobs` that came without text.
    kind="finish": choice `choice` ended with `finish_reason` (and `stop_sequence`, when known).
    kind="usage": the provider's usage report (or our estimate), once, at the end.
    """

    kind: Literal["text", "tool_call", "logprobs", "finish", "usage"]
    choice: int = 0
    text: str = ""
    tool_index: int = 0
    tool_call_id: str | None = None
    tool_name: str | None = None
    arguments: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """Where a gateway model name is served: provider, endpoint, upstream id, abilities, prices."""

    name: str  # the name clients use
    provider: str  # provider name (a catalog row)
    kind: ProviderKind
    upstream_model: str
    base_url: str
    api_key: str = ""
    context_window: int = 8192
    max_output_tokens: int = 4096
    quality_tier: int = 1
    supports_tools: bool = True
    supports_vision: bool = False
    supports_json_schema: bool = True
    supports_logprobs: bool = False
    input_price_per_mtok: Decimal = Decimal(0)
    output_price_per_mtok: Decimal = Decimal(0)
    cached_input_price_per_mtok: Decimal = Decimal(0)


class ProviderError(Exception):
    """A provider call failed. `retryable` errors may be retried or fall back to another model."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str = "upstream_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.code = code


class UnsupportedFeature(Exception):
    """The request asks for something the target model cannot honour (images, a schema...)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
