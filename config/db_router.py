"""django-tenants' router, refined per model.

django-tenants decides by app: an app in both SHARED_APPS and TENANT_APPS gets every model's
table in every schema. `billing` keeps the usage ledger in each tenant's schema and the
cross-tenant rollups in the public schema, so these lists say which model lives where.
"""

from __future__ import annotations

from typing import Any

from django_tenants.routers import TenantSyncRouter
from django_tenants.utils import get_public_schema_name

from tenants.schema import active_schema_name

PUBLIC_ONLY_MODELS: set[str] = {
    "billing.dailyusage",
    "billing.invoice",
    "billing.usagerollupstate",
    "billing.auditevent",
    "routing.provider",
    "routing.catalogmodel",
}
TENANT_ONLY_MODELS: set[str] = {"billing.usagerecord", "routing.cacheentry", "routing.cachesettings"}


class ScopedTenantSyncRouter(TenantSyncRouter):
    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        # django-tenants answers False (not this schema's app) or None (no objection).
        allowed = super().allow_migrate(db, app_label, model_name, **hints)
        if allowed is False or model_name is None:
            return allowed
        label = f"{app_label}.{model_name.lower()}"
        on_public = active_schema_name() == get_public_schema_name()
        if label in PUBLIC_ONLY_MODELS:
            return on_public
        if label in TENANT_ONLY_MODELS:
            return not on_public
        return allowed
