"""Real requests through the real server (daphne) and gateway (fake upstream), then the usage
endpoint against the sum of what the answers reported, streamed and non-streamed alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayServer

pytestmark = pytest.mark.django_db


def _today_usage(server: GatewayServer, admin_key: str) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    response = httpx.get(
        f"{server.url}/api/v1/tenants/acme/usage?start={today}&end={today}",
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _chat(server: GatewayServer, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count the sheep"}]} | body
    return httpx.post(f"{server.url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _streamed_tokens(response: httpx.Response) -> int:
    chunks = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    [usage] = [c["usage"] for c in chunks if c.get("usage")]
    return int(usage["total_tokens"])


def test_the_usage_endpoint_counts_exactly_what_was_answered(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    before = _today_usage(gateway_server, live_keys["acme_admin"])
    sent_tokens = 0
    for _ in range(3):
        response = _chat(gateway_server, live_keys["acme"], max_tokens=40)
        assert response.status_code == 200, response.text
        sent_tokens += response.json()["usage"]["total_tokens"]
    for _ in range(3):
        response = _chat(gateway_server, live_keys["acme"], max_tokens=40, stream=True, stream_options={"include_usage": True})
        assert response.status_code == 200, response.text
        sent_tokens += _streamed_tokens(response)
    after = _today_usage(gateway_server, live_keys["acme_admin"])
    assert after["api_calls"] - before["api_calls"] == 6
    assert after["tokens_used"] - before["tokens_used"] == sent_tokens
    assert Decimal(after["estimated_cost"]) > Decimal(before["estimated_cost"])
