"""What a cached answer depends on: the request's scope, its exact key, and when to bypass.

Scope = tenant + model family + system prompt + earlier turns + sampling and output settings.
Two requests may share an answer only when their scopes are equal, so a follow-up such as "and
in Germany?" after a question about France can never meet an answer given in another
conversation. The exact key adds the normalised last user message (and any images).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from routing.types import ChatMessage, ChatRequest
from tenants.models import Tenant

# Bump when the key derivation changes: old entries then simply stop matching.
KEY_VERSION = "v1"

_SPACE = re.compile(r"\s+")
# NFKC has already folded full-width ? and ! to ASCII; the ideographic full stop stays.
_TRAILING_PUNCT = re.compile("[\\s?.!\u3002]+$")
# Code spans keep their case: `Foo` and `foo` are different identifiers.
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)


# Contractions spelled out, so "what's" and "what is" meet in both layers.
_CONTRACTIONS = [
    (re.compile(r"\b(can)'t\b", re.IGNORECASE), r"\1not"),
    (re.compile(r"\b(w)on't\b", re.IGNORECASE), r"\1ill not"),
    (re.compile(r"n't\b", re.IGNORECASE), " not"),
    (re.compile(r"'re\b", re.IGNORECASE), " are"),
    (re.compile(r"'ve\b", re.IGNORECASE), " have"),
    (re.compile(r"'ll\b", re.IGNORECASE), " will"),
    (re.compile(r"\b(i)'m\b", re.IGNORECASE), r"\1 am"),
    (re.compile(r"\b(what|where|who|how|when|why|it|that|there|here|he|she)'s\b", re.IGNORECASE), r"\1 is"),
]


def expand_contractions(text: str) -> str:
    text = text.replace("\u2019", "'")
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return text


def embedding_text(text: str) -> str:
    """What the semantic layer embeds for a query (stored and asked alike)."""
    return _SPACE.sub(" ", expand_contractions(unicodedata.normalize("NFKC", text))).strip()


def normalise_text(text: str) -> str:
    """Case, width, contractions and spacing folded, trailing sentence punctuation dropped; code
    spans kept as they are."""
    text = unicodedata.normalize("NFKC", text)
    parts = _CODE.split(text)
    folded = "".join(
        part if index % 2 else expand_contractions(part).casefold() for index, part in enumerate(parts)
    )
    return _TRAILING_PUNCT.sub("", _SPACE.sub(" ", folded).strip())


def _message_fingerprint(message: ChatMessage) -> dict[str, Any]:
    content: Any
    if isinstance(message.content, list):
        content = [
            {"t": normalise_text(p.text)} if p.type == "text" else {"i": p.image_url, "d": p.detail}
            for p in message.content
        ]
    else:
        content = normalise_text(message.content or "")
    fingerprint: dict[str, Any] = {"r": message.role, "c": content}
    if message.tool_calls:
        fingerprint["tc"] = [[c.name, c.arguments] for c in message.tool_calls]
    if message.tool_call_id:
        fingerprint["tid"] = message.tool_call_id
    if message.name:
        fingerprint["n"] = message.name
    return fingerprint


def _settings_fingerprint(request: ChatRequest) -> dict[str, Any]:
    """Everything besides the messages that changes what an answer looks like. `max_tokens` is
    left out: only answers that ended on their own are cached, and lookups require the answer to
    fit the new request's limit, so clients with different limits still share answers."""
    fingerprint: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop": sorted(request.stop),
        "seed": request.seed,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
    }
    if request.tools:
        fingerprint["tools"] = [[t.name, t.description, t.parameters, t.strict] for t in request.tools]
        fingerprint["tool_choice"] = request.tool_choice
        fingerprint["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None and request.response_format.type != "text":
        rf = request.response_format
        fingerprint["response_format"] = [rf.type, rf.name, rf.schema, rf.strict]
    return fingerprint


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheKeys:
    scope: str
    exact: str
    query: str  # the last user message's text, as sent: what the semantic layer embeds
    # Why the semantic layer must not serve this request ("" when it may).
    semantic_block: str


def cache_keys(tenant: Tenant, request: ChatRequest, family: str) -> CacheKeys:
    *context, last = request.messages
    scope = _digest(
        [
            KEY_VERSION,
            tenant.schema_name,
            family,
            [_message_fingerprint(m) for m in context],
            _settings_fingerprint(request),
        ]
    )
    exact = _digest([KEY_VERSION, scope, _message_fingerprint(last)])
    return CacheKeys(scope, exact, last.text(), _semantic_block(request))


def _semantic_block(request: ChatRequest) -> str:
    # Issue 9: tools, images and response schemas are served only on an exact match.
    if request.tools:
        return "tools"
    if request.has_images():
        return "images"
    if request.response_format is not None and request.response_format.type != "text":
        return "response_format"
    if not request.messages[-1].text().strip():
        return "empty"
    return ""


def bypass_reason(tenant: Tenant, request: ChatRequest, use_cache: bool) -> str:
    """Why this request may not use the cache at all ("" when it may)."""
    if not use_cache:
        return "use_cache_false"
    if not tenant.cache_enabled:
        return "disabled"
    if tenant.cache_ttl_seconds <= 0:
        return "ttl_zero"
    # No temperature means the provider's default; clients that do not ask for variety get the
    # cache, those that ask for more than the tenant's limit do not.
    if request.temperature is not None and request.temperature > tenant.cache_max_temperature:
        return "temperature"
    if not request.messages or request.messages[-1].role != "user":
        return "not_a_user_turn"
    if any(m.tool_calls or m.role == "tool" for m in request.messages):
        return "tool_calls"
    if request.n != 1:
        return "several_choices"
    if request.logprobs:
        return "logprobs"
    return ""
