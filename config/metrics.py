"""Our Prometheus metrics, and the /metrics view that serves them next to django-prometheus'.

Labels are tenant, model and provider where an operator needs them, never a user or a key
(each would be a series per person: unbounded cardinality). Histograms carry no tenant label for
the same reason; per-tenant volumes come from the counters.

Several worker processes: set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by the
processes of one machine or pod *before* they start (prometheus_client picks its storage at
import). Each process then writes its values to memory-mapped files there and /metrics sums them
(or, for gauges, sums the live processes' values, or takes the most recent one). Empty the
directory when the processes start (the container command does); docs/operations.md has more.

Two families are read when Prometheus scrapes instead of counted on the hot path, because their
truth is shared by every process and lives elsewhere: circuit-breaker state (Redis) and Celery
queue depth (the broker).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from billing.limits import QuotaScope
    from billing.services import Settlement

logger = logging.getLogger(__name__)

# Seconds. LLM answers take from milliseconds (a cache hit) to minutes (a long stream).
_DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)

REQUESTS = Counter(
    "gateway_requests",
    "Chat requests the gateway settled (answered, stopped or cut off), by cache result and outcome",
    ["tenant", "model", "provider", "cache", "outcome"],
)
REQUEST_FAILURES = Counter(
    "gateway_request_failures",
    "Chat requests refused or failed before any answer (by HTTP status)",
    ["tenant", "status"],
)
TOKENS = Counter(
    "gateway_tokens",
    "Tokens billed: type=input (prompt) or output (completion)",
    ["tenant", "model", "provider", "type"],
)
COST = Counter("gateway_cost_usd", "Cost billed to tenants, in USD", ["tenant", "model", "provider"])
CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups",
    "Cache lookups by result: exact, semantic (hits), miss, bypass, error",
    ["tenant", "result"],
)
CACHE_SAVED_TOKENS = Counter(
    "gateway_cache_saved_tokens", "Tokens cache hits did not spend upstream", ["tenant"]
)
CACHE_SAVED_COST = Counter(
    "gateway_cache_saved_cost_usd", "What cache hits would have cost at the model's price, in USD", ["tenant"]
)
DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Total time of a chat request, from arrival to settlement (a stream: to its last event)",
    ["model", "provider", "cache"],
    buckets=_DURATION_BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from arrival to the first streamed event",
    ["model", "provider", "cache"],
    buckets=_TTFT_BUCKETS,
)
PROVIDER_ATTEMPTS = Counter(
    "gateway_provider_attempts",
    "Calls to a provider's model, by outcome (ok, an error code, circuit_open, unsupported)",
    ["provider", "model", "outcome"],
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors",
    "Failed provider calls, by HTTP status (or 'none' for timeouts and broken connections)",
    ["provider", "model", "status"],
)
ADMISSION_REFUSALS = Counter(
    "gateway_admission_refusals",
    "Requests refused before reaching a model: rate_limit, request_too_large, quota, concurrency",
    ["tenant", "reason"],
)
QUOTA_USED = Gauge(
    "gateway_tenant_quota_used_ratio",
    "Share of the tenant's tightest monthly quota used or reserved, as of its latest admission",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
IN_FLIGHT = Gauge(
    "gateway_requests_in_flight",
    "Chat requests this process is answering now (the autoscaler's custom metric)",
    multiprocess_mode="livesum",
)
WEBSOCKETS = Gauge(
    "gateway_websocket_connections",
    "Open chat WebSocket connections",
    ["tenant"],
    multiprocess_mode="livesum",
)
DRAINING = Gauge(
    "gateway_draining",
    "1 while this process shuts down gracefully (readiness fails, answers in flight finish)",
    multiprocess_mode="livemax",
)

# Children (a metric with its labels bound) are looked up under a lock by prometheus_client; the
# hot path asks for the same few combinations again and again, so they are kept here.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


# --- the hot path's calls --------------------------------------------------------------------


def observe_settlement(tenant: str, settlement: Settlement) -> None:
    """Everything one settled request adds: count, tokens, cost, duration, time to first token."""
    model, provider, cache = settlement.model, settlement.provider, settlement.cache_status
    _child(REQUESTS, tenant, model, provider, cache, settlement.outcome).inc()
    if settlement.prompt_tokens:
        _child(TOKENS, tenant, model, provider, "input").inc(settlement.prompt_tokens)
    if settlement.completion_tokens:
        _child(TOKENS, tenant, model, provider, "output").inc(settlement.completion_tokens)
    if settlement.cost:
        _child(COST, tenant, model, provider).inc(float(settlement.cost))
    _child(DURATION, model, provider, cache).observe(settlement.latency_ms / 1000)
    if settlement.ttft_ms is not None:
        _child(TTFT, model, provider, cache).observe(settlement.ttft_ms / 1000)


def count_request_failure(tenant: str, status: int) -> None:
    _child(REQUEST_FAILURES, tenant, str(status)).inc()


def count_cache_lookup(
    tenant: str, result: str, saved_tokens: int = 0, saved_cost: Decimal | None = None
) -> None:
    """result: exact | semantic | miss | bypass | error."""
    _child(CACHE_LOOKUPS, tenant, result).inc()
    if saved_tokens:
        _child(CACHE_SAVED_TOKENS, tenant).inc(saved_tokens)
    if saved_cost:
        _child(CACHE_SAVED_COST, tenant).inc(float(saved_cost))


def count_provider_attempt(provider: str, model: str, outcome: str, status: int | None) -> None:
    _child(PROVIDER_ATTEMPTS, provider, model, outcome).inc()
    if outcome not in ("ok", "circuit_open", "unsupported"):
        _child(UPSTREAM_ERRORS, provider, model, str(status) if status else "none").inc()


def count_refusal(tenant: str, reason: str) -> None:
    _child(ADMISSION_REFUSALS, tenant, reason).inc()


def observe_quota(scopes: Iterable[QuotaScope]) -> None:
    """The tenant's own scope only: API keys' budgets would be a series per key."""
    for scope in scopes:
        if scope.api_key_id is None and scope.share is not None:
            _child(QUOTA_USED, scope.tenant.slug).set(scope.share)


def websocket_opened(tenant: str) -> None:
    _child(WEBSOCKETS, tenant).inc()


def websocket_closed(tenant: str) -> None:
    _child(WEBSOCKETS, tenant).dec()


# --- read when Prometheus scrapes ------------------------------------------------------------


class CircuitStateCollector(Collector):
    """Every circuit's state as Redis holds it, so all processes report the same truth.

    One series per (provider, model, state) with value 1 for the current state and 0 for the
    others, so `gateway_circuit_breaker_state{state="open"} == 1` selects open circuits."""

    STATES = ("closed", "open", "half_open")

    def collect(self) -> Iterator[Metric]:
        from config.redis import get_redis

        family = GaugeMetricFamily(
            "gateway_circuit_breaker_state",
            "Circuit breaker per provider and upstream model: 1 for its current state",
            labels=["provider", "model", "state"],
        )
        prefix = f"{settings.REDIS_KEY_PREFIX}:circuit:"
        try:
            client = get_redis()
            keys = list(client.scan_iter(prefix + "*", count=500))
            states = [client.hget(key, "state") for key in keys] if keys else []
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis did
            logger.warning("metrics: circuit states unavailable (%s)", exc.__class__.__name__)
            return
        for key, raw in zip(keys, states, strict=True):
            provider, _, model = key.decode()[len(prefix) :].partition(":")
            current = raw.decode() if raw else "closed"
            for state in self.STATES:
                family.add_metric([provider, model, state], 1.0 if state == current else 0.0)
        yield family


class CeleryQueueCollector(Collector):
    """Messages waiting in the broker's Celery queues (a passive declare per queue).

    Cached for a few seconds: several Prometheus servers (or a dashboard's refresh) must not
    turn into a connection storm on the broker."""

    def __init__(self, cache_seconds: float = 10.0) -> None:
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, int], bool] | None = None

    def queues(self) -> list[str]:
        from config.celery_app import app

        names = {app.conf.task_default_queue or "celery"}
        for queue in app.conf.task_queues or []:
            names.add(queue.name)
        return sorted(names)

    def _read(self) -> tuple[dict[str, int], bool]:
        from kombu import Connection

        depths: dict[str, int] = {}
        try:
            with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as connection:
                channel: Any = connection.default_channel  # an AMQP channel: kombu types it loosely
                for name in self.queues():
                    try:
                        depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                    except Exception:  # noqa: BLE001 - not declared yet: nothing waits in it
                        depths[name] = 0
                        channel = connection.channel()  # a failed passive declare closes the channel
        except Exception as exc:  # noqa: BLE001 - the broker being down is itself reported
            logger.warning("metrics: broker unreachable (%s)", exc.__class__.__name__)
            return {}, False
        return depths, True

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.cache_seconds:
                self._cached = (now, *self._read())
            _, depths, up = self._cached
        broker = GaugeMetricFamily(
            "gateway_celery_broker_up", "1 when the Celery broker answered the last scrape"
        )
        broker.add_metric([], 1.0 if up else 0.0)
        yield broker
        depth = GaugeMetricFamily(
            "gateway_celery_queue_depth", "Messages waiting in a Celery queue", labels=["queue"]
        )
        for name, count in depths.items():
            depth.add_metric([name], float(count))
        yield depth


_scrape_collectors: list[Collector] = [CircuitStateCollector(), CeleryQueueCollector()]


class _Delegate(Collector):
    def __init__(self, source: Callable[[], Iterable[Metric]]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def scrape_registry() -> CollectorRegistry:
    """What /metrics serves: this process' registry, or every process' files in multiprocess
    mode (django-prometheus' metrics included either way), plus the scrape-time collectors."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Delegate(prometheus_client.REGISTRY.collect))
    for collector in _scrape_collectors:
        registry.register(collector)
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    """/metrics. With METRICS_BEARER_TOKEN set, only a scraper presenting it may read: the
    series name every tenant, and /metrics answers on every host."""
    token = getattr(settings, "METRICS_BEARER_TOKEN", "")
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        return HttpResponse("metrics need the scrape token\n", status=401, content_type="text/plain")
    body = prometheus_client.generate_latest(scrape_registry())
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)
