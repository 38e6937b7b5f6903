"""REST endpoints for conversations and their messages (the list and CRUD side; the answering
side is async, in `chat/stream_views.py`)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.models import Conversation, Message
from chat.selectors import conversation_for_user, conversations_of
from chat.services import conversation_create, conversation_update
from tenants.permissions import HasScope, IsTenantMember
from tenants.selectors import current_tenant


class ConversationIn(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    model = serializers.CharField(max_length=100, required=False, allow_blank=True)
    fallback_model = serializers.CharField(max_length=100, required=False, allow_blank=True)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False, allow_null=True)
    system_prompt = serializers.CharField(required=False, allow_blank=True, max_length=20_000)


def conversation_out(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model or None,
        "fallback_model": conversation.fallback_model or None,
        "temperature": conversation.temperature,
        "system_prompt": conversation.system_prompt,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


def tool_calls_out(calls: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Stored tool calls in OpenAI's shape, the one the API takes them back in."""
    return [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls
    ]


def message_out(message: Message) -> dict[str, Any]:
    extra = message.extra
    return {
        "id": message.pk,
        "role": message.role,
        # Always the text; `parts` has the content as sent when it had images.
        "content": message.content,
        "parts": extra.get("parts"),
        "tool_calls": tool_calls_out(extra.get("tool_calls", [])),
        "tool_call_id": extra.get("tool_call_id"),
        "is_error": bool(extra.get("is_error")),
        "model": message.model or None,
        "provider": message.provider or None,
        "status": message.status,
        "finish_reason": message.finish_reason or None,
        "cache": message.cache_status or None,
        "usage": {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens},
        "cost": str(message.cost),
        "created_at": message.created_at.isoformat(),
    }


class _Base(APIView):
    permission_classes = [IsTenantMember, HasScope]
    required_scope = "chat"

    def _validated(self, data: Any, partial: bool = False) -> dict[str, Any]:
        serializer = ConversationIn(data=data, partial=partial)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        if "temperature" in fields and fields["temperature"] is None:
            fields["temperature"] = None
        return fields


class ConversationListView(_Base):
    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(conversations_of(int(request.user.pk or 0)), request, view=self)
        return paginator.get_paginated_response([conversation_out(c) for c in page or []])

    def post(self, request: Request) -> Response:
        tenant = current_tenant()
        assert tenant is not None
        conversation = conversation_create(
            tenant=tenant, user_id=int(request.user.pk or 0), **self._validated(request.data)
        )
        return Response(conversation_out(conversation), status=status.HTTP_201_CREATED)


class ConversationDetailView(_Base):
    def get(self, request: Request, conversation_id: str) -> Response:
        return Response(conversation_out(conversation_for_user(conversation_id, int(request.user.pk or 0))))

    def patch(self, request: Request, conversation_id: str) -> Response:
        tenant = current_tenant()
        assert tenant is not None
        conversation = conversation_for_user(conversation_id, int(request.user.pk or 0))
        conversation = conversation_update(
            conversation, tenant=tenant, **self._validated(request.data, partial=True)
        )
        return Response(conversation_out(conversation))

    def delete(self, request: Request, conversation_id: str) -> Response:
        conversation_for_user(conversation_id, int(request.user.pk or 0)).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
