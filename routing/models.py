"""The model catalog and pricing table: which models exist, who serves them, what they cost.

Public schema, edited by platform staff in the admin; `sync_model_catalog` seeds it from the
environment. Everything that computes cost reads prices from here (through `routing.pricing`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.validators import MinValueValidator
from django.db import models
from pgvector.django import HnswIndex, VectorField


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    OLLAMA = "ollama", "Ollama (native API)"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (llama.cpp, vLLM, ...)"


class Provider(models.Model):
    name = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=20, choices=ProviderKind.choices)
    base_url = models.CharField(max_length=300)
    # The key itself stays in the environment (or a secret store), never in the database.
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable holding the key."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


_PRICE: dict[str, Any] = {
    "max_digits": 12,
    "decimal_places": 6,
    "default": Decimal(0),
    "validators": [MinValueValidator(Decimal(0))],
}


class CatalogModel(models.Model):
    """A model clients can name, served by one provider, with its abilities and prices."""

    name = models.CharField(max_length=100, unique=True, help_text="The name clients send.")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    upstream_model = models.CharField(max_length=200, help_text="The provider's own model id.")
    family = models.CharField(
        max_length=100, blank=True, help_text="Models of one family may share cached answers."
    )
    quality_tier = models.PositiveSmallIntegerField(default=1, help_text="1 basic, 2 good, 3 best.")
    context_window = models.PositiveIntegerField(default=8192)
    max_output_tokens = models.PositiveIntegerField(default=4096)
    supports_tools = models.BooleanField(default=True)
    supports_vision = models.BooleanField(default=False)
    supports_json_schema = models.BooleanField(default=True)
    supports_logprobs = models.BooleanField(default=False)
    input_price_per_mtok = models.DecimalField(**_PRICE, help_text="USD per million input tokens.")
    output_price_per_mtok = models.DecimalField(**_PRICE, help_text="USD per million output tokens.")
    cached_input_price_per_mtok = models.DecimalField(
        **_PRICE, help_text="USD per million input tokens served from the provider's prompt cache."
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "model (catalog and pricing)"
        verbose_name_plural = "models (catalog and pricing)"

    def __str__(self) -> str:
        return self.name


class CacheEntry(models.Model):
    """A cached answer, in its tenant's own schema (never public; see config/db_router.py).

    `scope` hashes everything an answer depends on besides the question itself (model family,
    system prompt, earlier turns, sampling settings); an entry is only ever a candidate for a
    request with the same scope. `exact_key` adds the normalised question to it.
    """

    scope = models.CharField(max_length=64)
    exact_key = models.CharField(max_length=64, unique=True)
    query = models.TextField(help_text="The user message the answer was given to.")
    # Null for entries the semantic layer must not serve (tools, images, schemas, long queries).
    embedding = VectorField(dimensions=384, null=True, blank=True)
    # The query's contextual word-piece vectors (float16, n x 384), for the near-miss verifier.
    token_vectors = models.BinaryField(null=True, blank=True, editable=False)
    embedding_model = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=100, help_text="The model that produced the answer.")
    answer = models.TextField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    # Who first asked, so that erasing a user's data (billing/privacy.py) can find the entry.
    user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
    # The request as the gateway saw it, so that warming can ask again.
    request = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    refreshed_at = models.DateTimeField(help_text="Fresh until refreshed_at + the tenant's TTL.")
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-refreshed_at"]
        verbose_name = "cached answer"
        verbose_name_plural = "cached answers"
        indexes = [
            models.Index(fields=["scope", "refreshed_at"], name="cacheentry_scope_fresh"),
            HnswIndex(
                name="cacheentry_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return self.query[:80]


class CacheSettings(models.Model):
    """A tenant's cache-warming budget (one row in each tenant schema, made on first use)."""

    warm_enabled = models.BooleanField(default=False)
    warm_budget_usd_per_day = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("1.0"),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Upstream spend per UTC day that refreshing popular entries may use.",
    )
    warm_max_entries_per_run = models.PositiveIntegerField(default=20)
    warm_min_hits = models.PositiveIntegerField(
        default=3, help_text="Only entries served at least this often are refreshed."
    )

    class Meta:
        verbose_name = "cache warming"
        verbose_name_plural = "cache warming"

    def __str__(self) -> str:
        return "cache warming"
