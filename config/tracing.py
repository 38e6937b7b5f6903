"""OpenTelemetry: one trace per chat request, from the HTTP request or WebSocket message that
asked, through admission, the cache (and its embedding), routing and every provider attempt, to
settlement, with the database, Redis and Celery calls each step makes as children.

Configured by the standard variables: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT / _HEADERS / _PROTOCOL, and
OTEL_TRACES_EXPORTER (otlp, console or none). Without an OTLP endpoint the default exporter is
none: spans are still made, so trace ids reach the logs and the `x-trace-id` header, but nothing
is sent to a collector that is not there. OTEL_SDK_DISABLED=true turns all of it off.

A streamed answer's `gateway.chat` span lasts until the answer is settled, which is after the
HTTP response (or the WebSocket message handler) that started it has returned.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from config import health, metrics
from config import logging as log_context

if TYPE_CHECKING:
    from billing.services import Settlement
    from chat.gateway import Caller, GatewayCall
    from routing.types import ModelTarget

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("chatplatform.gateway")

P = ParamSpec("P")
R = TypeVar("R")


# --- setup -----------------------------------------------------------------------------------


class DatastoreCallsNeedAParent(Sampler):
    """Drops client spans (Redis, Postgres) that belong to no request.

    A streamed answer writes one Redis event per delta after its request has returned, and
    background loops poll Redis; as root spans each would be a one-span trace of its own,
    thousands an hour, that nobody reads. Everything else goes to the configured sampler."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"DatastoreCallsNeedAParent{{{self.delegate.get_description()}}}"


_configured = False
_lock = threading.Lock()


def _exporter_from_env() -> SpanExporter | None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none").split(",")[0].strip()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* variables itself
    if name == "console":
        return ConsoleSpanExporter()
    if name not in ("none", ""):
        logger.warning("tracing: OTEL_TRACES_EXPORTER=%s is not supported here; exporting nothing", name)
    return None


def configure_tracing(service_name: str = "chat-platform") -> bool:
    """Sets the tracer provider and instruments Django, Redis, Celery and the database.

    Call once per process before Django builds its middleware chain (config/asgi.py) or in a
    Celery worker after it forks (config/celery_app.py). Idempotent; False when disabled."""
    global _configured
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    with _lock:
        if _configured:
            return True
        os.environ.setdefault("OTEL_SERVICE_NAME", service_name)
        if isinstance(trace.get_tracer_provider(), TracerProvider):  # set up already (tests)
            instrument_libraries()
            _configured = True
            return True
        exporter = _exporter_from_env()
        # With nowhere to send them, spans are not recorded at all (ALWAYS_OFF): they still carry
        # trace ids (the x-trace-id header, the logs' trace_id), at a fraction of the cost of
        # recording a dozen spans per request for nobody (benchmarks/peer_gateway.sh profile).
        delegate = _get_from_env_or_default() if exporter is not None else ALWAYS_OFF
        provider = TracerProvider(
            resource=Resource.create(),  # service.name and OTEL_RESOURCE_ATTRIBUTES from the env
            sampler=DatastoreCallsNeedAParent(delegate),
        )
        trace.set_tracer_provider(provider)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        # Without an exporter, only the request span, for the ids: a span around every Redis
        # command was a tenth of the CPU of 1,000 streaming sockets (a write per delta), for nobody.
        instrument_libraries(requests_only=exporter is None)
        _configured = True
        return True


def _instrumentors(requests_only: bool = False) -> list[Any]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    if requests_only:
        return [DjangoInstrumentor()]
    return [DjangoInstrumentor(), RedisInstrumentor(), CeleryInstrumentor()]


def instrument_libraries(requests_only: bool = False) -> None:
    """Django (the HTTP request span; the ASGI instrumentation package must be installed for
    ASGI requests) and, unless `requests_only`, Redis (every client, sync and asyncio), Celery
    (the trace context travels in task headers) and Postgres."""
    # Probes and scrapes would be most of the traces and say nothing.
    os.environ.setdefault("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "healthz,readyz,metrics")
    for instrumentor in _instrumentors(requests_only):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
    if not requests_only:
        instrument_database()


def uninstrument_libraries() -> None:
    """Undoes instrument_libraries (tests)."""
    from django.db.backends.signals import connection_created

    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    connection_created.disconnect(dispatch_uid=_DB_SIGNAL_UID)


# --- the database ----------------------------------------------------------------------------
# Django's own hook (an execute wrapper on every connection) rather than wrapping the driver:
# the psycopg instrumentation lags the SDK's releases, and this sees the query Django really runs.

_DB_SIGNAL_UID = "config.tracing.database"


def _database_span(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Mapping[str, Any]
) -> Any:
    if not trace.get_current_span().get_span_context().is_valid:
        return execute(sql, params, many, context)  # no request around it: not worth a span
    db = context["connection"].settings_dict
    operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "SQL"
    attributes: dict[str, Any] = {
        "db.system": "postgresql",
        "db.system.name": "postgresql",
        "db.namespace": str(db.get("NAME") or ""),
        "db.operation.name": operation,
        # Django passes values as parameters: the text holds placeholders, not anyone's data.
        "db.query.text": sql[:2000],
        "server.address": str(db.get("HOST") or "localhost"),
    }
    if db.get("PORT"):
        attributes["server.port"] = int(db["PORT"])
    with _tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
        return execute(sql, params, many, context)


def _trace_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _database_span not in connection.execute_wrappers:
        # First, not last: Django's `execute_wrapper()` pops the last entry when its block ends.
        connection.execute_wrappers.insert(0, _database_span)


def instrument_database() -> None:
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection_created.connect(_trace_connection, dispatch_uid=_DB_SIGNAL_UID)
    for connection in connections.all(initialized_only=True):  # this thread's, opened already
        _trace_connection(None, connection)


# --- reading the current trace ---------------------------------------------------------------


def current_trace_id() -> str:
    """The current trace id as 32 hex digits, or "" when there is no trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def current_context() -> Context:
    return otel_context.get_current()


class TraceIdMiddleware:
    """Echoes the trace id as `x-trace-id` (a support ticket can quote it) and binds the request
    id into the log context. Sits right after RequestIdMiddleware."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    @staticmethod
    def _before(request: HttpRequest) -> Any:
        request_id = getattr(request, "request_id", "")
        if request_id:
            trace.get_current_span().set_attribute("http.request.id", request_id)
        return log_context.bind(request_id=request_id)

    @staticmethod
    def _after(response: HttpResponse) -> HttpResponse:
        trace_id = current_trace_id()
        if trace_id:
            response["x-trace-id"] = trace_id
        return response

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = self._before(request)
        try:
            return self._after(self.get_response(request))
        finally:
            log_context.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = self._before(request)
        try:
            return self._after(await self.get_response(request))
        finally:
            log_context.reset(token)


# --- spans of the gateway --------------------------------------------------------------------


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def traced(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """A span around every call of an async function."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with _tracer.start_as_current_span(name):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


# gen_ai.provider.name's well-known values, by adapter kind.
_PROVIDER_NAMES = {
    "openai": "openai",
    "openai_compatible": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
}


def _settlement_attributes(current: Span, settlement: Settlement) -> None:
    current.set_attributes(
        {
            "gen_ai.response.model": settlement.model,
            "gen_ai.usage.input_tokens": settlement.prompt_tokens,
            "gen_ai.usage.output_tokens": settlement.completion_tokens,
            "gen_ai.response.finish_reasons": [settlement.finish_reason or "unknown"],
            "gateway.provider": settlement.provider,
            "gateway.cache": settlement.cache_status,
            "gateway.outcome": settlement.outcome,
            "gateway.attempts": settlement.attempts,
            "gateway.cost_usd": float(settlement.cost),
            "gateway.usage_estimated": settlement.usage_estimated,
        }
    )


def _record_failure(current: Span, exc: BaseException, tenant: str) -> None:
    from config.errors import ApiError

    if isinstance(exc, ApiError):
        metrics.count_request_failure(tenant, exc.status_code)
        current.set_attributes({"error.type": exc.code, "http.response.status_code": exc.status_code})
        current.set_status(Status(StatusCode.ERROR, exc.code))
    else:
        metrics.count_request_failure(tenant, 500)
        current.set_attribute("error.type", type(exc).__qualname__)
        current.record_exception(exc)
        current.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


GatewayFn = Callable[["Caller", "GatewayCall"], Awaitable[R]]


def observe_gateway_call(*, streamed: bool) -> Callable[[GatewayFn[R]], GatewayFn[R]]:
    """The `gateway.chat` span, the in-flight count and the log context of one gateway call;
    refuses the call while the process drains for shutdown (config/health.py).

    The span's parent is the context the caller was made in (the HTTP request's or WebSocket
    message's span), which a background run would otherwise lose. A complete answer ends the
    span on return; a stream hands it to `AnswerStream`, whose settlement ends it."""

    def decorate(fn: GatewayFn[R]) -> GatewayFn[R]:
        @functools.wraps(fn)
        async def wrapper(caller: Caller, call: GatewayCall) -> R:
            tenant = caller.tenant.slug
            request = call.request
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": call.requested_model or request.model or "",
                "gateway.tenant": tenant,
                "gateway.request_id": caller.request_id,
                "gateway.streamed": streamed,
            }
            if request.max_tokens is not None:
                attributes["gen_ai.request.max_tokens"] = request.max_tokens
            if request.temperature is not None:
                attributes["gen_ai.request.temperature"] = request.temperature
            parent = caller.trace_context
            current = _tracer.start_span("gateway.chat", context=parent, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(current, parent))
            log_token = log_context.bind(tenant=tenant, request_id=caller.request_id)
            started = handed_over = False
            try:
                health.gateway_call_started()
                started = True
                result = await fn(caller, call)
                if streamed:
                    handed_over = True
                else:
                    settlement = getattr(result, "settlement", None)
                    if settlement is not None:
                        _settlement_attributes(current, settlement)
                return result
            except BaseException as exc:
                _record_failure(current, exc, tenant)
                raise
            finally:
                log_context.reset(log_token)
                otel_context.detach(token)
                if not handed_over:
                    current.end()
                    if started:
                        health.gateway_call_ended()

        return wrapper

    return decorate


class _StreamOwner(Protocol):
    """What `continues_stream_span` needs of an AnswerStream (structural: no import cycle)."""

    span: Span
    caller: Caller


S = TypeVar("S", bound=_StreamOwner)


def continues_stream_span(fn: Callable[[S], Awaitable[Settlement]]) -> Callable[[S], Awaitable[Settlement]]:
    """For AnswerStream's settlement: runs it inside the stream's `gateway.chat` span, records
    the result on that span and ends it (only now is the gateway call over)."""

    @functools.wraps(fn)
    async def wrapper(stream: S) -> Settlement:
        current = stream.span
        token = otel_context.attach(trace.set_span_in_context(current))
        log_token = log_context.bind(tenant=stream.caller.tenant.slug, request_id=stream.caller.request_id)
        try:
            settlement = await fn(stream)
            _settlement_attributes(current, settlement)
            if settlement.outcome != "ok":
                current.set_status(Status(StatusCode.ERROR, settlement.outcome))
            return settlement
        except BaseException as exc:
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
        finally:
            log_context.reset(log_token)
            otel_context.detach(token)
            current.end()
            health.gateway_call_ended()

    return wrapper


class AttemptRecorder:
    """Handed to the code inside `provider_attempt`; `result()` records what came back."""

    def __init__(self, current: Span) -> None:
        self.span = current

    def result(self, value: object) -> None:
        from routing.types import ChatResult

        if isinstance(value, ChatResult):
            self.span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": value.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": value.usage.completion_tokens,
                    "gen_ai.response.finish_reasons": [c.finish_reason or "unknown" for c in value.choices],
                }
            )
            if value.upstream_id:
                self.span.set_attribute("gen_ai.response.id", value.upstream_id)
            if value.upstream_model:
                self.span.set_attribute("gen_ai.response.model", value.upstream_model)
        else:
            # A stream: the attempt is over at its first event; tokens and finish reason are on
            # `gateway.chat`, which lasts until the stream is settled.
            self.span.set_attribute("gen_ai.response.streaming", True)


def _attempt_failed(current: Span, provider: str, model: str, outcome: str, status: int | None) -> None:
    current.set_attribute("error.type", outcome)
    if status:
        current.set_attribute("http.response.status_code", status)
    current.set_status(Status(StatusCode.ERROR, outcome))
    metrics.count_provider_attempt(provider, model, outcome, status)


@contextmanager
def provider_attempt(target: ModelTarget, number: int) -> Iterator[AttemptRecorder]:
    """One call to a provider's model: a CLIENT span named as the GenAI conventions say
    ("chat <model>"), and the attempt and upstream-error counters. Outcomes match the
    executor's Attempt.outcome."""
    from routing.types import ProviderError, UnsupportedFeature

    provider_name = _PROVIDER_NAMES.get(target.kind, target.kind)
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name,
        "gen_ai.system": provider_name,  # the older name, which many backends still read
        "gen_ai.request.model": target.upstream_model,
        "gateway.model": target.name,
        "gateway.provider": target.provider,
        "gateway.attempt": number,
    }
    started = time.monotonic()
    with _tracer.start_as_current_span(
        f"chat {target.upstream_model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as current:
        try:
            yield AttemptRecorder(current)
        except ProviderError as exc:
            _attempt_failed(current, target.provider, target.name, exc.code, exc.status)
            raise
        except TimeoutError:
            _attempt_failed(current, target.provider, target.name, "upstream_timeout", None)
            raise
        except UnsupportedFeature:
            _attempt_failed(current, target.provider, target.name, "unsupported", None)
            raise
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__qualname__)
            raise
        current.set_attribute("gateway.attempt_seconds", time.monotonic() - started)
        metrics.count_provider_attempt(target.provider, target.name, "ok", 200)


def circuit_refused(target: ModelTarget) -> None:
    """The model's circuit is open: no call was made. An event on the route's span."""
    trace.get_current_span().add_event(
        "circuit_open", {"gateway.model": target.name, "gateway.provider": target.provider}
    )
    metrics.count_provider_attempt(target.provider, target.name, "circuit_open", None)


def traced_ws_message(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A root span per WebSocket message: the connection lives long, and each message is a
    request of its own, the parent of the gateway call it starts."""

    @functools.wraps(fn)
    async def wrapper(consumer: Any, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        attributes: dict[str, str] = {
            "websocket.message.type": str(kind),
            "url.path": str(consumer.scope.get("path", "")),
        }
        caller = getattr(consumer, "caller", None)
        if caller is not None:
            attributes["gateway.tenant"] = caller.tenant.slug
        with _tracer.start_as_current_span(
            f"WS /ws/{{conversation_id}} {kind}",
            context=Context(),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ):
            await fn(consumer, content, **kwargs)

    return wrapper
