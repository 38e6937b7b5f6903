"""The cache through the running server (daphne) and the official SDK: the x-gateway-cache header
tells a miss, an exact hit and a semantic hit; near misses and other tenants miss; purge works."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GatewayServer

pytestmark = pytest.mark.django_db


def _ask(client: openai.OpenAI, system: str, question: str, temperature: float = 0) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=temperature,
    )
    return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""


def _until_cached(client: openai.OpenAI, system: str, question: str) -> str:
    """Cache writes happen after the answer, off the request path: wait for the entry."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, text = _ask(client, system, question)
        if status == "exact":
            return text
        time.sleep(0.2)
    raise AssertionError("the answer was never cached")


def test_hits_and_misses_through_the_api(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    acme = openai.OpenAI(base_url=gateway_server.url + "/v1", api_key=live_keys["acme"], max_retries=0)
    outsider = openai.OpenAI(
        base_url=gateway_server.url + "/v1", api_key=live_keys["outsider"], max_retries=0
    )
    # A system prompt of this run's own keeps it apart from other tests' entries.
    system = f"You are a unit converter (run {uuid.uuid4().hex[:8]})."
    status, first = _ask(acme, system, "How do I convert km to miles?")
    assert status == "miss" and first
    assert _until_cached(acme, system, "How do I convert km to miles?") == first
    assert _ask(acme, system, "how do i convert KM to miles") == ("exact", first)
    assert _ask(acme, system, "How can I convert km to miles?") == ("semantic", first)
    assert _ask(acme, system, "How do I convert miles to km?")[0] == "miss"
    assert _ask(acme, "Another system prompt.", "How do I convert km to miles?")[0] == "miss"
    assert _ask(acme, system, "How do I convert km to miles?", temperature=1.5)[0] == "miss"
    assert _ask(outsider, system, "How do I convert km to miles?")[0] == "miss"

    stream = acme.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "How can I convert km to miles?"},
        ],
        temperature=0,
        stream=True,
    )
    assert stream.headers["x-gateway-cache"] == "semantic"
    streamed = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert streamed == first

    purge = httpx.delete(
        gateway_server.url + "/api/v1/cache", headers={"Authorization": f"Bearer {live_keys['acme_admin']}"}
    )
    assert purge.status_code == 200 and purge.json()["deleted"] >= 1, purge.content
    assert _ask(acme, system, "How do I convert km to miles?")[0] == "miss"


def test_writes_after_the_answer_give_their_database_connection_back(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    """Each miss is stored after its answer, off the request path. Those writes once kept a pooled
    connection borrowed for good: after DB_POOL_MAX_SIZE of them every request waited for a
    connection and failed. More misses than the pool holds must all be answered, and stored."""
    from django.conf import settings

    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if not pool:
        pytest.skip("no connection pool configured (DB_POOL=0)")
    acme = openai.OpenAI(
        base_url=gateway_server.url + "/v1", api_key=live_keys["acme"], max_retries=0, timeout=8
    )
    system = f"Pool check (run {uuid.uuid4().hex[:8]})."
    questions = [f"What is the population of town number {n}?" for n in range(int(pool["max_size"]) + 5)]
    for question in questions:
        assert _ask(acme, system, question)[0] == "miss"
    assert _until_cached(acme, system, questions[-1])
