"""Two admin sites: the platform's (public schema, tenants and tiers) and each tenant's own.

The tenant admin site registers only models of that tenant, and every queryset in it is cut to
the tenant whose schema is active, so a tenant admin sees nothing of other tenants.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.audit_events import audit_api_key_limits
from tenants.models import ApiKey, Domain, Tenant
from tenants.selectors import current_tenant
from tenants.services import (
    API_KEY_LIMIT_FIELDS,
    API_KEY_SCOPES,
    api_key_create,
    api_key_revoke,
    api_key_update_limits,
    forget_cached_tenants,
)


class PlatformAdminSite(admin.AdminSite):
    site_header = "Platform administration"
    site_title = "Platform admin"

    def has_permission(self, request: HttpRequest) -> bool:
        return current_tenant() is None and super().has_permission(request)


class TenantAdminSite(admin.AdminSite):
    site_header = "Tenant administration"
    site_title = "Tenant admin"

    def has_permission(self, request: HttpRequest) -> bool:
        return current_tenant() is not None and super().has_permission(request)

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        tenant = current_tenant()
        if tenant is not None:
            context["site_header"] = f"{tenant.name}: administration"
        return context


platform_admin_site = PlatformAdminSite(name="platform_admin")
tenant_admin_site = TenantAdminSite(name="tenant_admin")


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_requests",
    "monthly_token_quota",
    "monthly_cost_quota",
)
MODEL_FIELDS = ("primary_model", "fallback_models", "allowed_models", "routing_strategy")
CACHE_FIELDS = ("cache_enabled", "semantic_cache_threshold", "cache_ttl_seconds", "cache_max_temperature")


class PlatformTenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "tier", "is_active", "primary_model", "requests_per_minute", "created_at")
    list_filter = ("tier", "is_active")
    search_fields = ("slug", "name")
    readonly_fields = ("schema_name", "created_at", "updated_at")
    inlines = [DomainInline]
    fieldsets = (
        (None, {"fields": ("name", "slug", "schema_name", "tier", "is_active", "created_at", "updated_at")}),
        ("Limits and quotas", {"fields": LIMIT_FIELDS}),
        ("Models and routing", {"fields": MODEL_FIELDS}),
        ("Cache", {"fields": CACHE_FIELDS}),
        ("Privacy", {"fields": ("log_content",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The slug names the schema; renaming it would orphan the schema.
        return (*self.readonly_fields, "slug") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            from tenants.services import schema_name_for

            obj.schema_name = schema_name_for(obj.slug)
        super().save_model(request, obj, form, change)
        forget_cached_tenants()


class PlatformApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "prefix", "user_id", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("tenant",)
    readonly_fields = [f.name for f in ApiKey._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


platform_admin_site.register(Tenant, PlatformTenantAdmin)
platform_admin_site.register(ApiKey, PlatformApiKeyAdmin)
platform_admin_site.register(User, UserAdmin)
platform_admin_site.register(Group, GroupAdmin)


class OwnTenantSettingsAdmin(admin.ModelAdmin):
    """The tenant's own settings; limits and tier are shown but set by platform staff."""

    readonly_fields = ("name", "slug", "tier", *LIMIT_FIELDS)
    fieldsets = (
        (None, {"fields": ("name", "slug", "tier")}),
        ("Limits and quotas (set by the platform)", {"fields": LIMIT_FIELDS}),
        ("Models and routing", {"fields": MODEL_FIELDS}),
        ("Cache", {"fields": CACHE_FIELDS}),
        ("Privacy", {"fields": ("log_content",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        tenant = current_tenant()
        return Tenant.objects.filter(pk=tenant.pk if tenant else -1)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        forget_cached_tenants()


class ApiKeyAddForm(forms.ModelForm):
    user = forms.ModelChoiceField(queryset=User.objects.none())
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in API_KEY_SCOPES],
        initial=["chat", "models"],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = ApiKey
        fields = ("name", "expires_at", *API_KEY_LIMIT_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = User.objects.filter(is_active=True)  # type: ignore[attr-defined]


class TenantApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user_id", "scopes", "expires_at", "revoked_at", "last_used_at")
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return ApiKey.objects.filter(tenant=current_tenant())

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        # Of an existing key only its own limits and quotas may change.
        return [f.name for f in ApiKey._meta.fields if f.name not in API_KEY_LIMIT_FIELDS]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            # `obj` already holds the form's values; the service compares with the stored key.
            stored = ApiKey.objects.select_related("tenant").get(pk=obj.pk)
            limits = {
                name: form.cleaned_data.get(name)
                for name in API_KEY_LIMIT_FIELDS
                if name in form.cleaned_data
            }
            audit_api_key_limits(request, stored, api_key_update_limits(stored, **limits))
            return
        tenant = current_tenant()
        assert tenant is not None
        created = api_key_create(
            tenant=tenant,
            user_id=form.cleaned_data["user"].pk,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.cleaned_data.get("expires_at"),
            requests_per_minute=form.cleaned_data.get("requests_per_minute"),
            tokens_per_minute=form.cleaned_data.get("tokens_per_minute"),
            monthly_token_quota=form.cleaned_data.get("monthly_token_quota"),
            monthly_cost_quota=form.cleaned_data.get("monthly_cost_quota"),
        )
        obj.pk = created.api_key.pk
        messages.warning(request, f"Copy the key now; it is not shown again: {created.secret}")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(key)


tenant_admin_site.register(User, UserAdmin)
tenant_admin_site.register(Group, GroupAdmin)
tenant_admin_site.register(ApiKey, TenantApiKeyAdmin)
tenant_admin_site.register(Tenant, OwnTenantSettingsAdmin)
