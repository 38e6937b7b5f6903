"""Conversations and messages, in each tenant's own schema."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models

# The text search configuration of the full-text indexes; a search must use the same one for
# Postgres to use them (chat.selectors.search_conversations does).
SEARCH_CONFIG = "english"


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=100, blank=True, help_text="Empty: the tenant's primary model.")
    fallback_model = models.CharField(max_length=100, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["user", "-updated_at"]),
            GinIndex(SearchVector("title", config=SEARCH_CONFIG), name="chat_conversation_title_fts"),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


class MessageStatus(models.TextChoices):
    COMPLETE = "complete", "Complete"
    PARTIAL = "partial", "Partial (stopped or failed mid-answer)"
    ERROR = "error", "Error (nothing delivered)"


class Message(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16)  # system | user | assistant | tool
    content = models.TextField(blank=True)
    # Tool calls, image parts and the like, in the gateway's own message shape.
    extra = models.JSONField(default=dict, blank=True)
    model = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.COMPLETE)
    finish_reason = models.CharField(max_length=32, blank=True)
    cache_status = models.CharField(max_length=16, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            GinIndex(SearchVector("content", config=SEARCH_CONFIG), name="chat_message_content_fts"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
