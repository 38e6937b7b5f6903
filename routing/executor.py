"""Calling the planned models: deadline, retries with backoff, circuit breaker, fallback.

Retries happen only before the first token has reached the client; after it, a failure ends the
stream (the caller turns it into an error event and bills what was delivered).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from config.env import envfloat, envint
from config.errors import ApiError
from config.tracing import circuit_refused, provider_attempt
from routing.circuit import CircuitBreaker
from routing.latency import record_ttft
from routing.providers import get_adapter
from routing.router import RoutePlan
from routing.types import ChatRequest, ChatResult, ModelTarget, ProviderError, StreamEvent, UnsupportedFeature

MAX_ATTEMPTS_PER_MODEL = envint("ROUTER_MAX_ATTEMPTS_PER_MODEL", 3)
BACKOFF_BASE_SECONDS = envfloat("ROUTER_BACKOFF_BASE_SECONDS", 0.2)
BACKOFF_CAP_SECONDS = envfloat("ROUTER_BACKOFF_CAP_SECONDS", 5.0)

# Provider answers that say "this request is wrong", not "this provider is unwell": no retry,
# no fallback, no circuit failure; the client gets a 400.
CLIENT_FAULT_STATUSES = {400, 404, 413, 422}


@dataclass
class Attempt:
    model: str
    provider: str
    outcome: str  # ok | error code | circuit_open | unsupported
    status: int | None = None
    seconds: float = 0.0


@dataclass
class Deadline:
    at: float  # loop.time() by which everything must be over

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float:
        return self.at - asyncio.get_running_loop().time()


@dataclass
class RouteOutcome:
    target: ModelTarget
    attempts: list[Attempt] = field(default_factory=list)
    # Whether the circuit wants to hear about this call's success (see CircuitBreaker.allow).
    report_success: bool = True


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After is a floor."""
    delay = random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))
    return max(delay, retry_after or 0.0)


def timeout_error() -> ApiError:
    return ApiError(504, "The request's deadline passed before a model answered", "timeout")


def _final_error(
    attempts: list[Attempt], last: Exception | None, refusal: tuple[str, UnsupportedFeature] | None
) -> ApiError:
    tried = ", ".join(f"{a.model} ({a.outcome})" for a in attempts) or "none"
    if isinstance(last, UnsupportedFeature) and refusal is not None:
        # The first model's refusal: the one the client asked for (or the tenant's primary), not
        # whichever fallback happened to refuse last.
        model, first = refusal
        return ApiError(
            400,
            f"The model '{model}' cannot serve this request: {first.message}",
            "unsupported_feature",
            param=first.param,
        )
    if attempts and all(a.outcome == "circuit_open" for a in attempts):
        return ApiError(
            503,
            f"Every model for this request is unavailable (tried: {tried})",
            "providers_unavailable",
            headers={"Retry-After": "5"},
        )
    if isinstance(last, ProviderError) and last.code == "upstream_timeout":
        return ApiError(504, f"The model did not answer in time (tried: {tried})", "timeout")
    return ApiError(502, f"No model could answer (tried: {tried})", "upstream_error")


_T = TypeVar("_T")


class Executor:
    """Stateless between requests: one instance serves a whole process."""

    def __init__(self, breaker: CircuitBreaker | None = None) -> None:
        self.breaker = breaker or CircuitBreaker()

    async def _run(
        self, plan: RoutePlan, deadline: Deadline, call: Callable[[ModelTarget], Awaitable[_T]]
    ) -> tuple[_T, RouteOutcome]:
        """Walks the plan: each model while its circuit allows, retried while it may be."""
        outcome = RouteOutcome(target=plan.targets[0])
        last: Exception | None = None
        refusal: tuple[str, UnsupportedFeature] | None = None
        for target in plan.targets:
            permit = await self.breaker.allow(target.provider, target.upstream_model)
            if not permit:
                outcome.attempts.append(Attempt(target.name, target.provider, "circuit_open"))
                circuit_refused(target)
                continue
            outcome.report_success = permit == 2
            for attempt_no in range(MAX_ATTEMPTS_PER_MODEL):
                if deadline.remaining() <= 0:
                    raise timeout_error()
                started = time.monotonic()
                try:
                    with provider_attempt(target, attempt_no + 1) as attempt:
                        value = await asyncio.wait_for(call(target), deadline.remaining())
                        attempt.result(value)
                except TimeoutError:
                    outcome.attempts.append(
                        Attempt(
                            target.name, target.provider, "upstream_timeout", None, time.monotonic() - started
                        )
                    )
                    await self.breaker.record_failure(target.provider, target.upstream_model)
                    raise timeout_error() from None
                except (ProviderError, UnsupportedFeature) as exc:
                    last = exc
                    if isinstance(exc, UnsupportedFeature) and refusal is None:
                        refusal = (target.name, exc)
                    if not await self._retry_same_model(exc, target, attempt_no, deadline, outcome, started):
                        break
                    continue
                outcome.target = target
                outcome.attempts.append(
                    Attempt(target.name, target.provider, "ok", 200, time.monotonic() - started)
                )
                return value, outcome
        raise _final_error(outcome.attempts, last, refusal)

    async def _retry_same_model(
        self,
        exc: Exception,
        target: ModelTarget,
        attempt_no: int,
        deadline: Deadline,
        outcome: RouteOutcome,
        started: float,
    ) -> bool:
        """Records a failed attempt; sleeps the backoff and says True to retry this model."""
        elapsed = time.monotonic() - started
        if isinstance(exc, UnsupportedFeature):
            outcome.attempts.append(Attempt(target.name, target.provider, "unsupported", None, elapsed))
            return False
        assert isinstance(exc, ProviderError)
        outcome.attempts.append(Attempt(target.name, target.provider, exc.code, exc.status, elapsed))
        if exc.status in CLIENT_FAULT_STATUSES:
            raise ApiError(
                400, f"{target.provider} refused the request: {exc.message}", "upstream_bad_request"
            )
        state = await self.breaker.record_failure(target.provider, target.upstream_model)
        if not exc.retryable or state == "open" or attempt_no + 1 >= MAX_ATTEMPTS_PER_MODEL:
            return False
        delay = backoff_delay(attempt_no, exc.retry_after)
        if delay >= deadline.remaining():
            return False  # waiting would overrun the deadline: the next model gets the time
        await asyncio.sleep(delay)
        return True

    async def complete(
        self, request: ChatRequest, plan: RoutePlan, deadline: Deadline
    ) -> tuple[ChatResult, RouteOutcome]:
        async def call(target: ModelTarget) -> ChatResult:
            return await get_adapter(target).complete(request, target, deadline.remaining())

        result, outcome = await self._run(plan, deadline, call)
        if outcome.report_success:
            await self.breaker.record_success(outcome.target.provider, outcome.target.upstream_model)
        return result, outcome

    async def open_stream(self, request: ChatRequest, plan: RoutePlan, deadline: Deadline) -> RoutedStream:
        """Tries models until one produces its first event; the rest streams from `RoutedStream`."""

        async def call(target: ModelTarget) -> tuple[StreamEvent, AsyncIterator[StreamEvent]]:
            started = time.monotonic()
            events = aiter(get_adapter(target).stream(request, target, deadline.remaining()))
            try:
                first = await anext(events)
            except StopAsyncIteration:
                raise ProviderError(
                    "The provider closed the stream without answering",
                    provider=target.provider,
                    retryable=True,
                    code="upstream_empty",
                ) from None
            await record_ttft(target.name, time.monotonic() - started)
            return first, events

        (first, events), outcome = await self._run(plan, deadline, call)
        return RoutedStream(self.breaker, outcome, first, events, deadline)


class RoutedStream:
    """The chosen model's stream. Mid-stream failures raise ProviderError (no retry: the client
    has seen tokens); the deadline still applies to every event."""

    def __init__(
        self,
        breaker: CircuitBreaker,
        outcome: RouteOutcome,
        first: StreamEvent,
        events: AsyncIterator[StreamEvent],
        deadline: Deadline,
    ) -> None:
        self.breaker = breaker
        self.outcome = outcome
        self.target = outcome.target
        self._first: StreamEvent | None = first
        self._events = events
        self._deadline = deadline

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._first is not None:
            event, self._first = self._first, None
            return event
        target = self.target
        try:
            return await asyncio.wait_for(anext(self._events), max(self._deadline.remaining(), 0.001))
        except StopAsyncIteration:
            if self.outcome.report_success:
                await self.breaker.record_success(target.provider, target.upstream_model)
            raise
        except TimeoutError:
            await self.breaker.record_failure(target.provider, target.upstream_model)
            raise ProviderError(
                "The request's deadline passed mid-answer", provider=target.provider, code="timeout"
            ) from None
        except ProviderError:
            await self.breaker.record_failure(target.provider, target.upstream_model)
            raise

    async def aclose(self) -> None:
        closer = getattr(self._events, "aclose", None)
        if closer is not None:
            await closer()
