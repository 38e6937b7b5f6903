"""`/api/v1/cache`: a tenant admin reads the cache's counters and purges its answers."""

from __future__ import annotations

from django.db import transaction
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.audit import record_audit
from routing.cache import stats
from routing.cache.service import purge_tenant_cache
from routing.models import CacheEntry
from tenants.models import Tenant
from tenants.permissions import IsTenantAdmin
from tenants.selectors import current_tenant


def _tenant() -> Tenant:
    tenant = current_tenant()
    assert tenant is not None  # IsTenantAdmin holds only inside a tenant
    return tenant


class CacheView(APIView):
    permission_classes = [IsTenantAdmin]

    def get(self, request: Request) -> Response:
        tenant = _tenant()
        body = {
            "object": "cache",
            "enabled": tenant.cache_enabled,
            "semantic_cache_threshold": tenant.semantic_cache_threshold,
            "cache_ttl_seconds": tenant.cache_ttl_seconds,
            "entries": CacheEntry.objects.count(),  # the request runs in the tenant's schema
            "stats": stats.read_sync(tenant.slug),
        }
        body["stats"]["saved_cost_usd"] = str(body["stats"]["saved_cost_usd"])  # type: ignore[index]
        return Response(body)

    def delete(self, request: Request) -> Response:
        """Purges every cached answer of this tenant, in both layers, at once."""
        with transaction.atomic():
            deleted = purge_tenant_cache(_tenant())
            record_audit("cache.purge", request=request, target_type="cache", detail={"deleted": deleted})
        return Response({"object": "cache.purge", "deleted": deleted}, status=status.HTTP_200_OK)
