"""The cache service on real Postgres (pgvector, tenant schemas) and Redis: both layers, scope,
guards, bypasses, TTL, purge, counters, erasure and isolation between tenants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone
from django_tenants.utils import schema_context

from config.redis import get_redis
from routing.cache import stats
from routing.cache.exact import forget_exact_cache
from routing.cache.service import (
    CacheHit,
    cache_drain,
    cache_lookup,
    cache_purge,
    cache_stats,
    cache_store,
    cache_store_later,
    erase_user_cache,
)
from routing.models import CacheEntry
from routing.types import ChatMessage, ChatRequest, ToolSpec, Usage
from tenants.models import Tenant
from tests.conftest import World

USAGE = Usage(prompt_tokens=20, completion_tokens=80)
COST = Decimal("0.000051")


def _clear_cache_keys() -> None:
    redis = get_redis()
    keys = list(redis.scan_iter(f"{settings.REDIS_KEY_PREFIX}:cache:*", count=1000))
    if keys:
        redis.delete(*keys)
    forget_exact_cache()


def _drop_cache_rows(world: World) -> None:
    """Other tests (live servers among them) commit cache entries of acme and outsider; these
    tests count entries, so they start from none (inside their own transaction)."""
    from routing.models import CacheEntry as _Entry

    for tenant in (world.acme.tenant, world.outsider.tenant):
        with schema_context(tenant.schema_name):
            _Entry.objects.all().delete()


@pytest.fixture(autouse=True)
def _clean_cache(db: None, world: World) -> Iterator[None]:
    _drop_cache_rows(world)
    _clear_cache_keys()
    yield
    _clear_cache_keys()


@pytest.fixture
def acme(db: None, world: World) -> Tenant:
    tenant = world.acme.tenant
    tenant.cache_enabled, tenant.cache_ttl_seconds, tenant.semantic_cache_threshold = True, 3600, 0.93
    return tenant


@pytest.fixture
def outsider(db: None, world: World) -> Tenant:
    return world.outsider.tenant


def ask(text: str, *context: tuple[str, str], **kwargs: Any) -> ChatRequest:
    messages = [ChatMessage(role=role, content=content) for role, content in context]  # type: ignore[arg-type]
    return ChatRequest(
        model="gpt-4o-mini", messages=[*messages, ChatMessage(role="user", content=text)], **kwargs
    )


def store(tenant: Tenant, request: ChatRequest, answer: str, **kwargs: Any) -> int | None:
    return async_to_sync(cache_store)(tenant, request, "gpt-4o-mini", answer, USAGE, COST, **kwargs)


def lookup(tenant: Tenant, request: ChatRequest, use_cache: bool = True) -> tuple[CacheHit | None, str]:
    async def run() -> tuple[CacheHit | None, str]:
        found = await cache_lookup(tenant, request, "gpt-4o-mini", use_cache)
        await cache_drain()
        return found

    return async_to_sync(run)()


def test_exact_hit_after_normalisation_carries_the_original_usage(acme: Tenant) -> None:
    assert store(acme, ask("What is the capital of France?"), "Paris.")
    hit, status = lookup(acme, ask("  what is the capital of FRANCE "))
    assert status == "exact" and hit is not None
    assert (hit.text, hit.kind, hit.similarity, hit.model) == ("Paris.", "exact", 1.0, "gpt-4o-mini")
    assert (hit.saved_usage.prompt_tokens, hit.saved_usage.completion_tokens) == (20, 80)


def test_semantic_hit_for_a_paraphrase_and_misses_for_near_misses(acme: Tenant) -> None:
    store(acme, ask("How do I convert km to miles?"), "Multiply by 0.621.")
    hit, status = lookup(acme, ask("How can I convert km to miles?"))
    assert status == "semantic" and hit is not None and hit.text == "Multiply by 0.621."
    assert 0.93 <= hit.similarity < 1.0
    for near_miss in (
        "How do I convert miles to km?",
        "How do I convert km to meters?",
        "How do I convert 5 km to miles?",
    ):
        assert lookup(acme, ask(near_miss)) == (None, "miss"), near_miss


def test_a_follow_up_in_another_conversation_never_meets_the_answer(acme: Tenant) -> None:
    france = (("user", "What is the VAT rate in France?"), ("assistant", "20 percent."))
    spain = (("user", "What is the VAT rate in Spain?"), ("assistant", "21 percent."))
    store(acme, ask("and in Germany?", *france), "19 percent (France context).")
    assert lookup(acme, ask("and in Germany?", *spain)) == (None, "miss")
    assert lookup(acme, ask("and in Germany?")) == (None, "miss")
    assert lookup(acme, ask("and in Germany?", ("system", "Answer in French."), *france)) == (None, "miss")
    hit, status = lookup(acme, ask("And in Germany", *france))
    assert status == "exact" and hit is not None


def test_sampling_settings_and_model_family_are_part_of_the_scope(acme: Tenant) -> None:
    store(acme, ask("Name a prime number", temperature=0.0), "7")
    assert lookup(acme, ask("Name a prime number", temperature=0.5))[1] == "miss"
    assert lookup(acme, ask("Name a prime number", temperature=0.0))[1] == "exact"
    other_model = async_to_sync(cache_lookup)(
        acme, ask("Name a prime number", temperature=0.0), "claude-3-5-haiku", True
    )
    assert other_model == (None, "miss")


def test_answers_longer_than_the_new_max_tokens_are_not_served(acme: Tenant) -> None:
    store(acme, ask("Tell me about Rome"), "A long answer.")  # 80 completion tokens
    assert lookup(acme, ask("Tell me about Rome", max_tokens=50))[1] == "miss"
    assert lookup(acme, ask("Tell me about Rome", max_tokens=100))[1] == "exact"


def test_bypasses_neither_read_nor_write(acme: Tenant) -> None:
    store(acme, ask("What is 2 plus 2?"), "4")
    assert lookup(acme, ask("What is 2 plus 2?"), use_cache=False) == (None, "bypass:use_cache_false")
    assert lookup(acme, ask("What is 2 plus 2?", temperature=1.2)) == (None, "bypass:temperature")
    assert store(acme, ask("Write a poem", temperature=1.2), "Roses...") is None
    acme.cache_enabled = False
    assert lookup(acme, ask("What is 2 plus 2?")) == (None, "bypass:disabled")


def test_errors_partial_and_empty_answers_are_never_cached(acme: Tenant) -> None:
    assert store(acme, ask("Explain TCP"), "TCP is a", finish_reason="length") is None
    assert store(acme, ask("Explain TCP"), "", finish_reason="stop") is None
    assert store(acme, ask("Explain TCP"), "partial", finish_reason="error") is None
    assert store(acme, ask("Explain TCP"), "calling", finish_reason="tool_calls") is None
    assert lookup(acme, ask("Explain TCP")) == (None, "miss")


def test_requests_with_tools_are_served_only_on_an_exact_match(acme: Tenant) -> None:
    tools = [ToolSpec(name="get_weather", parameters={"type": "object", "properties": {}})]
    store(acme, ask("Is it going to rain in Paris today?", tools=tools), "Probably not.")
    assert lookup(acme, ask("Is it going to rain in Paris today?", tools=tools))[1] == "exact"
    assert lookup(acme, ask("Will it rain in Paris today?", tools=tools)) == (None, "miss")
    with schema_context(acme.schema_name):
        assert CacheEntry.objects.get().embedding is None


def test_expired_entries_are_not_served(acme: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    entry_id = store(acme, ask("What is the tallest mountain?"), "Everest.")
    assert entry_id is not None
    _clear_cache_keys()  # the exact layer forgets: the semantic layer answers (similarity 1)...
    assert lookup(acme, ask("What is the tallest mountain?"))[1] == "semantic"
    with schema_context(acme.schema_name):
        CacheEntry.objects.filter(pk=entry_id).update(refreshed_at=timezone.now() - timedelta(hours=2))
    assert lookup(acme, ask("What is the tallest mountain?")) == (None, "miss")  # ...but not once expired
    # A shortened TTL applies to the exact layer's older entries too.
    store(acme, ask("What is the deepest lake?"), "Baikal.")
    assert lookup(acme, ask("What is the deepest lake?"))[1] == "exact"
    import routing.cache.exact as exact

    later = exact.time.time() + 120
    monkeypatch.setattr(exact.time, "time", lambda: later)
    acme.cache_ttl_seconds = 60
    assert lookup(acme, ask("What is the deepest lake?"))[1] != "exact"  # (the DB clock was not moved)


def test_an_entry_of_one_tenant_is_never_found_from_another(acme: Tenant, outsider: Tenant) -> None:
    store(acme, ask("What is our refund policy?"), "Acme's secret policy.")
    assert lookup(acme, ask("What is our refund policy?"))[1] == "exact"
    assert lookup(acme, ask("What's our refund policy"))[1] in {"exact", "semantic"}
    assert lookup(outsider, ask("What is our refund policy?")) == (None, "miss")
    assert lookup(outsider, ask("Tell me our refund policy")) == (None, "miss")
    with schema_context(outsider.schema_name):
        assert not CacheEntry.objects.exists()


def test_purge_removes_both_layers_of_one_tenant_only(acme: Tenant, outsider: Tenant) -> None:
    store(acme, ask("What is the boiling point of water?"), "100 C")
    store(outsider, ask("What is the boiling point of water?"), "100 C (outsider)")
    assert async_to_sync(cache_purge)(acme) == 1
    assert lookup(acme, ask("What is the boiling point of water?")) == (None, "miss")
    hit, status = lookup(outsider, ask("What is the boiling point of water?"))
    assert status == "exact" and hit is not None and hit.text == "100 C (outsider)"


def test_counters_per_tenant(acme: Tenant, outsider: Tenant) -> None:
    store(acme, ask("Define entropy"), "A measure of disorder.")
    lookup(acme, ask("Define entropy"))
    lookup(acme, ask("Define enthalpy"))
    lookup(acme, ask("Define entropy"), use_cache=False)
    counted = async_to_sync(cache_stats)(acme)
    assert (counted["hits_exact"], counted["misses"], counted["bypasses"], counted["stores"]) == (1, 1, 1, 1)
    assert counted["saved_tokens"] == 100 and counted["hit_rate"] == 0.5
    assert counted["saved_cost_usd"] == COST
    assert async_to_sync(cache_stats)(outsider)["hits"] == 0


def test_store_later_writes_off_the_request_path(acme: Tenant) -> None:
    async def run() -> tuple[CacheHit | None, str]:
        cache_store_later(
            acme, ask("What is a monad?"), "gpt-4o-mini", "A monoid in endofunctors.", USAGE, COST
        )
        await cache_drain()
        return await cache_lookup(acme, ask("What is a monad?"), "gpt-4o-mini", True)

    hit, status = async_to_sync(run)()
    assert status == "exact" and hit is not None


def test_erasing_a_user_removes_their_cached_answers(acme: Tenant, world: World) -> None:
    conversation = uuid.uuid4()
    store(acme, ask("What is my account number?"), "12345", user_id=world.acme.member.pk)
    store(acme, ask("Summarise this thread"), "A summary.", conversation_id=conversation)
    store(acme, ask("What is the speed of light?"), "299,792 km/s")
    with schema_context(acme.schema_name):
        assert erase_user_cache(world.acme.member.pk, [conversation]) == 2
        assert CacheEntry.objects.count() == 1
    assert lookup(acme, ask("What is my account number?")) == (None, "miss")


def test_stats_survive_a_broken_counter_write(acme: Tenant) -> None:
    async def run() -> None:
        await stats.count(acme.slug, misses=1)

    async_to_sync(run)()
    assert async_to_sync(cache_stats)(acme)["misses"] == 1


def test_hits_are_counted_per_entry_in_batches(acme: Tenant) -> None:
    """Warming refreshes the most served entries, so every hit must reach the entry's count,
    exact and semantic alike, though they are written in one batch rather than one by one."""
    entry_id = store(acme, ask("How do I convert km to miles?"), "Multiply by 0.621.")
    other_id = store(acme, ask("What is the capital of France?"), "Paris.")
    assert entry_id is not None and other_id is not None

    async def run() -> list[str]:
        statuses = []
        for text in ["How do I convert km to miles?"] * 3 + ["How can I convert km to miles?"]:
            statuses.append((await cache_lookup(acme, ask(text), "gpt-4o-mini", True))[1])
        statuses.append(
            (await cache_lookup(acme, ask("What is the capital of France?"), "gpt-4o-mini", True))[1]
        )
        await cache_drain()
        return statuses

    assert async_to_sync(run)() == ["exact", "exact", "exact", "semantic", "exact"]
    with schema_context(acme.schema_name):
        assert CacheEntry.objects.get(pk=entry_id).hits == 4
        assert CacheEntry.objects.get(pk=other_id).hits == 1
