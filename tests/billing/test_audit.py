"""The audit trail: what is recorded, append-only, the hash chain and its verification, the API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from billing.audit import record_audit, verify_audit_chain
from billing.models import AuditEvent
from billing.rls import ALL_TENANTS, tenant_scope
from tests.billing.conftest import child_env
from tests.conftest import PASSWORD, Api, World, assert_error

pytestmark = pytest.mark.usefixtures("db")
ROOT = Path(__file__).resolve().parents[2]


def _events(tenant_id: int | str = ALL_TENANTS, **filters: object) -> list[AuditEvent]:
    with tenant_scope(tenant_id):
        return list(AuditEvent.objects.filter(**filters).order_by("id"))


def _tamper(sql: str, params: list[int]) -> None:
    """Edits behind the trigger's back, as someone with the database's superuser would."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


def test_a_fresh_chain_verifies(world: World) -> None:
    for index in range(3):
        record_audit("test.event", tenant=world.acme.tenant, detail={"n": index, "price": "1.50"})
    report = verify_audit_chain()
    assert report.ok and report.checked >= 3
    call_command("verify_audit_chain")


def test_the_trail_refuses_updates_and_deletes(world: World) -> None:
    event = record_audit("test.event", tenant=world.acme.tenant)
    for sql in ("UPDATE billing_auditevent SET action = 'x' WHERE id = %s", "DELETE FROM billing_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.id])


def test_an_edited_row_is_found(world: World) -> None:
    events = [record_audit("test.event", tenant=world.acme.tenant, detail={"n": i}) for i in range(4)]
    _tamper("UPDATE billing_auditevent SET detail = '{\"n\": 99}' WHERE id = %s", [events[2].id])
    report = verify_audit_chain()
    assert report.first_bad_id == events[2].id and "edited" in report.reason
    with pytest.raises(CommandError, match=f"#{events[2].id}"):
        call_command("verify_audit_chain")


def test_a_removed_row_is_found(world: World) -> None:
    events = [record_audit("test.event", tenant=world.acme.tenant, detail={"n": i}) for i in range(3)]
    _tamper("DELETE FROM billing_auditevent WHERE id = %s", [events[1].id])
    report = verify_audit_chain()
    assert report.first_bad_id == events[2].id and "removed" in report.reason


CHILD = """
import django, sys
django.setup()
from billing.audit import record_audit
for i in range(int(sys.argv[1])):
    record_audit("test.concurrent", detail={"i": i})
"""


def test_writers_in_several_processes_keep_one_chain() -> None:
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, "15"], cwd=ROOT, env=child_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    assert len(_events(action="test.concurrent")) >= 45
    report = verify_audit_chain()
    assert report.ok, report


def test_logins_and_failures_are_recorded(api: Api, world: World) -> None:
    api.post("/api/v1/auth/token", {"email": world.acme.member.email, "password": "wrong"}, tenant="acme")
    api.token(world.acme.member.email, tenant="acme")
    failed = _events(world.acme.tenant.pk, action="auth.login_failed")
    assert failed[-1].actor_label == world.acme.member.email and failed[-1].tenant_slug == "acme"
    issued = _events(world.acme.tenant.pk, action="auth.token_issued")
    assert issued[-1].actor_id == str(world.acme.member.pk) and issued[-1].ip == "127.0.0.1"


def test_key_creation_and_revocation_are_recorded(api: Api, world: World) -> None:
    token = api.token(world.acme.admin.email, tenant="acme")
    created = api.post("/api/v1/api-keys", {"name": "ci"}, tenant="acme", token=token).json()
    api.delete(f"/api/v1/api-keys/{created['id']}", tenant="acme", token=token)
    actions = [e.action for e in _events(world.acme.tenant.pk, target_type="api_key", target_id=str(created["id"]))]
    assert actions == ["api_key.created", "api_key.revoked"]
    # The secret itself never reaches the trail.
    assert created["key"] not in str(_events(world.acme.tenant.pk, action="api_key.created")[-1].detail)


def test_config_and_quota_changes_are_recorded_with_old_and_new_values(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    body = {"quotas": {"monthly_tokens": 5000}, "rate_limits": {"requests_per_minute": 7}}
    assert api.patch("/api/v1/tenants/acme/config", body, token=staff).status_code == 200
    [change] = _events(world.acme.tenant.pk, action="tenant.config_changed")
    assert change.detail["requests_per_minute"]["to"] == 7
    [quota] = _events(world.acme.tenant.pk, action="quota.changed")
    assert quota.detail == {"monthly_token_quota": {"from": None, "to": 5000}}
    assert quota.actor_label == world.staff.email


def test_tenant_admins_read_their_own_trail_and_staff_read_all(api: Api, world: World) -> None:
    record_audit("test.acme", tenant=world.acme.tenant)
    record_audit("test.outsider", tenant=world.outsider.tenant)
    admin = api.token(world.acme.admin.email, tenant="acme")
    data = api.get("/api/v1/audit-events?limit=500", tenant="acme", token=admin).json()["data"]
    assert {e["tenant"] for e in data} == {"acme"}
    assert "test.acme" in {e["action"] for e in data}
    member = api.token(world.acme.member.email, tenant="acme")
    assert_error(api.get("/api/v1/audit-events", tenant="acme", token=member), 403, "permission_denied")
    staff = api.token(world.staff.email)
    everything = api.get("/api/v1/audit-events?limit=500", token=staff).json()["data"]
    assert {"test.acme", "test.outsider"} <= {e["action"] for e in everything}
    only = api.get("/api/v1/audit-events?tenant=outsider&action=test.outsider", token=staff).json()
    assert [e["tenant"] for e in only["data"]] == ["outsider"] and only["has_more"] is False
    assert_error(api.get("/api/v1/audit-events?limit=0", token=staff), 400, "invalid_parameter")
    assert_error(api.get("/api/v1/audit-events?tenant=ghost", token=staff), 404)


def test_admin_site_logins_are_recorded(world: World) -> None:
    from django.test import Client

    client = Client()
    client.post("/admin/login/", {"username": world.staff.email, "password": PASSWORD})
    assert _events(action="auth.login", actor_label=world.staff.email)


def test_admin_site_actions_are_recorded(world: World) -> None:
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    from tenants.models import Tenant

    staff = get_user_model().objects.get(email=world.staff.email)
    # What the platform admin site writes when staff edit a tenant there.
    LogEntry.objects.create(
        user=staff,
        content_type=ContentType.objects.get_for_model(Tenant),
        object_id=str(world.acme.tenant.pk),
        object_repr="acme",
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Monthly token quota"]}}]',
    )
    [event] = _events(action="admin.action", target_id=str(world.acme.tenant.pk))
    assert event.detail["operation"] == "change" and "Monthly token quota" in event.detail["change"]
    assert event.actor_label == world.staff.email and event.target_type == "tenant"
