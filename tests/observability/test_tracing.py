"""One chat request's trace, read span by span (in-memory exporter), and its context carried
into a background run, a Celery task and the logs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.conftest import Api, World
from tests.observability.conftest import children, one

pytestmark = pytest.mark.usefixtures("gateway")


def _tree(all_spans: list[ReadableSpan], root: ReadableSpan, depth: int = 0) -> list[str]:
    """The span tree as indented names (shown when an assertion fails)."""
    lines = ["  " * depth + root.name]
    for child in sorted(children(all_spans, root), key=lambda s: s.start_time or 0):
        lines += _tree(all_spans, child, depth + 1)
    return lines


def test_one_chat_request_is_one_trace_span_by_span(
    api: Api, world: World, acme_key: str, knobs: Any, spans: Any
) -> None:
    question = f"what is observability, question {uuid.uuid4().hex}"  # a cache miss, embedded
    response = api.post(
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}], "max_tokens": 40},
        token=acme_key,
    )
    assert response.status_code == 200, response.content
    usage = response.json()["usage"]
    finished = list(spans.get_finished_spans())

    # The Django request span is the root; everything else is in its trace.
    [root] = [s for s in finished if s.kind == SpanKind.SERVER and s.parent is None]
    assert root.name == "POST v1/chat/completions"
    trace_id = format(root.context.trace_id, "032x")
    assert response.headers["x-trace-id"] == trace_id
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}, _tree(finished, root)
    print("\n".join(_tree(finished, root)))  # the tree, for -s readers and failure reports

    chat = one(finished, "gateway.chat")
    assert chat.parent is not None and chat.parent.span_id == root.context.span_id, _tree(finished, root)
    steps = [s.name for s in sorted(children(finished, chat), key=lambda s: s.start_time or 0)]
    assert [name for name in steps if name.startswith("gateway.")] == [
        "gateway.plan",
        "gateway.admission",
        "gateway.cache_lookup",
        "gateway.route",
        "gateway.settle",
    ], _tree(finished, root)
    attrs = chat.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gateway.tenant"] == "acme"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gateway.cache"] == "miss" and attrs["gateway.outcome"] == "ok"

    # The cache lookup embedded the question and searched Postgres.
    lookup = one(finished, "gateway.cache_lookup")
    lookup_children = children(finished, lookup)
    assert "cache.embedding" in [s.name for s in lookup_children], _tree(finished, root)
    assert any((s.attributes or {}).get("db.system") == "postgresql" for s in lookup_children), _tree(
        finished, root
    )

    # One provider attempt, a CLIENT span with the GenAI conventions' attributes.
    route = one(finished, "gateway.route")
    [attempt] = [s for s in children(finished, route) if s.name.startswith("chat ")]
    assert attempt.name == "chat gpt-4o-mini" and attempt.kind == SpanKind.CLIENT
    attempt_attrs = attempt.attributes or {}
    assert attempt_attrs["gen_ai.provider.name"] == "openai"
    assert attempt_attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt_attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attempt_attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attempt_attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attempt_attrs["gateway.provider"] == "fake-openai" and attempt_attrs["gateway.attempt"] == 1

    # Admission is a Redis script; settlement writes the usage row in Postgres and settles Redis.
    admission = one(finished, "gateway.admission")
    assert any((s.attributes or {}).get("db.system") == "redis" for s in children(finished, admission))
    settle = one(finished, "gateway.settle")
    systems = {(s.attributes or {}).get("db.system") for s in children(finished, settle)}
    assert {"postgresql", "redis"} <= systems, _tree(finished, root)
    inserts = [
        s for s in finished if s.name == "INSERT" and s.parent and s.parent.span_id == settle.context.span_id
    ]
    assert inserts and "usage" in str((inserts[0].attributes or {})["db.query.text"]).lower()


def test_retries_and_fallback_are_attempt_spans_with_errors(
    api: Api, acme_key: str, knobs: Any, spans: Any
) -> None:
    knobs.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "error_status": 500})
    response = api.post(
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
        token=acme_key,
        headers={"Cache-Control": "no-cache"},
    )
    assert response.status_code == 200, response.content
    assert response.headers["x-gateway-model"] == "claude-3-5-haiku"
    finished = list(spans.get_finished_spans())
    attempts = sorted(
        (s for s in children(finished, one(finished, "gateway.route")) if s.name.startswith("chat ")),
        key=lambda s: s.start_time or 0,
    )
    failed, succeeded = attempts[:-1], attempts[-1]
    assert failed and all(s.name == "chat gpt-4o-mini" for s in failed)
    assert all((s.attributes or {})["http.response.status_code"] == 500 for s in failed)
    assert all(not s.status.is_ok for s in failed)
    assert succeeded.name == "chat claude-3-5-haiku-latest"
    assert (succeeded.attributes or {})["gen_ai.provider.name"] == "anthropic"


async def test_a_background_run_continues_the_trace_that_started_it(
    world: World, knobs: Any, spans: Any, django_db_blocker: Any
) -> None:
    """Runs start from an empty context (chat/runs.py); the caller carries the trace there.
    (Its usage row is committed, as a live server's would be.)"""
    django_db_blocker.unblock()
    try:
        await _run_and_check(world, spans)
    finally:
        django_db_blocker.restore()


async def _run_and_check(world: World, spans: Any) -> None:
    from chat.gateway import Caller, GatewayCall
    from chat.runs import read_run, start_run
    from routing.types import ChatMessage, ChatRequest

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("incoming request") as request_span:
        caller = Caller(world.acme.tenant, uuid.uuid4().hex)
        request = ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content="stream me")])
        run_id = await start_run(caller, GatewayCall(request=request, use_cache=False))
    events = [event async for event in read_run("acme", run_id)]
    assert events[-1].type == "done", events[-1]
    for _ in range(100):  # the stream's span ends when its settlement (just after "done") does
        if any(s.name == "gateway.chat" for s in spans.get_finished_spans()):
            break
        await asyncio.sleep(0.02)
    finished = list(spans.get_finished_spans())
    chat = one(finished, "gateway.chat")
    assert chat.context.trace_id == request_span.get_span_context().trace_id
    assert chat.parent is not None and chat.parent.span_id == request_span.get_span_context().span_id
    assert isinstance(request_span, ReadableSpan) and request_span.end_time is not None
    assert chat.end_time is not None and chat.end_time > request_span.end_time  # outlived it
    attrs = chat.attributes or {}
    assert attrs["gateway.streamed"] is True
    assert attrs["gen_ai.usage.output_tokens"] == events[-1].data["usage"]["completion_tokens"] > 0
    names = [s.name for s in children(finished, chat)]
    assert {"gateway.admission", "gateway.route", "gateway.settle"} <= set(names)
    # The deltas written to Redis after the request returned made no orphan traces.
    traces = {s.context.trace_id for s in finished}
    assert traces == {request_span.get_span_context().trace_id}


def test_celery_task_continues_the_trace_that_queued_it(spans: Any) -> None:
    """A real worker (in a thread, in-memory broker): the task's span is a child of the span
    that published it, through the trace context in the message headers."""
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    app = Celery("observability-test", broker="memory://", backend="cache+memory://")

    @app.task(name="observability.echo")
    def echo(value: int) -> int:
        return value

    tracer = trace.get_tracer("test")
    with start_worker(app, perform_ping_check=False, loglevel="WARNING"):
        with tracer.start_as_current_span("request that queues a task") as parent:
            result = echo.delay(7)
        assert result.get(timeout=10) == 7
    finished = list(spans.get_finished_spans())
    publish = one(finished, "apply_async/observability.echo")
    run = one(finished, "run/observability.echo")
    assert publish.parent is not None and publish.parent.span_id == parent.get_span_context().span_id
    assert run.context.trace_id == parent.get_span_context().trace_id
    assert run.parent is not None and run.parent.span_id == publish.context.span_id
