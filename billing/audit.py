"""The audit trail: append-only, each record chained to the previous one by SHA-256.

`record_audit()` is the one writer. It takes a transaction-scoped advisory lock so that
concurrent writers (any process) append one at a time and every record names its real
predecessor; inside the caller's transaction, so an action that rolls back leaves no record.
`verify_audit_chain()` recomputes the chain and names the first record that does not match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from billing.models import AuditEvent
from billing.rls import ALL_TENANTS, tenant_scope
from tenants.models import ApiKey, Tenant
from tenants.selectors import current_tenant

GENESIS_HASH = "0" * 64
# Any constant shared by every writer; the value spells "audit".
_CHAIN_LOCK = 0x6175646974

# The fields the hash covers, in this order. Never reorder: old records would stop verifying.
HASHED_FIELDS = (
    "created_at",
    "tenant_id",
    "tenant_slug",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "target_type",
    "target_id",
    "ip",
    "request_id",
    "detail",
)


@dataclass(frozen=True)
class Actor:
    type: str  # user | api_key | system | anonymous
    id: str = ""
    label: str = ""


SYSTEM = Actor("system", "", "system")


def actor_from_request(request: Any) -> Actor:
    """Who made a Django or DRF request: the user, and the API key when one was used."""
    user = getattr(request, "user", None)
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        email = getattr(user, "email", "") or ""
        return Actor("api_key", str(auth.pk), f"{auth.prefix}… ({email})" if email else auth.prefix)
    if user is not None and getattr(user, "is_authenticated", False):
        return Actor("user", str(user.pk), str(getattr(user, "email", "") or user.get_username()))
    return Actor("anonymous")


def _client_ip(request: Any) -> str:
    django_request = getattr(request, "_request", request)
    meta = getattr(django_request, "META", {})
    return str(meta.get("REMOTE_ADDR", ""))[:45]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _field_value(event: AuditEvent, name: str) -> Any:
    value = getattr(event, name)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def compute_hash(event: AuditEvent, prev_hash: str) -> str:
    content = {name: _field_value(event, name) for name in HASHED_FIELDS}
    return hashlib.sha256((prev_hash + canonical_json(content)).encode()).hexdigest()


def record_audit(
    action: str,
    *,
    request: Any = None,
    actor: Actor | None = None,
    tenant: Tenant | None = None,
    target_type: str = "",
    target_id: object = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Appends one record. The tenant defaults to the one whose schema is active; the actor and
    client address come from `request` when given."""
    tenant = tenant if tenant is not None else current_tenant()
    actor = actor or (actor_from_request(request) if request is not None else SYSTEM)
    # Stored exactly as hashed: JSON round-trips (jsonb) must not change what was signed.
    clean_detail = json.loads(canonical_json(detail or {}))
    event = AuditEvent(
        created_at=timezone.now(),
        tenant_id=tenant.pk if tenant is not None else None,
        tenant_slug=tenant.slug if tenant is not None else "",
        actor_type=actor.type,
        actor_id=actor.id[:64],
        actor_label=actor.label[:254],
        action=action,
        target_type=target_type,
        target_id=str(target_id)[:64],
        ip=_client_ip(request) if request is not None else "",
        request_id=str(getattr(getattr(request, "_request", request), "request_id", "") or "")[:128],
        detail=clean_detail,
    )
    with tenant_scope(ALL_TENANTS, read_only=False):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK])
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event.prev_hash = last or GENESIS_HASH
        event.hash = compute_hash(event, event.prev_hash)
        event.save(force_insert=True)
    return event


def audit_on_commit(action: str, **kwargs: Any) -> None:
    """Records after the surrounding transaction commits (for actions that must not be
    rolled back by a failing audit write, or are recorded from outside a transaction)."""
    transaction.on_commit(lambda: record_audit(action, **kwargs))


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_bad_id: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


def _events_in_order(batch: int = 2000) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        with tenant_scope(ALL_TENANTS):
            rows = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id")[:batch])
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def verify_audit_chain() -> ChainReport:
    """Walks the whole trail in order. A record is bad when its own content no longer gives its
    hash (edited), or when it does not point at the hash of the record before it (a record
    was removed or inserted)."""
    expected_prev = GENESIS_HASH
    checked = 0
    for event in _events_in_order():
        if event.prev_hash != expected_prev:
            return ChainReport(checked, event.id, "does not follow the record before it (one removed or inserted)")
        if compute_hash(event, event.prev_hash) != event.hash:
            return ChainReport(checked, event.id, "content does not match its hash (edited)")
        expected_prev = event.hash
        checked += 1
    return ChainReport(checked)
