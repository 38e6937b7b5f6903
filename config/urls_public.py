"""URLs of the public schema: platform staff, tenant management."""

from django.urls import include, path

from config.urls_common import urlpatterns as common
from tenants import api as tenants_api
from tenants.admin import platform_admin_site

handler404 = "config.errors.not_found_handler"
handler500 = "config.errors.server_error_handler"

urlpatterns = [
    path("admin/", platform_admin_site.urls),
    path("api/v1/tenants", tenants_api.TenantListView.as_view(), name="tenant-list"),
    path("", include("django_prometheus.urls")),
    *common,
]
