"""Real traffic through two web processes that share one PROMETHEUS_MULTIPROC_DIR, then /metrics:
the values must match what was sent. Process A also exports its spans to the console (the
standard OTEL_* variables), so the WebSocket request's trace and logs are read from its output.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import World
from tests.observability.conftest import WebProcess, launch_web, stop_all

PRICE_IN, PRICE_OUT = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini per Mtok (tests/conftest.py)


@dataclass
class Traffic:
    a: WebProcess
    b: WebProcess
    scrape: str  # /metrics of B after everything
    answers: list[dict[str, Any]] = field(default_factory=list)  # model, provider, cache, usage
    refused: int = 0
    ws_open_scrape: str = ""  # /metrics of B while a socket to A was open
    ws_done: dict[str, Any] = field(default_factory=dict)


def samples(text: str, name: str, **labels: str) -> list[float]:
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append(sample.value)
    return found


def total(text: str, name: str, **labels: str) -> float:
    return sum(samples(text, name, **labels))


def _chat(web: WebProcess, key: str, content: str, cache: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if not cache:
        headers["Cache-Control"] = "no-cache"
    return httpx.post(
        web.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": 30},
        headers=headers,
        timeout=30,
    )


def _record(traffic: Traffic, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    traffic.answers.append(
        {
            "model": response.headers["x-gateway-model"],
            "provider": response.headers["x-gateway-provider"],
            "cache": response.headers["x-gateway-cache"],
            "usage": response.json()["usage"],
        }
    )


async def _websocket_round(traffic: Traffic, key: str) -> None:
    conversation = httpx.post(
        traffic.a.url + "/api/v1/conversations", json={}, headers={"Authorization": f"Bearer {key}"}
    ).json()["id"]
    async with websockets.connect(f"ws://127.0.0.1:{traffic.a.port}/ws/{conversation}?token={key}") as ws:
        traffic.ws_open_scrape = httpx.get(traffic.b.url + "/metrics").text
        await ws.send(json.dumps({"type": "message", "content": "hello over a socket"}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if event["type"] in ("done", "error"):
                traffic.ws_done = event
                break


@pytest.fixture(scope="module")
def traffic(
    gateway: Any,
    world: World,
    live_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    django_db_blocker: Any,
) -> Iterator[Traffic]:
    from routing.circuit import CircuitBreaker

    directory = tmp_path_factory.mktemp("web")
    shared = directory / "prometheus"
    shared.mkdir()
    a = launch_web(
        directory,
        "a",
        PROMETHEUS_MULTIPROC_DIR=str(shared),
        OTEL_TRACES_EXPORTER="console",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    processes = [a]
    try:
        # B runs uvicorn, the production server (A daphne): one metrics directory, both servers.
        b = launch_web(directory, "b", server="uvicorn", PROMETHEUS_MULTIPROC_DIR=str(shared))
        processes.append(b)
        key = live_keys["acme"]
        traffic = Traffic(a, b, scrape="")
        # Three answers from each process (cache bypassed).
        for index in range(6):
            _record(traffic, _chat(a if index % 2 else b, key, f"question {index} {uuid.uuid4().hex}"))
        # The same question on A, then on B: the second is an exact cache hit.
        question = f"cache me {uuid.uuid4().hex}"
        _record(traffic, _chat(a, key, question, cache=True))
        for _ in range(50):  # the first answer is written to the cache just after its response
            response = _chat(b, key, question, cache=True)
            _record(traffic, response)
            if response.headers["x-gateway-cache"] == "exact":
                break
            time.sleep(0.1)
        # One upstream 500, retried on the same model.
        gateway.state.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "fail_next": 1})
        _record(traffic, _chat(a, key, f"flaky {uuid.uuid4().hex}"))
        gateway.state.knobs.clear()
        # The other tenant, limited to 2 requests a minute: its third is refused.
        # (Set before its first request, so no process has its limits cached yet.)
        from tenants.models import Tenant

        with django_db_blocker.unblock():
            before = Tenant.objects.filter(slug="outsider").values(
                "requests_per_minute", "monthly_token_quota"
            )[0]
            # and with a monthly quota, so the quota gauge has a share to report
            Tenant.objects.filter(slug="outsider").update(
                requests_per_minute=2, monthly_token_quota=10_000_000
            )
        try:
            other = live_keys["outsider"]
            statuses = [_chat(b, other, f"limited {i} {uuid.uuid4().hex}") for i in range(3)]
            assert [r.status_code for r in statuses] == [200, 200, 429], statuses[2].text
            traffic.refused = 1
        finally:
            with django_db_blocker.unblock():
                Tenant.objects.filter(slug="outsider").update(**before)
        # An open circuit, as Redis holds it.
        breaker = CircuitBreaker(threshold=1)
        asyncio.run(breaker.record_failure("fake-anthropic", "claude-3-5-sonnet-latest"))
        # A WebSocket chat on A, scraped from B while open.
        asyncio.run(_websocket_round(traffic, key))
        time.sleep(0.5)  # the socket's close reaches A
        traffic.scrape = httpx.get(b.url + "/metrics").text
        yield traffic
    finally:
        stop_all(processes)
        from config.redis import get_redis
        from config.redis import rkey as redis_key

        get_redis().delete(redis_key("circuit", "fake-anthropic", "claude-3-5-sonnet-latest"))


def test_requests_tokens_and_cost_match_what_was_sent(traffic: Traffic) -> None:
    text = traffic.scrape
    socket = {k: traffic.ws_done[k] for k in ("model", "provider", "cache", "usage")}
    sent = [*traffic.answers, socket]
    by_cache: dict[str, int] = {}
    for answer in sent:
        by_cache[answer["cache"]] = by_cache.get(answer["cache"], 0) + 1
    for cache, count in by_cache.items():
        assert (
            total(
                text,
                "gateway_requests_total",
                tenant="acme",
                model="gpt-4o-mini",
                provider="fake-openai",
                cache=cache,
                outcome="ok",
            )
            == count
        ), cache
    misses = [a for a in sent if a["cache"] == "miss"]
    prompt = sum(a["usage"]["prompt_tokens"] for a in misses)
    completion = sum(a["usage"]["completion_tokens"] for a in misses)
    assert total(text, "gateway_tokens_total", tenant="acme", model="gpt-4o-mini", type="input") == prompt
    assert (
        total(text, "gateway_tokens_total", tenant="acme", model="gpt-4o-mini", type="output") == completion
    )
    cost = sum(
        (
            (
                Decimal(a["usage"]["prompt_tokens"]) * PRICE_IN
                + Decimal(a["usage"]["completion_tokens"]) * PRICE_OUT
            )
            / 1_000_000
        ).quantize(Decimal("0.000001"))
        for a in misses
    )
    assert total(text, "gateway_cost_usd_total", tenant="acme", model="gpt-4o-mini") == pytest.approx(
        float(cost)
    )
    # Durations: one observation per answer; time to first token only for the streamed one.
    # (by model and provider only: the other tenant's two answers are in them too)
    assert total(text, "gateway_request_duration_seconds_count", model="gpt-4o-mini") == len(sent) + 2
    assert total(text, "gateway_time_to_first_token_seconds_count", model="gpt-4o-mini") == 1


def test_cache_hits_misses_and_savings(traffic: Traffic) -> None:
    text = traffic.scrape
    assert [a["cache"] for a in traffic.answers].count("exact") == 1
    assert total(text, "gateway_cache_lookups_total", tenant="acme", result="exact") == 1
    # Every answer looked in the cache once (the socket's too): hit, miss or bypass (no-cache).
    lookups = total(text, "gateway_cache_lookups_total", tenant="acme")
    assert lookups == len(traffic.answers) + 1
    assert total(text, "gateway_cache_lookups_total", tenant="acme", result="bypass") >= 6 + 1
    assert total(text, "gateway_cache_lookups_total", tenant="acme", result="miss") >= 1
    # The hit saved what its original answer had cost.
    original = next(
        a for a in traffic.answers if a["cache"] == "miss" and "cache me" in a.get("question", "cache me")
    )
    assert total(text, "gateway_cache_saved_tokens_total", tenant="acme") > 0
    assert total(text, "gateway_cache_saved_cost_usd_total", tenant="acme") > 0
    assert original["usage"]["total_tokens"] > 0


def test_upstream_errors_refusals_circuits_queues(traffic: Traffic) -> None:
    text = traffic.scrape
    assert (
        total(
            text, "gateway_upstream_errors_total", provider="fake-openai", model="gpt-4o-mini", status="500"
        )
        == 1
    )
    assert (
        total(
            text, "gateway_provider_attempts_total", provider="fake-openai", model="gpt-4o-mini", outcome="ok"
        )
        # + the socket's answer, and the other tenant's two
        == sum(1 for a in traffic.answers if a["cache"] != "exact") + 1 + 2
    )
    assert (
        total(text, "gateway_admission_refusals_total", tenant="outsider", reason="rate_limit")
        == traffic.refused
        == 1
    )
    assert total(text, "gateway_request_failures_total", tenant="outsider", status="429") == 1
    assert total(text, "gateway_admission_refusals_total", tenant="acme") == 0
    assert samples(
        text,
        "gateway_circuit_breaker_state",
        provider="fake-anthropic",
        model="claude-3-5-sonnet-latest",
        state="open",
    ) == [1.0]
    assert samples(text, "gateway_celery_broker_up") == [1.0]
    assert samples(text, "gateway_celery_queue_depth", queue="celery")
    [share] = samples(text, "gateway_tenant_quota_used_ratio", tenant="outsider")
    assert 0 < share < 0.01
    assert not samples(text, "gateway_tenant_quota_used_ratio", tenant="acme")  # no quota, no share


def test_websocket_gauge_is_summed_over_processes(traffic: Traffic) -> None:
    # The socket was open on A; B's /metrics (the shared directory) counted it.
    assert total(traffic.ws_open_scrape, "gateway_websocket_connections", tenant="acme") == 1
    assert total(traffic.scrape, "gateway_websocket_connections", tenant="acme") == 0
    assert total(traffic.scrape, "gateway_requests_in_flight") == 0
    # django-prometheus' own metrics come through the same endpoint.
    assert total(traffic.scrape, "django_http_requests_total_by_method_total", method="POST") >= len(
        traffic.answers
    )


def _console_spans(path: Path) -> list[dict[str, Any]]:
    decoder, text, index = json.JSONDecoder(), path.read_text(), 0
    spans: list[dict[str, Any]] = []
    while True:
        start = text.find("{", index)
        if start < 0:
            return spans
        value, index = decoder.raw_decode(text, start)
        spans.append(value)


def test_websocket_request_trace_and_logs_from_the_console_exporter(traffic: Traffic) -> None:
    deadline = time.monotonic() + 10
    while True:  # the batch processor exports every 100 ms here
        spans = _console_spans(traffic.a.stdout)
        chats = [s for s in spans if s["name"] == "gateway.chat" and s["attributes"].get("gateway.streamed")]
        if chats or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [chat] = chats
    trace_id = chat["context"]["trace_id"]
    [message] = [s for s in spans if s["name"] == "WS /ws/{conversation_id} message"]
    assert message["context"]["trace_id"] == trace_id and message["parent_id"] is None
    assert chat["parent_id"] == message["context"]["span_id"]
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == traffic.ws_done["usage"]["completion_tokens"]
    in_trace = {s["name"] for s in spans if s["context"]["trace_id"] == trace_id}
    assert {"gateway.admission", "gateway.route", "chat gpt-4o-mini", "gateway.settle"} <= in_trace
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"chat-platform-web"}

    # The settlement's log line carries the trace id, and no prompt or answer text.
    lines = [json.loads(line) for line in traffic.a.stderr.read_text().splitlines() if line.startswith("{")]
    hex_trace_id = trace_id.removeprefix("0x")  # the console exporter writes 0x...
    [settled] = [
        line
        for line in lines
        if line.get("message") == "chat request settled" and line.get("trace_id") == hex_trace_id
    ]
    assert settled["tenant"] == "acme" and settled["model"] == "gpt-4o-mini" and settled["outcome"] == "ok"
    assert settled["request_id"]
    assert not {"prompt", "answer", "content", "text"} & set(settled)
