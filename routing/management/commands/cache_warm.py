"""`python manage.py cache_warm [--tenant SLUG]`: refresh popular cached answers about to expire,
within each tenant's warming budget (run it from cron or Celery beat, e.g. every 10 minutes)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandParser

from routing.cache.warming import warm_tenant
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Refresh popular cached answers that are about to expire, within each tenant's budget."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", help="only this tenant (slug)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenants = Tenant.objects.exclude(schema_name="public").filter(is_active=True, cache_enabled=True)
        if options["tenant"]:
            tenants = tenants.filter(slug=options["tenant"])
        for tenant in tenants:
            report = async_to_sync(warm_tenant)(tenant)
            self.stdout.write(
                f"{tenant.slug}: refreshed {report.refreshed}, spent ${report.spent_usd}, "
                f"over budget {report.skipped_for_budget}, failed {report.failed}"
            )
