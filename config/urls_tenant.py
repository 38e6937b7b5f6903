"""URLs of a tenant (X-Tenant-ID, subdomain, or API key): its users, keys, chat and gateway."""

from django.urls import include, path

from config.urls_common import urlpatterns as common
from tenants import api as tenants_api
from tenants.admin import tenant_admin_site

handler404 = "config.errors.not_found_handler"
handler500 = "config.errors.server_error_handler"

urlpatterns = [
    path("admin/", tenant_admin_site.urls),
    path("api/v1/users", tenants_api.UserListView.as_view(), name="user-list"),
    path("api/v1/users/<int:user_id>", tenants_api.UserDetailView.as_view(), name="user-detail"),
    path("api/v1/api-keys", tenants_api.ApiKeyListView.as_view(), name="api-key-list"),
    path("api/v1/api-keys/<int:key_id>", tenants_api.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("", include("django_prometheus.urls")),
    *common,
]
