"""Structured logs: one JSON object a line, with the request id, trace id, tenant, and (on the
gateway's settlement line) model, provider and outcome.

`ContextFilter` adds what the request context knows to every record; `JsonFormatter` writes it.
Prompt and answer text never reach a log unless the tenant allowed it (`Tenant.log_content`):
the formatter drops the content fields of any record not marked `log_content=True`, so a
careless `logger.info(..., extra={"prompt": ...})` leaks nothing either.
"""

from __future__ import annotations

import json
import logging
import traceback
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billing.services import Settlement
    from routing.types import ChatRequest
    from tenants.models import Tenant

# Immutable per binding (a new dict each time), so a task that copied the context cannot see a
# later request's values change under it.
_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039 - never mutated

# Fields that carry what users wrote or models answered.
CONTENT_FIELDS = frozenset({"prompt", "answer", "content", "messages", "text", "user_text"})

_ALWAYS = ("request_id", "tenant", "trace_id")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "log_content"}


def bind(**fields: str) -> Token[dict[str, str]]:
    """Adds fields to the log context of this task/thread until `reset(token)`."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v}}
    return _context.set(merged)


def reset(token: Token[dict[str, str]]) -> None:
    try:
        _context.reset(token)
    except ValueError:  # a token from another context (a generator resumed elsewhere): keep going
        pass


def bound() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Puts request_id, tenant, trace_id and span_id on every record (a record's own win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        if not hasattr(record, "trace_id"):
            from opentelemetry import trace

            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                record.trace_id = format(span_context.trace_id, "032x")
                record.span_id = format(span_context.span_id, "016x")
        for key in _ALWAYS:  # so a text format may name them; the JSON formatter drops blanks
            if not hasattr(record, key):
                setattr(record, key, "")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        allow_content = bool(getattr(record, "log_content", False))
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            if (key in CONTENT_FIELDS and not allow_content) or value == "":
                continue
            entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(entry, default=str, ensure_ascii=False)


_gateway_log = logging.getLogger("gateway")


def log_settlement(tenant: Tenant, settlement: Settlement, request: ChatRequest) -> None:
    """The one line per chat request an operator greps for."""
    fields: dict[str, Any] = {
        "tenant": tenant.slug,
        "request_id": settlement.request_id,
        "model": settlement.model,
        "provider": settlement.provider,
        "outcome": settlement.outcome,
        "cache": settlement.cache_status,
        "streamed": settlement.streamed,
        "attempts": settlement.attempts,
        "prompt_tokens": settlement.prompt_tokens,
        "completion_tokens": settlement.completion_tokens,
        "cost_usd": str(settlement.cost),
        "latency_ms": settlement.latency_ms,
        "ttft_ms": settlement.ttft_ms,
        "finish_reason": settlement.finish_reason,
    }
    if tenant.log_content:
        prompt = settlement.user_text
        if prompt is None:
            asked = [m for m in request.messages if m.role == "user"]
            prompt = asked[-1].text() if asked else ""
        fields |= {"log_content": True, "prompt": prompt, "answer": settlement.text}
    _gateway_log.info("chat request settled", extra=fields)
