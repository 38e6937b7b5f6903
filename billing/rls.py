"""Row-level security for the public reporting tables: the second wall behind the schemas.

DailyUsage, Invoice and AuditEvent hold every tenant's rows in one public table. Their policy
(migration 0003) shows a row only when the transaction's `app.tenant_id` setting names its
tenant, or is `*` for platform and billing staff; unset, it shows nothing.

Postgres never applies RLS to a superuser, and development connects as one, so reads also
switch to a role without BYPASSRLS (`BILLING_REPORTING_DB_ROLE`) for the transaction. Both
settings are `SET LOCAL`: they end with the transaction and cannot leak into a pooled
connection's next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction

ALL_TENANTS = "*"


def _scope_value(tenant_id: int | str) -> str:
    if tenant_id == ALL_TENANTS:
        return ALL_TENANTS
    value = int(tenant_id)  # anything but a number or '*' is a bug, never a wider scope
    return str(value)


@contextmanager
def tenant_scope(tenant_id: int | str, *, read_only: bool = True) -> Iterator[None]:
    """A transaction in which reporting tables show only `tenant_id`'s rows (or all, with
    ALL_TENANTS). `read_only=False` keeps the application's role, for the writers (rollups,
    invoices, audit) whose inserts the policy's WITH CHECK still checks for a non-superuser."""
    value = _scope_value(tenant_id)
    role = settings.BILLING_REPORTING_DB_ROLE if read_only else None
    # Outside any transaction the settings end with this one; inside one they must be put back.
    nested = connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if nested:
                cursor.execute("SELECT current_setting('app.tenant_id', true), current_user, session_user")
                previous, previous_role, session_role = cursor.fetchone()
            # set_config('role', ...) is SET LOCAL ROLE, in the same round trip.
            if role:
                cursor.execute("SELECT set_config('app.tenant_id', %s, true), set_config('role', %s, true)", [value, role])
            else:
                cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [value])
        yield
        # Reached only without an exception (an exception rolls the settings back with the
        # transaction or savepoint).
        if nested:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('app.tenant_id', %s, true), set_config('role', %s, true)",
                    [previous or "", "none" if previous_role == session_role else previous_role],
                )
