"""The catalog and pricing table, edited by platform staff; each tenant's cached answers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest

from routing.cache.service import purge_tenant_cache
from routing.catalog import forget_catalog
from routing.models import CacheEntry, CacheSettings, CatalogModel, Provider
from tenants.admin import platform_admin_site, tenant_admin_site
from tenants.selectors import current_tenant


class ProviderAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "base_url", "api_key_env", "enabled")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        forget_catalog()


class CatalogModelAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "provider",
        "upstream_model",
        "quality_tier",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "cached_input_price_per_mtok",
        "enabled",
    )
    list_filter = ("provider", "enabled", "quality_tier")
    list_editable = (
        "input_price_per_mtok",
        "output_price_per_mtok",
        "cached_input_price_per_mtok",
        "enabled",
    )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        forget_catalog()


platform_admin_site.register(Provider, ProviderAdmin)
platform_admin_site.register(CatalogModel, CatalogModelAdmin)


# --- the semantic cache, on each tenant's own admin site ------------------------------------


class CacheEntryAdmin(admin.ModelAdmin):
    """The tenant's cached answers (its own schema: nothing of other tenants can show here)."""

    list_display = ("short_query", "model", "hits", "completion_tokens", "cost", "refreshed_at")
    search_fields = ("query", "answer")
    list_filter = ("model",)
    readonly_fields = (
        "query", "answer", "model", "embedding_model", "prompt_tokens", "completion_tokens", "cost",
        "hits", "created_at", "refreshed_at", "user_id", "conversation_id", "scope", "exact_key",
    )  # fmt: skip
    exclude = ("embedding",)
    actions = ["purge_cache"]

    @admin.display(description="query")
    def short_query(self, obj: CacheEntry) -> str:
        return obj.query[:100]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Purge ALL cached answers of this tenant (both layers)")
    def purge_cache(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        tenant = current_tenant()
        if tenant is None:
            return
        deleted = purge_tenant_cache(tenant)
        self.message_user(request, f"Purged {deleted} cached answers.", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # The purge concerns every entry, so it must not need a selection first.
        if request.method == "POST" and request.POST.get("action") == "purge_cache":
            if not request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                post = request.POST.copy()
                post.setlist(helpers.ACTION_CHECKBOX_NAME, ["0"])
                request.POST = post  # type: ignore[assignment]
        return super().changelist_view(request, extra_context)


class CacheSettingsAdmin(admin.ModelAdmin):
    """Cache warming budget; the switch, threshold and TTL are on the tenant's own settings."""

    list_display = ("__str__", "warm_enabled", "warm_budget_usd_per_day", "warm_max_entries_per_run")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not CacheSettings.objects.exists()


tenant_admin_site.register(CacheEntry, CacheEntryAdmin)
tenant_admin_site.register(CacheSettings, CacheSettingsAdmin)
