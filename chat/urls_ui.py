"""The chat UI's routes on a tenant's host (`config/urls_tenant.py` includes them at the root)."""

from django.conf import settings
from django.contrib.staticfiles.views import serve
from django.urls import URLPattern, path, re_path, register_converter

from chat import ui_auth, views


class ExportFormat:
    regex = "md|json"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ExportFormat, "export_format")

urlpatterns = [
    path("", views.home, name="ui-home"),
    path("login", ui_auth.login_view, name="ui-login"),
    path("logout", ui_auth.logout_view, name="ui-logout"),
    path("search", views.search_view, name="ui-search"),
    path("usage", views.usage_view, name="ui-usage"),
    path("c/new", views.new_view, name="ui-new"),
    path("c/<uuid:conversation_id>", views.conversation_page, name="ui-conversation"),
    path("c/<uuid:conversation_id>/thread", views.thread_view, name="ui-thread"),
    path("c/<uuid:conversation_id>/send", views.send_view, name="ui-send"),
    path("c/<uuid:conversation_id>/regenerate", views.regenerate_view, name="ui-regenerate"),
    path("c/<uuid:conversation_id>/messages/<int:message_id>/edit", views.edit_view, name="ui-edit"),
    path("c/<uuid:conversation_id>/settings", views.settings_view, name="ui-settings"),
    path("c/<uuid:conversation_id>/rename", views.rename_view, name="ui-rename"),
    path("c/<uuid:conversation_id>/delete", views.delete_view, name="ui-delete"),
    path("c/<uuid:conversation_id>/export.<export_format:fmt>", views.export_view, name="ui-export"),
]


def static_urlpatterns() -> list[URLPattern]:
    """/static/ from the app server where no web server or CDN does it: development with
    DEBUG off and the live test server (`SERVE_STATIC_FILES`); never in production."""
    if not settings.SERVE_STATIC_FILES:
        return []
    prefix = settings.STATIC_URL.lstrip("/")
    return [re_path(rf"^{prefix}(?P<path>.*)$", serve, {"insecure": True})]
