"""The fake "model": deterministic replies, token counting, schema-driven JSON and embeddings.

Token rules (the same for every protocol, so tests can predict usage):

- A token is a whitespace-separated word. Prompt tokens are the words of every text in the request
  (system prompt, message texts, tool results, tool-call arguments of earlier assistant turns),
  plus 85 per image. Tool definitions and message roles cost nothing.
- The reply is "Echo:" followed by the words of the last user message, padded with lorem ipsum or
  cut to `reply_tokens` words (default 20); `reply_text` replaces the echo. After a tool result
  the reply is "Tool result: <its text>". Structured output (JSON mode, a JSON schema) replies
  with a JSON text instead. With n > 1 (OpenAI) every choice is the same and each is billed.
- The reply is streamed as pieces of one word plus the whitespace after it, so the pieces join to
  exactly the non-streamed text. Completion tokens = pieces emitted. `max_tokens` cuts the pieces
  (finish "length"); a stop sequence cuts the text just before it (finish "stop_sequence").
- Tool-call arguments are JSON texts (json.dumps with its default ", " and ": " separators),
  streamed and counted the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from routing.fake_upstream.knobs import Knobs

IMAGE_TOKENS = 85
DEFAULT_REPLY_TOKENS = 20
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco"
).split()
_PIECE = re.compile(r"\s*\S+\s*")
_WORD_CLEAN = re.compile(r"[^\w]+")


def count_words(text: str) -> int:
    return len(text.split())


def split_pieces(text: str) -> list[str]:
    """The streamed "tokens" of a text: each word with the whitespace that follows it."""
    return _PIECE.findall(text)


@dataclass(slots=True)
class Prompt:
    """What the protocol layer extracted from a request, in protocol-neutral form."""

    tokens: int  # prompt tokens by the module's rule
    last_role: str  # role of the last message; "tool" when it carries a tool result
    user_text: str  # text of the last user message ("" if none)
    tool_result: str | None  # text of the tool result when the last message carries one


@dataclass(slots=True)
class TextPlan:
    text: str
    pieces: list[str]
    finish: str  # "stop" | "length" | "stop_sequence"
    stop_sequence: str | None = None


def reply_text(knobs: Knobs, prompt: Prompt) -> str:
    """The full, uncut reply for a plain text answer."""
    if prompt.tool_result is not None:
        words = ["Tool", "result:", *prompt.tool_result.split()]
        target = knobs.reply_tokens if knobs.reply_tokens is not None else len(words)
    elif knobs.reply_text is not None:
        words = knobs.reply_text.split()
        target = knobs.reply_tokens if knobs.reply_tokens is not None else len(words)
    else:
        words = ["Echo:", *prompt.user_text.split()]
        target = knobs.reply_tokens if knobs.reply_tokens is not None else DEFAULT_REPLY_TOKENS
    if len(words) >= target:
        return " ".join(words[:target])
    return " ".join(words + [LOREM[i % len(LOREM)] for i in range(target - len(words))])


def plan_text(text: str, max_tokens: int | None, stops: list[str]) -> TextPlan:
    """Cut a reply by max_tokens and stop sequences, whichever comes first, like a real model."""
    pieces = split_pieces(text)
    finish = "stop"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces = pieces[:max_tokens]
        if pieces:
            pieces[-1] = pieces[-1].rstrip()
        text = "".join(pieces)
        finish = "length"
    if stops:
        found = [(text.find(stop), stop) for stop in stops if stop and stop in text]
        if found:
            index, stop = min(found)
            text = text[:index]
            return TextPlan(text, split_pieces(text), "stop_sequence", stop)
    return TextPlan(text, pieces, finish)


def json_answer(prompt: Prompt, knobs: Knobs) -> str:
    """The reply in JSON mode (no schema given): one object wrapping the plain reply."""
    return json.dumps({"answer": reply_text(knobs, prompt)})


# --- JSON schema -> an instance that validates --------------------------------------------------


def value_for_schema(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    """A value valid for `schema`, with strings echoing `text`.

    Covers what tool and response schemas use in practice: types (also as lists), properties and
    required, items and min/maxItems, enum, const, anyOf/oneOf/allOf, $ref into $defs/definitions,
    string formats and lengths, numeric bounds. `pattern` is not honoured.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None if depth > 12 else text
    if "$ref" in schema:
        return value_for_schema(_follow_ref(root, schema["$ref"]), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") == "null")]
            return value_for_schema((options or schema[key])[0], text, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _follow_ref(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            merged = _merge_schemas(merged, part if isinstance(part, dict) else {})
        return value_for_schema(merged, text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        wanted = schema["required"] if "required" in schema else list(properties)
        return {name: value_for_schema(properties.get(name, {}), text, root, depth + 1) for name in wanted}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        count = min(count, int(schema.get("maxItems", count)))
        item_schema = schema.get("items", {"type": "string"})
        return [value_for_schema(item_schema, text, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number_for(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_for(schema, text)


def _follow_ref(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#/").split("/") if ref.startswith("#") else []:
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
    return node


def _merge_schemas(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
    merged["required"] = list(dict.fromkeys([*left.get("required", []), *right.get("required", [])]))
    return merged


def _number_for(schema: dict[str, Any], kind: str) -> int | float:
    value: float = max(1, schema.get("minimum", 1))
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        value = schema["exclusiveMinimum"] + 1
    if "maximum" in schema and value > schema["maximum"]:
        value = schema["maximum"]
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - (1 if kind == "integer" else 0.5)
    return math.ceil(value) if kind == "integer" else float(value)


_FORMAT_EXAMPLES = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


def _string_for(schema: dict[str, Any], text: str) -> str:
    value = _FORMAT_EXAMPLES.get(schema.get("format", ""), text or "text")
    if "maxLength" in schema:
        value = value[: int(schema["maxLength"])]
    if len(value) < int(schema.get("minLength", 0)):
        value = value.ljust(int(schema["minLength"]), "x")
    return value


def tool_arguments(schema: Any, text: str) -> dict[str, Any]:
    value = value_for_schema(schema or {"type": "object", "properties": {}}, text)
    return value if isinstance(value, dict) else {}


def choose_tools(
    tools: list[dict[str, Any]], forced_name: str | None, parallel_allowed: bool, user_text: str
) -> list[dict[str, Any]]:
    """Which tools the fake calls: the named one, or the first (two when the user says "parallel")."""
    if forced_name is not None:
        return [tool for tool in tools if tool["name"] == forced_name][:1]
    if parallel_allowed and len(tools) >= 2 and "parallel" in user_text.lower().split():
        return tools[:2]
    return tools[:1]


# --- logprobs and embeddings -----------------------------------------------------------------


def token_logprob(piece: str) -> float:
    """A stable, plausible log probability for one piece (between -0.01 and -2.5)."""
    return -round(0.01 + (zlib.crc32(piece.encode()) % 2490) / 1000, 4)


def logprob_entry(piece: str, top: int) -> dict[str, Any]:
    logprob = token_logprob(piece)
    alternatives = [{"token": piece, "bytes": list(piece.encode()), "logprob": logprob}]
    for rank in range(1, top):
        word = LOREM[(zlib.crc32(piece.encode()) + rank) % len(LOREM)] + " "
        alternatives.append({"token": word, "bytes": list(word.encode()), "logprob": logprob - rank})
    return {"token": piece, "bytes": list(piece.encode()), "logprob": logprob, "top_logprobs": alternatives}


@lru_cache(maxsize=65536)
def _word_vector(word: str, dim: int) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dim))


def embed(text: str, dim: int) -> list[float]:
    """A unit vector: the normalised sum of per-word pseudo-random vectors (bag of words).

    Texts sharing words are close in cosine similarity, which makes semantic-cache tests meaningful
    without a model; identical texts give identical vectors in every process.
    """
    words = _WORD_CLEAN.sub(" ", text.lower()).split() or [""]
    total = [0.0] * dim
    for word in words:
        for i, component in enumerate(_word_vector(word, dim)):
            total[i] += component
    norm = math.sqrt(sum(c * c for c in total)) or 1.0
    return [c / norm for c in total]


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
