"""Knobs (behaviour switches) and call statistics of the fake upstream.

Knobs live in *layers* keyed by (provider, model). Either part may be "*" (any) and the model may
be a glob such as "gpt-4*". A request for (provider, model) sees the merge of every matching layer,
least specific first, so a more specific layer overrides a general one: a more specific model wins,
and on a tie the named provider beats "*". The provider is the endpoint's: "openai" for
/v1/chat/completions and /v1/embeddings, "anthropic" for /v1/messages, "ollama" for /api/chat,
"llama" for the OpenAI-compatible /llama/v1/... routes.

Failures: with `fail_next: K` in a matching layer exactly the next K calls fail (with
`error_status`, default 500) and later calls succeed; otherwise `error_status` fails each call with
probability `error_rate` (default 1.0, i.e. every call), drawn from an RNG seeded by the knob
values and `seed`, so a test replays the same sequence after setting the same knobs.

Both the aiohttp loop and a test thread (through `UpstreamState`) touch this state, hence the lock;
it is held for microseconds and never across an await.
"""

from __future__ import annotations

import fnmatch
import json
import random
import threading
import zlib
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

PROVIDERS = ("openai", "anthropic", "ollama", "llama")

# name -> accepted Python types; None is always accepted and means "unset in this layer".
KNOB_TYPES: dict[str, tuple[type, ...]] = {
    "latency_ms": (int, float),
    "ttft_ms": (int, float),
    "tokens_per_second": (int, float),
    "error_status": (int,),
    "error_rate": (int, float),
    "error_message": (str,),
    "retry_after": (int, float),
    "fail_next": (int,),
    "disconnect_after_tokens": (int,),
    "stream_error_after_tokens": (int,),
    "reply_tokens": (int,),
    "reply_text": (str,),
    "tool_preamble": (str,),
    "vision": (bool,),
    "embedding_dim": (int,),
    "seed": (int,),
}

# Model names that accept images unless the `vision` knob says otherwise.
_VISION_MARKERS = ("gpt-4o", "gpt-4.1", "gpt-5", "claude", "llava", "vision", "-vl", "gemma3")
_CACHE_LIMIT = 1024


class KnobError(ValueError):
    """A control request named an unknown knob or gave a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class Knobs:
    """The knobs in force for one (provider, model) pair."""

    latency_ms: float = 0.0  # wait before a non-streamed answer (and before any error answer)
    ttft_ms: float = 0.0  # wait before the first streamed token
    tokens_per_second: float = 0.0  # pacing of streamed tokens; 0 = as fast as possible
    error_status: int | None = None  # fail with this HTTP status ...
    error_rate: float = 1.0  # ... with this probability (seeded RNG, reproducible)
    error_message: str | None = None
    retry_after: float | None = None  # seconds, sent as Retry-After on error answers
    fail_next: int | None = None  # fail exactly the next K calls, then succeed
    disconnect_after_tokens: int | None = None  # drop the TCP connection after N streamed tokens
    stream_error_after_tokens: int | None = None  # in-stream error event after N tokens
    reply_tokens: int | None = None  # reply length in words; default 20 (or len(reply_text))
    reply_text: str | None = None  # fixed reply instead of the echo
    tool_preamble: str | None = None  # text written before tool calls ("Let me check.")
    vision: bool | None = None  # None = guess from the model name
    embedding_dim: int = 384
    seed: int = 0


DEFAULT_KNOBS = Knobs()
_KNOB_DEFAULTS = asdict(DEFAULT_KNOBS)
assert set(KNOB_TYPES) == {f.name for f in fields(Knobs)}


def accepts_images(knobs: Knobs, model: str) -> bool:
    if knobs.vision is not None:
        return knobs.vision
    lowered = model.lower()
    return any(marker in lowered for marker in _VISION_MARKERS)


def _specificity(pattern: str) -> int:
    if pattern == "*":
        return 0
    return 1 if any(ch in pattern for ch in "*?[") else 2


def _matches(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value or fnmatch.fnmatchcase(value, pattern)


class _Layer:
    __slots__ = ("fail_remaining", "model", "provider", "values")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.values: dict[str, Any] = {}
        self.fail_remaining = 0

    def sort_key(self) -> tuple[int, int]:
        return (_specificity(self.model), _specificity(self.provider))

    def as_dict(self) -> dict[str, Any]:
        shown = dict(self.values)
        if "fail_next" in shown:
            shown["fail_next"] = self.fail_remaining
        return {"provider": self.provider, "model": self.model, **shown}


class _Resolved:
    """Knobs for one (provider, model) plus the per-pair state that must survive between calls."""

    __slots__ = ("fail_layers", "knobs", "rng")

    def __init__(self, knobs: Knobs, fail_layers: list[_Layer]) -> None:
        self.knobs = knobs
        self.fail_layers = fail_layers
        # Seeded from the knob values so a test that sets the same knobs sees the same failures.
        blob = json.dumps(asdict(knobs), sort_keys=True).encode()
        self.rng = random.Random(zlib.crc32(blob) ^ knobs.seed)


def validate_knob_update(update: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Split a control request into (provider, model, knob values), rejecting bad names and types."""
    if not isinstance(update, dict):
        raise KnobError("a knob update must be a JSON object")
    values = dict(update)
    provider = values.pop("provider", "*")
    model = values.pop("model", "*")
    if not isinstance(provider, str) or (provider != "*" and provider not in PROVIDERS):
        raise KnobError(f"provider must be '*' or one of {', '.join(PROVIDERS)}")
    if not isinstance(model, str) or not model:
        raise KnobError("model must be a non-empty string ('*' for any)")
    for name, value in values.items():
        if name not in KNOB_TYPES:
            raise KnobError(f"unknown knob {name!r}; known: {', '.join(sorted(KNOB_TYPES))}")
        if value is None:
            continue
        # bool is an int subclass: refuse True as a status code, accept only real bools for `vision`.
        if isinstance(value, bool) != (KNOB_TYPES[name] == (bool,)) or not isinstance(
            value, KNOB_TYPES[name]
        ):
            raise KnobError(f"knob {name!r} has the wrong type: {value!r}")
        _check_range(name, value)
    return provider, model, values


def _check_range(name: str, value: Any) -> None:
    if name == "error_rate" and not 0.0 <= value <= 1.0:
        raise KnobError("error_rate must be between 0 and 1")
    if name == "error_status" and not 400 <= value <= 599:
        raise KnobError("error_status must be an HTTP error status (400-599)")
    if name in ("reply_tokens", "embedding_dim", "fail_next") and value < (
        1 if name == "embedding_dim" else 0
    ):
        raise KnobError(f"{name} must not be negative")


class KnobStore:
    """Layered knobs with a per-(provider, model) cache, so the hot path is one dict lookup."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layers: dict[tuple[str, str], _Layer] = {}
        self._cache: dict[tuple[str, str], _Resolved] = {}

    def update(self, update: dict[str, Any]) -> None:
        """Merge one knob update into its layer; a None value removes that knob from the layer."""
        provider, model, values = validate_knob_update(update)
        with self._lock:
            layer = self._layers.setdefault((provider, model), _Layer(provider, model))
            for name, value in values.items():
                if value is None:
                    layer.values.pop(name, None)
                else:
                    layer.values[name] = value
            if "fail_next" in values:
                layer.fail_remaining = values["fail_next"] or 0
            if not layer.values:
                del self._layers[(provider, model)]
            self._cache.clear()

    def update_many(self, updates: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Apply one update or a list; nothing is applied unless every update is valid."""
        batch = updates if isinstance(updates, list) else [updates]
        for update in batch:
            validate_knob_update(update)
        for update in batch:
            self.update(update)

    def remove(self, provider: str = "*", model: str = "*") -> bool:
        with self._lock:
            self._cache.clear()
            return self._layers.pop((provider, model), None) is not None

    def clear(self) -> None:
        with self._lock:
            self._layers.clear()
            self._cache.clear()

    def layers(self) -> list[dict[str, Any]]:
        with self._lock:
            ordered = sorted(self._layers.values(), key=_Layer.sort_key)
            return [layer.as_dict() for layer in ordered]

    def configured_models(self, provider: str) -> list[str]:
        """Model names (not globs) that have knobs, so model listings can show them."""
        with self._lock:
            return sorted({m for (p, m) in self._layers if p in ("*", provider) and _specificity(m) == 2})

    def _resolve_locked(self, provider: str, model: str) -> _Resolved:
        key = (provider, model)
        resolved = self._cache.get(key)
        if resolved is None:
            matching = sorted(
                (
                    layer
                    for layer in self._layers.values()
                    if _matches(layer.provider, provider) and _matches(layer.model, model)
                ),
                key=_Layer.sort_key,
            )
            merged: dict[str, Any] = dict(_KNOB_DEFAULTS)
            for layer in matching:
                merged.update(layer.values)
            fail_layers = [layer for layer in reversed(matching) if "fail_next" in layer.values]
            resolved = _Resolved(Knobs(**merged), fail_layers)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # request-supplied model names must not grow memory forever
            self._cache[key] = resolved
        return resolved

    def resolve(self, provider: str, model: str) -> Knobs:
        with self._lock:
            return self._resolve_locked(provider, model).knobs

    def admit(self, provider: str, model: str) -> tuple[Knobs, int | None]:
        """Knobs for this call and the error status it must fail with (None: it succeeds).

        `fail_next` layers, when present, decide alone: exactly K calls fail, then calls succeed.
        Otherwise `error_status` fails a call with probability `error_rate`.
        """
        with self._lock:
            resolved = self._resolve_locked(provider, model)
            knobs = resolved.knobs
            if resolved.fail_layers:
                for layer in resolved.fail_layers:
                    if layer.fail_remaining > 0:
                        layer.fail_remaining -= 1
                        return knobs, knobs.error_status or 500
                return knobs, None
            if knobs.error_status is None:
                return knobs, None
            if knobs.error_rate >= 1.0 or resolved.rng.random() < knobs.error_rate:
                return knobs, knobs.error_status
            return knobs, None


class CallStats:
    """Per provider/model call counters and a short log of recent requests."""

    COUNTERS = ("total", "errors", "streamed", "disconnected")

    def __init__(self, log_size: int = 200) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, dict[str, int]]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)

    def record(self, provider: str, model: str, counter: str, entry: dict[str, Any] | None = None) -> None:
        with self._lock:
            per_model = self._counts.setdefault(provider, {})
            counts = per_model.get(model)
            if counts is None:
                counts = per_model[model] = dict.fromkeys(self.COUNTERS, 0)
            counts[counter] += 1
            if entry is not None:
                self._log.append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {p: {m: dict(c) for m, c in models.items()} for p, models in self._counts.items()}

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._log)
        return entries[-limit:] if limit else entries

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()


class UpstreamState:
    """Everything one fake upstream instance remembers: knobs and call statistics."""

    def __init__(self, knobs: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
        self.knobs = KnobStore()
        self.stats = CallStats()
        if knobs:
            self.knobs.update_many(knobs)

    def count(self, provider: str, model: str, counter: str) -> int:
        """One counter, e.g. `state.count("openai", "gpt-4o", "total")`, for terse test asserts."""
        return self.stats.snapshot().get(provider, {}).get(model, {}).get(counter, 0)
