"""The one service every entry point calls: REST, SSE, WebSocket, OpenAI- and Anthropic-compatible.

The life of a request: route (which models may answer), admission (rate limits and quotas,
reserved atomically in Redis), the exact and semantic cache, the concurrency bulkhead, the
provider call with retries and fallback, and settlement: the usage row and the assistant message
in one transaction, then the admission settled with the real use and the cache written off the
request path. It all happens here and nowhere else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from opentelemetry import trace
from opentelemetry.context import Context

from billing import admission as admission_control
from billing.models import Outcome
from billing.services import Settlement, settle_usage
from config import metrics
from config.errors import ApiError
from config.logging import log_settlement
from config.tracing import continues_stream_span, current_context, observe_gateway_call, span, traced
from routing.bulkhead import Bulkhead
from routing.cache.service import CacheHit, cache_lookup, cache_store_later, hit_stream_events
from routing.catalog import catalog_target, refresh_catalog
from routing.executor import Deadline, Executor, RoutedStream, RouteOutcome
from routing.pricing import compute_cost
from routing.providers.tokens import estimate_request_tokens
from routing.router import RoutePlan, plan_route
from routing.types import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    Choice,
    ModelTarget,
    ProviderError,
    StreamEvent,
    ToolCall,
    Usage,
)
from tenants.models import ApiKey, Tenant
from tenants.schema import tenant_db

_executor = Executor()


@dataclass
class Caller:
    """Who is asking, resolved by the entry point before the gateway runs."""

    tenant: Tenant
    request_id: str
    user_id: int | None = None
    api_key_id: int | None = None
    api_key: ApiKey | None = None
    # The trace this call belongs to, captured where the caller is made (the request's or the
    # WebSocket message's): a background run starts from an empty context and would lose it.
    trace_context: Context = field(default_factory=current_context)


@dataclass
class GatewayCall:
    request: ChatRequest
    requested_model: str | None = None
    fallback_model: str | None = None
    use_cache: bool = True
    conversation_id: uuid.UUID | None = None
    # For conversations: the new user turn, stored together with the answer.
    user_text: str | None = None
    # Its role ("tool" for a tool result) and `Message.extra` (content parts, tool call id).
    user_role: str = "user"
    user_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    result: ChatResult
    target: ModelTarget
    settlement: Settlement
    headers: dict[str, str]


def gateway_headers(caller: Caller, target: ModelTarget, cache: str, overhead_ms: float) -> dict[str, str]:
    return {
        "x-request-id": caller.request_id,
        "x-gateway-provider": target.provider,
        "x-gateway-model": target.name,
        "x-gateway-cache": cache,
        "x-gateway-overhead-ms": f"{max(overhead_ms, 0.0):.2f}",
    }


def _reservation(request: ChatRequest, plan: RoutePlan) -> tuple[int, Decimal]:
    """What to reserve before the call: the prompt plus the most it may write, priced at the
    dearest model the plan may fall back to (a reservation must never be too small)."""
    prompt = estimate_request_tokens(request)
    completion = request.max_tokens or max(t.max_output_tokens for t in plan.targets)
    worst = Usage(prompt_tokens=prompt, completion_tokens=completion * max(request.n, 1))
    return worst.total_tokens, max(compute_cost(t, worst) for t in plan.targets)


@traced("gateway.admission")
async def _admit(caller: Caller, request: ChatRequest, plan: RoutePlan) -> admission_control.Admission:
    tokens, cost = _reservation(request, plan)
    admission = await admission_control.admit(caller.tenant, caller.api_key, tokens, cost)
    metrics.observe_quota(admission.scopes)
    return admission


async def _enter_bulkhead(caller: Caller) -> Bulkhead:
    tenant = caller.tenant
    bulkhead = Bulkhead(tenant.slug, tenant.max_concurrent_requests, settings.REQUEST_TIMEOUT_SECONDS + 5)
    if not await bulkhead.acquire():
        metrics.count_refusal(tenant.slug, "concurrency")
        raise ApiError(
            429,
            f"Too many requests in flight for this tenant (limit {tenant.max_concurrent_requests}); retry shortly",
            "concurrency_limit_exceeded",
            error_type="rate_limit_error",
            headers={"Retry-After": "1"},
        )
    return bulkhead


def route_header(outcome: RouteOutcome) -> dict[str, str]:
    """`x-gateway-route`: every attempt and how it ended, so a fallback explains itself
    (e.g. `gpt-4o-mini=circuit_open, claude-3-5-haiku=ok`)."""
    attempts = ", ".join(f"{a.model}={a.outcome}" for a in outcome.attempts)
    return {"x-gateway-route": attempts} if attempts else {}


def _upstream_seconds(outcome: RouteOutcome) -> float:
    return sum(a.seconds for a in outcome.attempts)


def _hit_target(hit: CacheHit, plan: RoutePlan) -> ModelTarget:
    return catalog_target(hit.model) or plan.targets[0]


@traced("gateway.cache_lookup")
async def _lookup(caller: Caller, call: GatewayCall, plan: RoutePlan) -> CacheHit | None:
    hit, _status = await cache_lookup(caller.tenant, call.request, plan.targets[0].name, call.use_cache)
    return hit


async def _prepare(caller: Caller, call: GatewayCall) -> tuple[RoutePlan, admission_control.Admission]:
    await refresh_catalog()
    with span("gateway.plan"):
        plan = await plan_route(caller.tenant, call.request, call.requested_model, call.fallback_model)
    return plan, await _admit(caller, call.request, plan)


@observe_gateway_call(streamed=False)
async def answer(caller: Caller, call: GatewayCall) -> Answer:
    """A complete (non-streamed) answer, settled before it is returned."""
    started = time.monotonic()
    deadline = Deadline.after(settings.REQUEST_TIMEOUT_SECONDS)
    plan, admission = await _prepare(caller, call)
    try:
        hit = await _lookup(caller, call, plan)
        if hit is not None:
            return await _answer_from_cache(caller, call, plan, hit, admission, started)
        bulkhead = await _enter_bulkhead(caller)
        try:
            with span("gateway.route"):
                result, outcome = await _executor.complete(call.request, plan, deadline)
        finally:
            await bulkhead.release()
    except BaseException:
        await admission_control.release(admission)
        raise
    target = outcome.target
    first = result.choices[0] if result.choices else None
    settlement = _settlement(
        caller,
        call,
        target,
        result.usage,
        streamed=False,
        outcome=Outcome.OK,
        attempts=len(outcome.attempts),
        latency=time.monotonic() - started,
        ttft=None,
        text=first.message.text() if first else "",
        finish_reason=(first.finish_reason or "") if first else "",
        tool_calls=first.message.tool_calls if first else [],
    )
    await _settle(caller, call, settlement, admission, cacheable=True)
    overhead_ms = (time.monotonic() - started - _upstream_seconds(outcome)) * 1000
    headers = gateway_headers(caller, target, "miss", overhead_ms) | route_header(outcome) | admission.headers
    return Answer(result, target, settlement, headers)


async def _answer_from_cache(
    caller: Caller,
    call: GatewayCall,
    plan: RoutePlan,
    hit: CacheHit,
    admission: admission_control.Admission,
    started: float,
) -> Answer:
    target = _hit_target(hit, plan)
    message = ChatMessage(role="assistant", content=hit.text)
    result = ChatResult(choices=[Choice(0, message, "stop")], usage=Usage())
    settlement = _settlement(
        caller,
        call,
        target,
        Usage(),
        streamed=False,
        outcome=Outcome.OK,
        attempts=0,
        latency=time.monotonic() - started,
        ttft=None,
        text=hit.text,
        finish_reason="stop",
        tool_calls=[],
    )
    settlement.cache_status = hit.kind
    settlement.cost_saved = hit.saved_cost
    await _settle(caller, call, settlement, admission, cacheable=False)
    headers = (
        gateway_headers(caller, target, hit.kind, (time.monotonic() - started) * 1000) | admission.headers
    )
    return Answer(result, target, settlement, headers)


@traced("gateway.settle")
async def _settle(
    caller: Caller,
    call: GatewayCall,
    settlement: Settlement,
    admission: admission_control.Admission,
    *,
    cacheable: bool,
) -> None:
    """The usage row (and message) first, in one transaction: it is the truth. The admission
    counters and the cache follow; neither can lose or double the usage."""
    await tenant_db(caller.tenant, settle_usage, settlement)
    await admission_control.settle(
        admission, settlement.prompt_tokens + settlement.completion_tokens, settlement.cost
    )
    metrics.observe_settlement(caller.tenant.slug, settlement)
    log_settlement(caller.tenant, settlement, call.request)
    if cacheable and call.use_cache and settlement.outcome == Outcome.OK:
        cache_store_later(
            caller.tenant,
            call.request,
            settlement.model,
            settlement.text,
            Usage(settlement.prompt_tokens, settlement.completion_tokens, settlement.cached_tokens),
            settlement.cost,
            finish_reason=settlement.finish_reason,
            user_id=caller.user_id,
            conversation_id=call.conversation_id,
        )


def _settlement(
    caller: Caller,
    call: GatewayCall,
    target: ModelTarget,
    usage: Usage,
    *,
    streamed: bool,
    outcome: str,
    attempts: int,
    latency: float,
    ttft: float | None,
    text: str,
    finish_reason: str,
    tool_calls: list[ToolCall],
) -> Settlement:
    extra: dict[str, Any] = {}
    if tool_calls:
        extra["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in tool_calls]
    return Settlement(
        request_id=caller.request_id,
        model=target.name,
        provider=target.provider,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        usage_estimated=usage.estimated,
        cost=compute_cost(target, usage),
        cache_status="miss",
        streamed=streamed,
        outcome=outcome,
        attempts=attempts,
        latency_ms=int(latency * 1000),
        ttft_ms=int(ttft * 1000) if ttft is not None else None,
        user_id=caller.user_id,
        api_key_id=caller.api_key_id,
        conversation_id=call.conversation_id,
        user_text=call.user_text,
        user_role=call.user_role,
        user_extra=call.user_extra,
        text=text,
        finish_reason=finish_reason,
        extra=extra,
    )


class CachedStream:
    """A cache hit behind the same interface as a provider's `RoutedStream`."""

    def __init__(self, target: ModelTarget, hit: CacheHit) -> None:
        self.target = target
        self.outcome = RouteOutcome(target=target)
        self.saved_cost = hit.saved_cost
        self._events = iter([*hit_stream_events(hit), StreamEvent(kind="usage", usage=Usage())])

    def __aiter__(self) -> CachedStream:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        return None


@dataclass
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    deltas: int = 0
    tool_calls: dict[int, ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None


class AnswerStream:
    """A streamed answer. Iterate `events()`, then `await finish()` (always, also when the
    client went away or asked to stop): it settles exactly what was delivered, once."""

    def __init__(
        self,
        caller: Caller,
        call: GatewayCall,
        routed: RoutedStream | CachedStream,
        admission: admission_control.Admission,
        bulkhead: Bulkhead | None,
        started: float,
        cache_status: str,
    ) -> None:
        self.caller = caller
        self.call = call
        self.routed = routed
        self.target = routed.target
        self.admission = admission
        self.bulkhead = bulkhead
        self.started = started
        self.ttft = time.monotonic() - started
        self.cache_status = cache_status
        overhead_ms = (self.ttft - _upstream_seconds(routed.outcome)) * 1000
        self.headers = (
            gateway_headers(caller, self.target, cache_status, overhead_ms)
            | route_header(routed.outcome)
            | admission.headers
        )
        self.error: ProviderError | None = None
        self.usage: Usage | None = None
        self.choices: dict[int, _ChoiceState] = {}
        self.settlement: Settlement | None = None
        self._stopped = False
        self._finishing: asyncio.Task[Settlement] | None = None
        # The call's `gateway.chat` span (current while the stream is opened); settlement ends it.
        self.span = trace.get_current_span()

    async def events(self) -> AsyncIterator[StreamEvent]:
        try:
            async for event in self.routed:
                self._account(event)
                if event.kind != "usage":
                    yield event
                if self._stopped:
                    break
        except ProviderError as exc:
            self.error = exc

    def stop(self) -> None:
        """Ends generation after the current event; the partial answer is kept and billed."""
        self._stopped = True

    def _account(self, event: StreamEvent) -> None:
        state = self.choices.setdefault(event.choice, _ChoiceState())
        if event.kind == "text":
            state.text.append(event.text)
            state.deltas += 1
        elif event.kind == "tool_call":
            call = state.tool_calls.get(event.tool_index)
            if call is None:
                call = ToolCall(event.tool_call_id or "", event.tool_name or "", "")
                state.tool_calls[event.tool_index] = call
                state.deltas += 1
            call.arguments += event.arguments
            if event.arguments:
                state.deltas += 1
        elif event.kind == "finish":
            state.finish_reason = event.finish_reason
        elif event.kind == "usage" and event.usage is not None:
            self.usage = event.usage

    def text(self, choice: int = 0) -> str:
        state = self.choices.get(choice)
        return "".join(state.text) if state else ""

    async def finish(self) -> Settlement:
        if self._finishing is None:
            # Shielded: a client that disconnects must not cancel the bookkeeping half-way.
            self._finishing = asyncio.ensure_future(self._settle())
        return await asyncio.shield(self._finishing)

    @continues_stream_span
    async def _settle(self) -> Settlement:
        try:
            complete = self.usage is not None and self.error is None and not self._stopped
            if not complete:
                await self.routed.aclose()
            usage = self.usage if complete and self.usage else self._delivered_usage()
            first = self.choices.get(0, _ChoiceState())
            outcome = Outcome.OK if complete else Outcome.PARTIAL
            if not complete and not any(s.deltas for s in self.choices.values()):
                outcome = Outcome.ERROR
            settlement = _settlement(
                self.caller,
                self.call,
                self.target,
                usage,
                streamed=True,
                outcome=outcome,
                attempts=len(self.routed.outcome.attempts),
                latency=time.monotonic() - self.started,
                ttft=self.ttft,
                text="".join(first.text),
                finish_reason=first.finish_reason or ("stopped" if self._stopped else "error"),
                tool_calls=list(first.tool_calls.values()),
            )
            settlement.cache_status = self.cache_status
            if isinstance(self.routed, CachedStream):
                settlement.cost_saved = self.routed.saved_cost
            await _settle(
                self.caller, self.call, settlement, self.admission, cacheable=self.cache_status == "miss"
            )
            self.settlement = settlement
            return settlement
        finally:
            if self.bulkhead is not None:
                await self.bulkhead.release()

    def _delivered_usage(self) -> Usage:
        """What to bill when the provider never reported usage (stopped or cut off): our
        estimate of the prompt, and one token per delivered delta (providers stream about a
        token per delta), marked as an estimate."""
        prompt = self.usage.prompt_tokens if self.usage else estimate_request_tokens(self.call.request)
        delivered = sum(state.deltas for state in self.choices.values())
        return Usage(prompt_tokens=prompt, completion_tokens=delivered, estimated=True)


@observe_gateway_call(streamed=True)
async def open_answer_stream(caller: Caller, call: GatewayCall) -> AnswerStream:
    """Routes and waits for the first event (so errors before it are plain HTTP errors)."""
    started = time.monotonic()
    deadline = Deadline.after(settings.REQUEST_TIMEOUT_SECONDS)
    plan, admission = await _prepare(caller, call)
    bulkhead: Bulkhead | None = None
    try:
        hit = await _lookup(caller, call, plan)
        if hit is not None:
            cached = CachedStream(_hit_target(hit, plan), hit)
            return AnswerStream(caller, call, cached, admission, None, started, hit.kind)
        bulkhead = await _enter_bulkhead(caller)
        with span("gateway.route"):
            routed = await _executor.open_stream(call.request, plan, deadline)
    except BaseException:
        if bulkhead is not None:
            await bulkhead.release()
        await admission_control.release(admission)
        raise
    return AnswerStream(caller, call, routed, admission, bulkhead, started, "miss")
