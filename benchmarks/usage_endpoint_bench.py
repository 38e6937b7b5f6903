"""How fast GET /api/v1/tenants/{id}/usage answers for a tenant with a million usage rows.

    .venv/bin/python benchmarks/usage_endpoint_bench.py [--rows 1000000] [--requests 300] [--cold]

Uses its own database (BENCH_DATABASE_URL, default .../bench_billing; created and migrated on
first run) and Redis prefix, so it never touches development or test data. Seeds the ledger of
tenant `bench` with --rows rows spread over the last 30 days (once; reruns reuse them), runs the
rollup, adds a few hundred rows after the watermark (the raw tail every live tenant has), then
times the endpoint through the whole Django stack (middleware, JWT, DRF, queries, Redis) with
Django's test client, in-process, so the figure is the server's time without the network.
`--cold` forgets the cached rollup rows before each request, as for the first read of a period
after a rollup. It also prints how busy the machine's CPUs were during the timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_billing"
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
os.environ.setdefault("REDIS_KEY_PREFIX", "gwbench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["DEBUG"] = "0"  # DEBUG keeps every query in memory and slows everything

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "claude-3-5-sonnet", "llama-3.1-8b"]


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            print(f"creating database {name}")
            conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute("SELECT 1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def seed(schema: str, rows: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{schema}".billing_usagerecord')
        have = cursor.fetchone()[0]
        if have >= rows:
            print(f"ledger already holds {have:,} rows")
            return
        print(f"seeding {rows - have:,} usage rows ...", flush=True)
        started = time.monotonic()
        # One statement: spread over the last 30 days, five models, a tenth of them cache hits.
        cursor.execute(
            f"""
            INSERT INTO "{schema}".billing_usagerecord
              (id, request_id, user_id, api_key_id, conversation_id, model, provider, prompt_tokens,
               completion_tokens, cached_tokens, usage_estimated, cost, cost_saved, cache_status, streamed,
               outcome, attempts, latency_ms, ttft_ms, created_at)
            SELECT gen_random_uuid(), 'bench-' || g, 1, NULL, NULL, (%s::text[])[1 + g %% 5], 'bench',
                   50 + g %% 400, 20 + g %% 300, 0, false, ((50 + g %% 400) * 0.15 + (20 + g %% 300) * 0.6) / 1e6,
                   0, CASE WHEN g %% 10 = 0 THEN 'exact' ELSE 'miss' END, g %% 2 = 0, 'ok', 1, 300, NULL,
                   now() - interval '30 days' * random() - interval '10 minutes'
            FROM generate_series(%s, %s) AS g
            """,
            [MODELS, have + 1, rows],
        )
        cursor.execute(f'ANALYZE "{schema}".billing_usagerecord')
        print(f"seeded in {time.monotonic() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="forget the cached rollup rows before every request (the first read of a period)",
    )
    parser.add_argument(
        "--limit-set-calls",
        action="store_true",
        help="django-tenants' TENANT_LIMIT_SET_CALLS: one SET search_path per schema switch, not per query",
    )
    args = parser.parse_args()
    ensure_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.conf import settings

    settings.TENANT_LIMIT_SET_CALLS = args.limit_set_calls
    from django.core.management import call_command
    from django.test import Client
    from django_tenants.utils import schema_context

    from billing.models import UsageRecord
    from billing.rollups import rollup_tenant_usage
    from billing.selectors import forget_cached_rollups, raw_usage_rows
    from tenants.models import Tenant
    from tenants.services import tenant_create

    call_command("migrate_schemas", verbosity=0, interactive=False)
    tenant = Tenant.objects.filter(slug="bench").first() or tenant_create(
        name="Bench", slug="bench", admin_email="admin@bench.test", admin_password="bench-password-123"
    )
    seed(tenant.schema_name, args.rows)
    started = time.monotonic()
    result = rollup_tenant_usage(tenant)
    print(
        f"rollup: {result.rows} day-model rows over {result.days} days in {time.monotonic() - started:.1f} s"
    )
    with schema_context(tenant.schema_name):
        for i in range(300):  # the tail since the watermark
            UsageRecord.objects.create(
                request_id=f"tail-{time.time_ns()}-{i}",
                model=MODELS[i % 5],
                provider="bench",
                prompt_tokens=100,
                completion_tokens=50,
            )
        total_rows = UsageRecord.objects.count()
        started = time.monotonic()
        raw_usage_rows(datetime.now(UTC) - timedelta(days=31), datetime.now(UTC) + timedelta(days=1))
        raw_ms = (time.monotonic() - started) * 1000

    client = Client()
    token = client.post(
        "/api/v1/auth/token",
        {"email": "admin@bench.test", "password": "bench-password-123"},
        content_type="application/json",
        headers={"X-Tenant-ID": "bench"},
    ).json()["access"]
    headers = {"X-Tenant-ID": "bench", "Authorization": f"Bearer {token}"}
    today = datetime.now(UTC).date()
    path = f"/api/v1/tenants/bench/usage?start={today - timedelta(days=30)}&end={today}"
    first = client.get(path, headers=headers)
    assert first.status_code == 200, first.content
    body = first.json()
    for _ in range(20):  # warm connections and caches
        client.get(path, headers=headers)
    timings = []
    busy_before, own_before, wall_before = machine_busy_seconds(), time.process_time(), time.monotonic()
    for _ in range(args.requests):
        if args.cold:
            forget_cached_rollups()
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    wall = time.monotonic() - wall_before
    machine = (machine_busy_seconds() - busy_before) / wall * 100
    own = (time.process_time() - own_before) / wall * 100
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    p99 = timings[int(len(timings) * 0.99) - 1]
    print(
        f"ledger rows: {total_rows:,}; the endpoint reports api_calls={body['api_calls']:,}, "
        f"tokens_used={body['tokens_used']:,}, {len(body['by_day'])} days x {len(body['by_model'])} models"
    )
    print(f"the same period summed from the raw ledger instead (no rollups): {raw_ms:,.0f} ms")
    print(
        f"usage endpoint over {args.requests} requests (TENANT_LIMIT_SET_CALLS={args.limit_set_calls}, "
        f"{'cold: rollup rows read every time' if args.cold else 'rollup rows cached per watermark'}): "
        f"p50 {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {timings[-1]:.1f} ms"
    )
    print(
        f"machine CPU busy during the timing: {machine:.0f}% (100 = one core of {os.cpu_count()}), "
        f"of it this process {own:.0f}%, everything else (Postgres, Redis, other users) {machine - own:.0f}%"
    )


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:8]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
