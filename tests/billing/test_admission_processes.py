"""Several processes at once against one tenant: they share one bucket and one budget."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from billing.selectors import api_key_month_used, tenant_month_used
from tenants.selectors import api_key_get_active
from tests.billing.conftest import child_env
from tests.conftest import World

pytestmark = pytest.mark.usefixtures("db")

ROOT = Path(__file__).resolve().parents[2]

# Loads the tenant, says "ready", waits for the go file, then fires its attempts concurrently,
# settling each admitted one with its full reservation; prints the status of each attempt.
CHILD = """
import asyncio, json, os, sys, django
django.setup()
from decimal import Decimal
from billing.admission import admit, settle
from config.errors import ApiError
from tenants.models import Tenant
from tenants.selectors import api_key_get_active

slug, attempts, rpm, quota, tokens, go_file, secret, key_budget, cost = sys.argv[1:10]
tenant = Tenant.objects.get(slug=slug)
tenant.requests_per_minute = int(rpm)
tenant.tokens_per_minute = 10**9
tenant.monthly_token_quota = int(quota) if int(quota) >= 0 else None
api_key = api_key_get_active(secret) if secret != "-" else None  # as the gateway reads it
if api_key is not None:
    api_key.monthly_cost_quota = Decimal(key_budget) if key_budget != "-" else None

async def one():
    try:
        admission = await admit(tenant, api_key, int(tokens), Decimal(cost))
    except ApiError as error:
        return error.status_code
    await settle(admission, int(tokens), Decimal(cost))
    return 200

async def main():
    print("ready", flush=True)
    while not os.path.exists(go_file):
        await asyncio.sleep(0.002)
    print(json.dumps(await asyncio.gather(*(one() for _ in range(int(attempts))))), flush=True)

asyncio.run(main())
"""


def _burst(
    tmp_path: Path,
    processes: int,
    attempts: int,
    rpm: int,
    quota: int,
    tokens: int,
    key_secret: str = "-",
    key_budget: str = "-",
    cost: str = "0",
) -> list[int]:
    go_file = tmp_path / "go"
    args = [
        "acme",
        str(attempts),
        str(rpm),
        str(quota),
        str(tokens),
        str(go_file),
        key_secret,
        key_budget,
        cost,
    ]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "ready", (line, child.stderr.read() if child.stderr else "")
    go_file.touch()
    statuses: list[int] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        statuses += json.loads(out.strip().splitlines()[-1])
    return statuses


def test_a_burst_from_four_processes_admits_the_limit_and_no_more(tmp_path: Path, world: World) -> None:
    statuses = _burst(tmp_path, processes=4, attempts=15, rpm=20, quota=-1, tokens=10)
    admitted = statuses.count(200)
    # A full bucket holds 20; refill during the burst is 1 every 3 s.
    assert 20 <= admitted <= 21, statuses
    assert set(statuses) <= {200, 429}


def test_concurrent_spend_against_a_nearly_spent_budget_overshoots_by_at_most_one_reservation(
    tmp_path: Path, world: World
) -> None:
    baseline, _ = tenant_month_used(world.acme.tenant)
    quota = baseline + 1000
    statuses = _burst(tmp_path, processes=4, attempts=5, rpm=10**6, quota=quota, tokens=300)
    admitted = statuses.count(200)
    # Admitted while anything was left: 0, 300, 600 and 900 committed before each of four.
    assert admitted == 4, statuses
    assert set(statuses) <= {200, 402}
    assert admitted * 300 <= 1000 + 300


def test_concurrent_spend_against_a_nearly_spent_key_cost_budget_overshoots_by_at_most_one_reservation(
    tmp_path: Path, world: World, live_keys: dict[str, str]
) -> None:
    # A committed key (the children have their own connections), whose budget is 0.001 USD
    # above what it has spent this month; the tenant itself is unlimited.
    key = api_key_get_active(live_keys["acme"])
    assert key is not None
    _, spent = api_key_month_used(world.acme.tenant, key.pk)
    statuses = _burst(
        tmp_path,
        processes=4,
        attempts=5,
        rpm=10**6,
        quota=-1,
        tokens=10,
        key_secret=live_keys["acme"],
        key_budget=str(spent + Decimal("0.0010")),
        cost="0.0003",
    )
    admitted = statuses.count(200)
    # Admitted while anything was left: 0, 0.0003, 0.0006 and 0.0009 committed before each of four.
    assert admitted == 4, statuses
    assert set(statuses) <= {200, 402}
    _, after = api_key_month_used(world.acme.tenant, key.pk)
    assert after == spent  # admission alone writes no usage rows
