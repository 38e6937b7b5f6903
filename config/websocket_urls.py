"""WebSocket routes (here, not in a `routing.py`, which would clash with the `routing` app)."""

from django.urls import path

from chat.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/<str:conversation_id>", ChatConsumer.as_asgi()),
]
