"""URLs of a tenant (X-Tenant-ID, subdomain, or API key): its users, keys, chat and gateway."""

from django.urls import include, path

from billing import api as billing_api
from chat import api as chat_api
from chat import stream_views, v1_views
from chat.urls_ui import static_urlpatterns
from config.metrics import metrics_view
from config.urls_common import urlpatterns as common
from routing.cache import api as cache_api
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
    path("api/v1/cache", cache_api.CacheView.as_view(), name="cache"),
    path("api/v1/conversations", chat_api.ConversationListView.as_view(), name="conversation-list"),
    path(
        "api/v1/conversations/<str:conversation_id>",
        chat_api.ConversationDetailView.as_view(),
        name="conversation-detail",
    ),
    path(
        "api/v1/conversations/<str:conversation_id>/messages",
        stream_views.messages,
        name="conversation-messages",
    ),
    path(
        "api/v1/conversations/<str:conversation_id>/events",
        stream_views.conversation_events,
        name="conversation-events",
    ),
    path(
        "api/v1/conversations/<str:conversation_id>/regenerate",
        stream_views.regenerate,
        name="conversation-regenerate",
    ),
    path(
        "api/v1/conversations/<str:conversation_id>/messages/<int:message_id>/edit",
        stream_views.edit_message,
        name="conversation-message-edit",
    ),
    path("v1/chat/completions", v1_views.chat_completions, name="v1-chat-completions"),
    path("v1/chat/completions/count_tokens", v1_views.count_chat_tokens, name="v1-chat-count-tokens"),
    path("v1/models", v1_views.list_models, name="v1-models"),
    path("v1/messages", v1_views.messages, name="v1-messages"),
    path("v1/messages/count_tokens", v1_views.count_message_tokens, name="v1-messages-count-tokens"),
    # billing: usage, audit trail, GDPR
    path("api/v1/tenants/<str:tenant_id>/usage", billing_api.UsageView.as_view(), name="tenant-usage"),
    path("api/v1/audit-events", billing_api.AuditEventListView.as_view(), name="audit-events"),
    path("api/v1/users/<int:user_id>/export", billing_api.UserDataExportView.as_view(), name="user-export"),
    path("api/v1/users/<int:user_id>/erase", billing_api.UserDataEraseView.as_view(), name="user-erase"),
    # django-prometheus' metrics and ours, aggregated over processes in multiprocess mode
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    # the chat UI (templates; chat/urls_ui.py)
    path("", include("chat.urls_ui")),
    *static_urlpatterns(),
    *common,
]
