"""GDPR basics for tenant admins: export everything a user left in the tenant, and erase it.

Erasure deletes the user's conversations and messages and everything derived from them that
other apps register here (cached answers), and unlinks the usage ledger from the user: the
ledger stays, because it is the tenant's bill, but no longer says who asked. The account itself
is scrubbed on request. Both actions are audited, without the erased content.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing.models import UsageRecord
from tenants.models import ApiKey, Tenant
from tenants.selectors import forget_cached_tenants

# Called inside the erasure's transaction with the user's id and the ids of the conversations
# being erased; returns how many derived items (cached answers) it deleted. The semantic and
# exact caches register theirs with `register_erasure_hook`.
ErasureHook = Callable[[int, list[uuid.UUID]], int]
_erasure_hooks: list[ErasureHook] = []


def register_erasure_hook(hook: ErasureHook) -> None:
    if hook not in _erasure_hooks:
        _erasure_hooks.append(hook)


def user_data_export(tenant: Tenant, user: Any) -> dict[str, Any]:
    """Everything about `user` in the current (tenant's) schema, as JSON-ready data."""
    from chat.models import Conversation

    conversations = Conversation.objects.filter(user_id=user.pk).prefetch_related("messages").order_by("created_at")
    keys = ApiKey.objects.filter(tenant=tenant, user_id=user.pk)
    usage = UsageRecord.objects.filter(user_id=user.pk).order_by("created_at")
    return {
        "object": "user_data_export",
        "exported_at": timezone.now().isoformat(),
        "tenant": tenant.slug,
        "user": {
            "id": user.pk,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_active": user.is_active,
            "date_joined": user.date_joined.isoformat(),
            "last_login": user.last_login.isoformat() if user.last_login else None,
        },
        "conversations": [
            {
                "id": str(c.id),
                "title": c.title,
                "model": c.model,
                "system_prompt": c.system_prompt,
                "created_at": c.created_at.isoformat(),
                "messages": [
                    {
                        "role": m.role,
                        "content": m.content,
                        "extra": m.extra,
                        "model": m.model,
                        "created_at": m.created_at.isoformat(),
                        "prompt_tokens": m.prompt_tokens,
                        "completion_tokens": m.completion_tokens,
                        "cost": str(m.cost),
                    }
                    for m in c.messages.all()
                ],
            }
            for c in conversations
        ],
        "api_keys": [
            {
                "id": k.pk,
                "name": k.name,
                "prefix": k.prefix,
                "scopes": k.scopes,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in keys
        ],
        "usage": [
            {
                "request_id": u.request_id,
                "model": u.model,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "cost": str(u.cost),
                "created_at": u.created_at.isoformat(),
            }
            for u in usage
        ],
    }


@dataclass(frozen=True)
class ErasureResult:
    user_id: int
    conversations: int
    messages: int
    cached_answers: int
    usage_rows_unlinked: int
    account_erased: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def user_data_erase(tenant: Tenant, user: Any, *, erase_account: bool = False) -> ErasureResult:
    """Erases the user's conversations, messages and what was derived from them, in one
    transaction (with the caller's audit record, when the caller writes it inside)."""
    from chat.models import Conversation, Message

    with transaction.atomic():
        conversation_ids = list(Conversation.objects.filter(user_id=user.pk).values_list("id", flat=True))
        messages = Message.objects.filter(conversation_id__in=conversation_ids).count()
        cached = sum(hook(user.pk, conversation_ids) for hook in _erasure_hooks)
        Conversation.objects.filter(id__in=conversation_ids).delete()  # messages cascade
        unlinked = UsageRecord.objects.filter(user_id=user.pk).update(user_id=None, conversation_id=None)
        unlinked += UsageRecord.objects.filter(conversation_id__in=conversation_ids).update(conversation_id=None)
        if erase_account:
            _scrub_account(tenant, user)
    return ErasureResult(user.pk, len(conversation_ids), messages, cached, unlinked, erase_account)


def _scrub_account(tenant: Tenant, user: Any) -> None:
    placeholder = f"erased-{user.pk}@erased.invalid"
    get_user_model().objects.filter(pk=user.pk).update(
        username=placeholder, email=placeholder, first_name="", last_name="", is_active=False
    )
    user.refresh_from_db()
    user.set_unusable_password()
    user.save(update_fields=["password"])
    ApiKey.objects.filter(tenant=tenant, user_id=user.pk, revoked_at=None).update(revoked_at=timezone.now())
    forget_cached_tenants()  # this process stops accepting the keys at once
