"""Cheap token estimates, for when a provider reports no usage and for admission reservations.

The heuristic is OpenAI's rule of thumb, about four characters of English text per token, counted
on UTF-8 bytes for non-ASCII text so that scripts with several bytes a character (CJK, Cyrillic)
are not badly under-counted. Each message adds a small overhead for its role and separators, each
image a fixed count. It is wrong by 10-30 percent against a real tokenizer, which is good enough
for reservations (they are settled against the provider's report) and honest because every
estimated `Usage` carries `estimated=True`. It must stay fast: admission control runs it on every
request, so no tokenizer and no JSON parsing of the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from routing.types import ChatMessage, ChatRequest, Usage

CHARS_PER_TOKEN = 4
# Role name and separators; OpenAI's cookbook counts 3-4 tokens a message for its chat format.
MESSAGE_OVERHEAD_TOKENS = 4
# Every answer is primed with the assistant role.
REPLY_PRIMER_TOKENS = 3
# OpenAI bills a 1024x1024 image at high detail as 765 tokens; Anthropic a little more. The size of
# an image is unknown without decoding it, so one figure stands for all.
IMAGE_TOKENS = 765
# A tool call's id and type wrapper, beyond its name and arguments.
TOOL_CALL_OVERHEAD_TOKENS = 8


def estimate_tokens(text: str) -> int:
    """About ceil(bytes / 4); `str.isascii` is O(1) in CPython, so ASCII text costs no encoding."""
    if not text:
        return 0
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return -(-size // CHARS_PER_TOKEN)


def estimate_message_tokens(message: ChatMessage) -> int:
    tokens = MESSAGE_OVERHEAD_TOKENS
    content = message.content
    if isinstance(content, str):
        tokens += estimate_tokens(content)
    elif content:
        for part in content:
            tokens += IMAGE_TOKENS if part.type == "image" else estimate_tokens(part.text)
    for call in message.tool_calls:
        tokens += TOOL_CALL_OVERHEAD_TOKENS + estimate_tokens(call.name) + estimate_tokens(call.arguments)
    if message.name:
        tokens += estimate_tokens(message.name)
    return tokens


def estimate_request_tokens(request: ChatRequest) -> int:
    """Prompt tokens of `request`: its messages plus its tool definitions (which providers bill
    as part of the prompt). Does not include the answer; add `max_tokens` for a reservation."""
    tokens = REPLY_PRIMER_TOKENS + sum(estimate_message_tokens(m) for m in request.messages)
    for tool in request.tools:
        # Tools are few and small; serialising their schema is the honest size of what is sent.
        tokens += estimate_tokens(tool.name) + estimate_tokens(tool.description)
        tokens += estimate_tokens(json.dumps(tool.parameters, separators=(",", ":")))
    return tokens


def estimate_usage(request: ChatRequest, completion_texts: Iterable[str]) -> Usage:
    """A `Usage` counted by us, marked `estimated`, from the request and what the model wrote
    (text and tool-call arguments of every choice)."""
    return Usage(
        prompt_tokens=estimate_request_tokens(request),
        completion_tokens=sum(estimate_tokens(text) for text in completion_texts),
        estimated=True,
    )
