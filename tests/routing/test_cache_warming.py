"""Cache warming: popular entries close to expiry are refreshed, within the tenant's budget."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone
from django_tenants.utils import schema_context

from config.redis import get_redis
from routing.cache.exact import forget_exact_cache
from routing.cache.service import cache_store
from routing.cache.warming import warm_tenant
from routing.models import CacheEntry, CacheSettings
from routing.types import ChatMessage, ChatRequest, Usage
from tenants.models import Tenant
from tests.conftest import World

COST = Decimal("0.40")


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    def clear() -> None:
        redis = get_redis()
        keys = list(redis.scan_iter(f"{settings.REDIS_KEY_PREFIX}:cache:*", count=1000))
        if keys:
            redis.delete(*keys)
        forget_exact_cache()

    clear()
    yield
    clear()


def _entry(tenant: Tenant, text: str, hits: int, age: timedelta) -> int:
    request = ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content=text)])
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    entry_id = async_to_sync(cache_store)(tenant, request, "gpt-4o-mini", f"old answer: {text}", usage, COST)
    assert entry_id is not None
    with schema_context(tenant.schema_name):
        CacheEntry.objects.filter(pk=entry_id).update(hits=hits, refreshed_at=timezone.now() - age)
    return entry_id


async def _fresh_answer(tenant: Tenant, request: ChatRequest, model: str) -> tuple[str, Usage, Decimal]:
    return f"new answer: {request.messages[-1].text()}", Usage(prompt_tokens=10, completion_tokens=12), COST


def test_popular_expiring_entries_are_refreshed_within_budget(db: None, world: World) -> None:
    acme = world.acme.tenant
    acme.cache_ttl_seconds = 86_400
    with schema_context(acme.schema_name):
        CacheSettings.objects.create(
            warm_enabled=True, warm_budget_usd_per_day=Decimal("1.00"), warm_min_hits=3
        )
    expiring = timedelta(seconds=86_400 - 600)  # 10 minutes left, inside the warming window
    most = _entry(acme, "What is the GDP of France?", hits=9, age=expiring)
    second = _entry(acme, "What is the GDP of Spain?", hits=5, age=expiring)
    over_budget = _entry(acme, "What is the GDP of Italy?", hits=4, age=expiring)
    unpopular = _entry(acme, "What is the GDP of Malta?", hits=1, age=expiring)
    not_expiring = _entry(acme, "What is the GDP of Peru?", hits=9, age=timedelta(hours=1))

    report = async_to_sync(warm_tenant)(acme, _fresh_answer)
    assert (report.refreshed, report.skipped_for_budget, report.spent_usd) == (2, 1, Decimal("0.80"))
    with schema_context(acme.schema_name):
        rows = {e.pk: e for e in CacheEntry.objects.all()}
    assert rows[most].answer.startswith("new answer") and rows[most].hits == 9
    assert rows[most].refreshed_at > timezone.now() - timedelta(minutes=1)
    assert rows[second].answer.startswith("new answer")
    for untouched in (over_budget, unpopular, not_expiring):
        assert rows[untouched].answer.startswith("old answer")
    # The day's budget is spent: a second run refreshes nothing.
    assert async_to_sync(warm_tenant)(acme, _fresh_answer).refreshed == 0


def test_warming_is_off_unless_the_tenant_turns_it_on(db: None, world: World) -> None:
    acme = world.acme.tenant
    _entry(acme, "What is the GDP of Chile?", hits=9, age=timedelta(seconds=acme.cache_ttl_seconds - 60))
    assert async_to_sync(warm_tenant)(acme, _fresh_answer).refreshed == 0


@pytest.fixture
def eager_celery() -> Iterator[None]:
    from config.celery_app import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_warming_is_on_the_beat_schedule_and_the_task_is_registered() -> None:
    from config.celery_app import app

    entries = [
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "routing.tasks.warm_all_tenants"
    ]
    assert len(entries) == 1
    # Several runs per warming window, or an entry could expire between two runs.
    schedule = entries[0]["schedule"]
    assert isinstance(schedule, float) and schedule <= settings.CACHE_WARM_WINDOW_SECONDS / 2
    app.loader.import_default_modules()
    assert {"routing.tasks.warm_all_tenants", "routing.tasks.warm_tenant_cache"} <= set(app.tasks)


def test_the_scheduled_task_warms_each_tenant_through_the_gateway_within_its_budget(
    db: None, world: World, gateway: object, eager_celery: None
) -> None:
    """The beat task fans out to every tenant; each run asks the (fake) upstream through the real
    gateway, in that tenant's schema, and spends only what that tenant's budget allows."""
    from routing.tasks import warm_all_tenants, warm_tenant_cache

    # As the task will see them (earlier tests may have changed the session's tenant objects).
    acme, outsider = (Tenant.objects.get(pk=t.tenant.pk) for t in (world.acme, world.outsider))
    assert acme.cache_enabled and outsider.cache_enabled
    expiring = timedelta(seconds=acme.cache_ttl_seconds - 600)
    with schema_context(acme.schema_name):
        CacheSettings.objects.create(
            warm_enabled=True, warm_budget_usd_per_day=Decimal("1.00"), warm_min_hits=2
        )
    with schema_context(outsider.schema_name):
        # Enough for nothing: each refresh is estimated at the previous answer's cost (0.40).
        CacheSettings.objects.create(
            warm_enabled=True, warm_budget_usd_per_day=Decimal("0.10"), warm_min_hits=2
        )
    acme_ids = [
        _entry(acme, "What is the capital of Norway?", hits=5, age=expiring),
        _entry(acme, "How tall is Mount Kilimanjaro?", hits=3, age=expiring),
    ]
    outsider_id = _entry(outsider, "What is the capital of Norway?", hits=5, age=expiring)

    assert warm_all_tenants.apply().get() >= 2
    with schema_context(acme.schema_name):
        refreshed = list(CacheEntry.objects.filter(pk__in=acme_ids))
    assert len(refreshed) == 2
    for entry in refreshed:
        assert not entry.answer.startswith("old answer"), entry.answer
        assert entry.refreshed_at > timezone.now() - timedelta(minutes=1)
        assert entry.hits >= 3  # popularity survives the refresh
    with schema_context(outsider.schema_name):
        assert CacheEntry.objects.get(pk=outsider_id).answer.startswith("old answer")
    # What the refreshes cost upstream is counted against acme's day, nothing against outsider's.
    day = timezone.now().strftime("%Y%m%d")
    redis = get_redis()
    spent = int(redis.get(f"{settings.REDIS_KEY_PREFIX}:cache:{acme.slug}:warm_spent:{day}") or 0)
    assert 0 < spent <= 1_000_000
    assert redis.get(f"{settings.REDIS_KEY_PREFIX}:cache:{outsider.slug}:warm_spent:{day}") is None
    # Queued on the public schema by mistake, the per-tenant task refuses to guess a tenant.
    with pytest.raises(RuntimeError):
        warm_tenant_cache.apply().get()
