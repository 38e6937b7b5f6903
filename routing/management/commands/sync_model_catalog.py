"""Seeds the model catalog: the providers the environment configures and their models' prices.

Idempotent. Rows an operator edited in the admin keep their prices: only missing rows are
created, and providers' endpoints and enabled flags follow the environment.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand

from routing.catalog import forget_catalog
from routing.models import CatalogModel, Provider

D = Decimal

# name, upstream model, family, tier, context, vision, logprobs, input, output, cached input ($/Mtok)
OPENAI_MODELS = [
    ("gpt-4o", "gpt-4o", "gpt-4o", 3, 128_000, True, True, D("2.50"), D("10.00"), D("1.25")),
    ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", 2, 128_000, True, True, D("0.15"), D("0.60"), D("0.075")),
]
ANTHROPIC_MODELS = [
    (
        "claude-3-5-sonnet",
        "claude-3-5-sonnet-latest",
        "claude-sonnet",
        3,
        200_000,
        True,
        False,
        D("3.00"),
        D("15.00"),
        D("0.30"),
    ),
    (
        "claude-3-5-haiku",
        "claude-3-5-haiku-latest",
        "claude-haiku",
        2,
        200_000,
        False,
        False,
        D("0.80"),
        D("4.00"),
        D("0.08"),
    ),
]


class Command(BaseCommand):
    help = "Create or update providers and models from the environment."

    def handle(self, *args: Any, **options: Any) -> None:
        self._provider(
            "openai",
            "openai",
            os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            "OPENAI_API_KEY",
            bool(os.environ.get("OPENAI_API_KEY")),
            OPENAI_MODELS,
        )
        self._provider(
            "anthropic",
            "anthropic",
            os.environ.get("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            "ANTHROPIC_API_KEY",
            bool(os.environ.get("ANTHROPIC_API_KEY")),
            ANTHROPIC_MODELS,
        )
        ollama = os.environ.get("LLAMA_API_ENDPOINT", "")
        llama_model = os.environ.get("LLAMA_MODEL", "llama3.1:8b")
        self._provider(
            "ollama",
            "ollama",
            ollama or "http://127.0.0.1:11434",
            "",
            bool(ollama),
            [("llama-3.1-8b", llama_model, "llama-3.1-8b", 2, 8192, False, False, D(0), D(0), D(0))],
        )
        local = os.environ.get("LOCAL_LLAMA_BASE_URL", "")
        self._provider(
            "local-llama",
            "openai_compatible",
            local or "http://127.0.0.1:8081/v1",
            "",
            bool(local),
            [("smollm2-135m", "smollm2-135m", "smollm2", 1, 2048, False, False, D(0), D(0), D(0))],
        )
        forget_catalog()

    def _provider(
        self, name: str, kind: str, base_url: str, key_env: str, enabled: bool, models: list[tuple[Any, ...]]
    ) -> None:
        provider, _ = Provider.objects.update_or_create(
            name=name,
            defaults={"kind": kind, "base_url": base_url, "api_key_env": key_env, "enabled": enabled},
        )
        for (
            model,
            upstream,
            family,
            tier,
            context,
            vision,
            logprobs,
            price_in,
            price_out,
            price_cached,
        ) in models:
            CatalogModel.objects.get_or_create(
                name=model,
                defaults={
                    "provider": provider,
                    "upstream_model": upstream,
                    "family": family,
                    "quality_tier": tier,
                    "context_window": context,
                    "max_output_tokens": min(4096, context // 2),
                    "supports_vision": vision,
                    "supports_logprobs": logprobs,
                    "input_price_per_mtok": price_in,
                    "output_price_per_mtok": price_out,
                    "cached_input_price_per_mtok": price_cached,
                },
            )
