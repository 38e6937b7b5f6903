"""A key's monthly cost budget through the real server (daphne) and gateway (fake upstream): the
80 percent warning on the answer, 402 once spent, and an admin raising it through the key API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayServer, World

pytestmark = pytest.mark.django_db


def _chat(server: GatewayServer, key: str) -> httpx.Response:
    # gpt-4o at $10 per million output tokens: 200 max_tokens reserve about 0.002 USD. A new
    # question each time: a cached answer would cost nothing.
    question = f"count the sheep in field {uuid.uuid4().hex}"
    payload = {"model": "gpt-4o", "max_tokens": 200, "messages": [{"role": "user", "content": question}]}
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _admin(server: GatewayServer, admin_key: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    )


def test_a_keys_cost_budget_warns_then_refuses_with_402_until_an_admin_raises_it(
    gateway_server: GatewayServer, live_keys: dict[str, str], world: World, knobs: Any
) -> None:
    admin_key = live_keys["acme_admin"]
    body = {"name": "live-budget", "user_id": world.acme.member.pk, "monthly_cost_quota": "0.0010"}
    created = _admin(gateway_server, admin_key, "POST", "/api/v1/api-keys", body)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    try:
        first = _chat(gateway_server, key)
        assert first.status_code == 200, first.text
        # Its reservation alone is past 80 percent of the budget.
        assert first.headers["x-quota-warning"].startswith("API key monthly quota ")
        statuses = [first.status_code]
        while statuses[-1] == 200 and len(statuses) < 20:
            refused = _chat(gateway_server, key)
            statuses.append(refused.status_code)
        assert statuses[-1] == 402, statuses
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "quota_exceeded")
        assert "cost quota of this API key" in error["message"]
        # The tenant's other keys are not held back by this key's budget.
        assert _chat(gateway_server, live_keys["acme"]).status_code == 200
        raised = _admin(
            gateway_server, admin_key, "PATCH", f"/api/v1/api-keys/{key_id}", {"monthly_cost_quota": "5"}
        )
        assert raised.status_code == 200, raised.text
        assert raised.json()["monthly_cost_quota"] == "5.0000"
        again = _chat(gateway_server, key)
        assert again.status_code == 200, again.text
        assert "x-quota-warning" not in again.headers
        trail = _admin(gateway_server, admin_key, "GET", "/api/v1/audit-events?limit=100").json()["data"]
        mine = [
            e
            for e in trail
            if (e["detail"] or {}).get("api_key_id") == key_id
            or e["target"] == {"type": "api_key", "id": str(key_id)}
        ]
        assert {"quota.warning", "quota.exhausted", "quota.changed"} <= {e["action"] for e in mine}
    finally:
        _admin(gateway_server, admin_key, "DELETE", f"/api/v1/api-keys/{key_id}")
