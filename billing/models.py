"""The usage ledger (one row per answered request, in the tenant's schema), and in the public
schema the cross-tenant rollups, invoices and the audit trail."""

from __future__ import annotations

import uuid

from django.db import models


class Outcome(models.TextChoices):
    OK = "ok", "Answered"
    PARTIAL = "partial", "Partially answered (stopped, disconnected or failed mid-stream)"
    ERROR = "error", "Failed"


class UsageRecord(models.Model):
    """Exactly one per request that reached a model (or the cache). Written in the same
    transaction as the assistant message, so usage is never lost or counted twice."""

    request_id = models.CharField(max_length=64, unique=True)
    user_id = models.BigIntegerField(null=True)
    api_key_id = models.BigIntegerField(null=True)
    conversation_id = models.UUIDField(null=True)
    model = models.CharField(max_length=100)
    provider = models.CharField(max_length=50)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    # What a cache hit would have cost at the model's price: the cache's saving, for reports.
    cost_saved = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    cache_status = models.CharField(max_length=16, default="miss")
    streamed = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.OK)
    attempts = models.PositiveSmallIntegerField(default=1)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta:
        ordering = ["-created_at"]
        # Per-key monthly quotas are initialised from this (once per key and month).
        indexes = [models.Index(fields=["api_key_id", "created_at"], name="usagerecord_key_time")]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.prompt_tokens}+{self.completion_tokens}"


# --- public schema: cross-tenant reporting (row-level security keyed by tenant, see billing/rls.py)


class DailyUsage(models.Model):
    """One tenant's usage of one model on one UTC day, rolled up from its UsageRecords.

    Reports read these, never the raw ledger (except the few minutes since the last rollup).
    """

    tenant_id = models.BigIntegerField()
    day = models.DateField()
    model = models.CharField(max_length=100)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cache_hits = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    cost_saved = models.DecimalField(max_digits=18, decimal_places=6, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant_id", "day", "model"], name="dailyusage_one_per_model_day")
        ]

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} {self.day} {self.model}"


class UsageRollupState(models.Model):
    """How far a tenant's ledger is rolled up: DailyUsage holds every row before `rolled_up_to`."""

    tenant_id = models.BigIntegerField(primary_key=True)
    rolled_up_to = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} up to {self.rolled_up_to:%Y-%m-%d %H:%M}"


class InvoiceStatus(models.TextChoices):
    ISSUED = "issued", "Issued"
    SENT = "sent", "Sent to the billing system"
    FAILED = "failed", "Sending failed"


class Invoice(models.Model):
    """A tenant's bill for one calendar month, made from the rollups by a scheduled task."""

    tenant_id = models.BigIntegerField()
    tenant_slug = models.CharField(max_length=48)
    number = models.CharField(max_length=80, unique=True)
    period_start = models.DateField()
    period_end = models.DateField(help_text="Last day included.")
    currency = models.CharField(max_length=3, default="USD")
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    cost_saved = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    lines = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.ISSUED)
    send_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_start", "tenant_slug"]
        constraints = [
            models.UniqueConstraint(fields=["tenant_id", "period_start"], name="invoice_one_per_tenant_month")
        ]

    def __str__(self) -> str:
        return self.number


class AuditEvent(models.Model):
    """One security-relevant action. Append-only (a trigger refuses UPDATE and DELETE) and
    chained: `hash` covers this row's content and the previous row's hash, so an edit made
    behind the trigger's back breaks the chain at that row (`manage.py verify_audit_chain`).

    No foreign keys: the trail must outlive the tenants and users it mentions.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    tenant_id = models.BigIntegerField(null=True, db_index=True)
    tenant_slug = models.CharField(max_length=48, blank=True)
    actor_type = models.CharField(max_length=16)  # user | api_key | system | anonymous
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    ip = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    detail = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["tenant_id", "-id"], name="auditevent_tenant_newest")]

    def __str__(self) -> str:
        return f"#{self.id} {self.action}"
