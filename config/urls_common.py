"""Routes every host answers, public or tenant."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz, readyz
from tenants import api as tenants_api

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/auth/token", tenants_api.TokenView.as_view(), name="auth-token"),
    path("api/v1/auth/token/refresh", tenants_api.TokenRefreshView.as_view(), name="auth-refresh"),
    path("api/v1/tenants/<str:tenant_id>", tenants_api.TenantDetailView.as_view(), name="tenant-detail"),
    path(
        "api/v1/tenants/<str:tenant_id>/config",
        tenants_api.TenantConfigView.as_view(),
        name="tenant-config",
    ),
]
