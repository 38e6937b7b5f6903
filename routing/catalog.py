"""The catalog as `ModelTarget`s, cached per process (it is read on every request)."""

from __future__ import annotations

import os
import time

from config.env import envfloat
from routing.models import CatalogModel
from routing.types import ModelTarget, ProviderKind

CATALOG_CACHE_SECONDS = envfloat("CATALOG_CACHE_SECONDS", 5.0)

_cache: tuple[float, dict[str, ModelTarget], dict[str, str]] | None = None


def _load() -> tuple[dict[str, ModelTarget], dict[str, str]]:
    targets: dict[str, ModelTarget] = {}
    families: dict[str, str] = {}
    rows = CatalogModel.objects.select_related("provider").filter(enabled=True, provider__enabled=True)
    for row in rows:
        provider = row.provider
        kind: ProviderKind = provider.kind  # type: ignore[assignment]
        targets[row.name] = ModelTarget(
            name=row.name,
            provider=provider.name,
            kind=kind,
            upstream_model=row.upstream_model,
            base_url=provider.base_url,
            api_key=os.environ.get(provider.api_key_env, "") if provider.api_key_env else "",
            context_window=row.context_window,
            max_output_tokens=row.max_output_tokens,
            quality_tier=row.quality_tier,
            supports_tools=row.supports_tools,
            supports_vision=row.supports_vision,
            supports_json_schema=row.supports_json_schema,
            supports_logprobs=row.supports_logprobs,
            input_price_per_mtok=row.input_price_per_mtok,
            output_price_per_mtok=row.output_price_per_mtok,
            cached_input_price_per_mtok=row.cached_input_price_per_mtok,
        )
        families[row.name] = row.family or row.name
    return targets, families


def _current() -> tuple[dict[str, ModelTarget], dict[str, str]]:
    global _cache
    now = time.monotonic()
    if _cache is None or _cache[0] < now:
        targets, families = _load()
        _cache = (now + CATALOG_CACHE_SECONDS, targets, families)
    return _cache[1], _cache[2]


async def refresh_catalog() -> None:
    """Reloads a stale catalog from async code (the ORM is sync), so later reads are cache hits."""
    global _cache
    if _cache is None or _cache[0] < time.monotonic():
        from asgiref.sync import sync_to_async

        targets, families = await sync_to_async(_load)()
        _cache = (time.monotonic() + CATALOG_CACHE_SECONDS, targets, families)


def forget_catalog() -> None:
    global _cache
    _cache = None


def catalog_targets() -> dict[str, ModelTarget]:
    """Every enabled model by its client-facing name."""
    return _current()[0]


def catalog_target(name: str) -> ModelTarget | None:
    return _current()[0].get(name)


def model_family(name: str) -> str:
    return _current()[1].get(name, name)
