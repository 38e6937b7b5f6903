"""URLs of the public schema: platform staff, tenant management."""

from django.urls import include, path

from billing import api as billing_api
from chat import ui_auth
from chat.urls_ui import static_urlpatterns
from config.metrics import metrics_view
from config.urls_common import urlpatterns as common
from tenants import api as tenants_api
from tenants.admin import platform_admin_site

handler404 = "config.errors.not_found_handler"
handler500 = "config.errors.server_error_handler"

urlpatterns = [
    path("admin/", platform_admin_site.urls),
    path("api/v1/tenants", tenants_api.TenantListView.as_view(), name="tenant-list"),
    # billing: usage of any tenant (platform and billing staff), audit trail, report pages
    path("api/v1/tenants/<str:tenant_id>/usage", billing_api.UsageView.as_view(), name="tenant-usage"),
    path("api/v1/audit-events", billing_api.AuditEventListView.as_view(), name="audit-events"),
    path("billing/", include("billing.urls")),
    # django-prometheus' metrics and ours, aggregated over processes in multiprocess mode
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    # the chat UI's front door on the bare host: which workspace? (then its own host)
    path("", ui_auth.workspace_view, name="ui-workspace"),
    path("login", ui_auth.workspace_view, name="ui-login"),
    *static_urlpatterns(),
    *common,
]
