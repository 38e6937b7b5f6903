"""ASGI entry: HTTP through Django, WebSocket through Channels (routes in config/websocket_urls)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.health import graceful_shutdown
from config.tracing import configure_tracing

# Before the handler is built: the Django instrumentation adds its middleware to the chain.
tracing_on = configure_tracing("chat-platform-web")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from config.api_asgi import api_application, by_path  # noqa: E402

if settings.DEBUG:
    # Development serves static files from the app server; production puts them on a CDN/nginx.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.ws_auth import TenantWebSocketAuthMiddleware  # noqa: E402
from config.websocket_urls import websocket_urlpatterns  # noqa: E402

# graceful_shutdown: SIGTERM drains this process first (config/health.py).
application = graceful_shutdown(
    ProtocolTypeRouter(
        {
            "http": by_path(settings.API_PATH_PREFIXES, api_application(tracing_on), django_asgi_app),
            "websocket": TenantWebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
        }
    )
)
