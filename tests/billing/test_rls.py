"""Row-level security on the public reporting tables, tested with raw SQL: a query in one
tenant's context cannot read another tenant's rows even when it forgets the filter."""

from __future__ import annotations

from datetime import date

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from billing.audit import record_audit
from billing.models import DailyUsage
from billing.rls import ALL_TENANTS, tenant_scope
from tests.conftest import World

pytestmark = pytest.mark.usefixtures("db")


def _seed(world: World) -> None:
    for tenant in (world.acme.tenant, world.outsider.tenant):
        DailyUsage.objects.create(tenant_id=tenant.pk, day=date(2025, 1, 1), model="m", requests=1)


def _tenant_ids(sql: str, params: list[int] | None = None) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return {row[0] for row in cursor.fetchall()}


def test_a_tenant_context_sees_only_its_own_rows_without_any_filter(world: World) -> None:
    _seed(world)
    acme, outsider = world.acme.tenant.pk, world.outsider.tenant.pk
    with tenant_scope(acme):
        assert _tenant_ids("SELECT tenant_id FROM billing_dailyusage") == {acme}
        # Asking for the other tenant by name finds nothing either.
        assert _tenant_ids("SELECT tenant_id FROM billing_dailyusage WHERE tenant_id = %s", [outsider]) == set()
    with tenant_scope(outsider):
        assert _tenant_ids("SELECT tenant_id FROM billing_dailyusage") == {outsider}


def test_staff_context_sees_every_tenant(world: World) -> None:
    _seed(world)
    with tenant_scope(ALL_TENANTS):
        assert {world.acme.tenant.pk, world.outsider.tenant.pk} <= _tenant_ids("SELECT tenant_id FROM billing_dailyusage")


def test_forgetting_the_setting_shows_nothing(world: World) -> None:
    _seed(world)
    role = connection.ops.quote_name(settings.BILLING_REPORTING_DB_ROLE)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {role}")
        cursor.execute("SELECT count(*) FROM billing_dailyusage")
        assert cursor.fetchone()[0] == 0
        # A value that is neither a tenant id nor '*' matches nothing (no SQL games).
        cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [f"{world.acme.tenant.pk} OR true"])
        cursor.execute("SELECT count(*) FROM billing_dailyusage")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SET LOCAL ROLE NONE")


def test_the_audit_trail_is_walled_the_same_way(world: World) -> None:
    record_audit("test.acme", tenant=world.acme.tenant)
    record_audit("test.outsider", tenant=world.outsider.tenant)
    record_audit("test.platform")
    with tenant_scope(world.acme.tenant.pk), connection.cursor() as cursor:
        cursor.execute("SELECT action FROM billing_auditevent WHERE action LIKE 'test.%%'")
        assert [row[0] for row in cursor.fetchall()] == ["test.acme"]


def test_reporting_role_cannot_write(world: World) -> None:
    with pytest.raises(DatabaseError), tenant_scope(world.acme.tenant.pk), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_dailyusage (tenant_id, day, model, requests, prompt_tokens, completion_tokens,"
            " cached_tokens, cache_hits, errors, cost, cost_saved) VALUES (%s, '2025-01-02', 'm', 1, 0, 0, 0, 0, 0, 0, 0)",
            [world.outsider.tenant.pk],
        )


def test_policies_are_enabled_and_forced_for_the_table_owner() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relname IN ('billing_dailyusage', 'billing_invoice', 'billing_auditevent') "
            "AND relnamespace = 'public'::regnamespace ORDER BY relname"
        )
        assert cursor.fetchall() == [
            ("billing_auditevent", True, True),
            ("billing_dailyusage", True, True),
            ("billing_invoice", True, True),
        ]


def test_scope_refuses_anything_but_an_id_or_all() -> None:
    with pytest.raises(ValueError), tenant_scope("1 OR true"):
        pass


def test_settings_do_not_outlive_the_scope(world: World) -> None:
    with tenant_scope(world.acme.tenant.pk):
        pass
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user = session_user, coalesce(current_setting('app.tenant_id', true), '')")
        assert cursor.fetchone() == (True, "")
