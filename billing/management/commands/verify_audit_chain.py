"""`manage.py verify_audit_chain`: recomputes the audit trail's hash chain; exits 1 and names the
first tampered record when it does not hold."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.audit import verify_audit_chain


class Command(BaseCommand):
    help = "Verifies the audit log's hash chain and reports the first tampered record."

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_audit_chain()
        if not report.ok:
            raise CommandError(
                f"Audit chain broken at record #{report.first_bad_id}: {report.reason}. "
                f"{report.checked} records before it verified."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.checked} records verified."))
