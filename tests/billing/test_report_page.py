"""The billing staff's report page: who gets in, what it shows, CSV export, invoices, and no
script or inline style (the CSP forbids them)."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from billing.models import AuditEvent, Invoice
from billing.rls import ALL_TENANTS, tenant_scope
from billing.rollups import rollup_tenant_usage
from tenants.services import user_create
from tests.billing.test_usage import seed
from tests.conftest import PASSWORD, World

pytestmark = pytest.mark.usefixtures("db")
MARCH = "start=2025-03-01&end=2025-03-31"


@pytest.fixture
def billing_client(world: World) -> Client:
    user = user_create(email="billing@platform.test", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name="billing")[0])
    client = Client()
    response = client.post("/billing/login", {"username": "billing@platform.test", "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def _rolled_up(world: World) -> None:
    seed(world)
    for tenant in (world.acme.tenant, world.outsider.tenant):
        rollup_tenant_usage(tenant, now=timezone.now() + timedelta(minutes=5))


def test_the_report_shows_tenants_models_days_savings_and_a_chart(billing_client: Client, world: World) -> None:
    _rolled_up(world)
    response = billing_client.get(f"/billing/?{MARCH}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<svg" in html and "Cost per day" in html
    assert "acme" in html and "outsider" in html and "gpt-4o-mini" in html and "claude-3-5-haiku" in html
    assert "Saved by the cache" in html
    # Bars carry a native tooltip with the tenant, the day and the amount.
    assert re.search(r"<title>acme, 2025-03-11: \$0\.000\d</title>", html)
    # Nothing the CSP forbids: no scripts, no inline styles or event handlers.
    assert "<script" not in html and " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)


def test_one_tenant_and_bad_input(billing_client: Client, world: World) -> None:
    _rolled_up(world)
    html = billing_client.get(f"/billing/?{MARCH}&tenant=acme").content.decode()
    assert "9.99" not in html.split("By tenant")[1].split("By model")[0]
    bad = billing_client.get("/billing/?start=nonsense")
    assert bad.status_code == 200 and "start must be a date" in bad.content.decode()


def test_csv_export_is_per_day_tenant_and_model_and_audited(billing_client: Client, world: World) -> None:
    _rolled_up(world)
    response = billing_client.get(f"/billing/report.csv?{MARCH}")
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    acme = [r for r in rows if r["tenant"] == "acme"]
    assert sum(int(r["requests"]) for r in acme) == 4
    assert {(r["date"], r["model"]) for r in acme} == {
        ("2025-03-10", "gpt-4o-mini"), ("2025-03-11", "gpt-4o-mini"), ("2025-03-11", "claude-3-5-haiku")
    }
    with tenant_scope(ALL_TENANTS):
        assert AuditEvent.objects.filter(action="data.export", actor_label="billing@platform.test").exists()


def test_invoices_page_issue_export_and_send(billing_client: Client, world: World, settings: Any) -> None:
    settings.INVOICE_WEBHOOK_URL = "http://127.0.0.1:1/nothing-listens"
    assert billing_client.post("/billing/invoices/issue").status_code == 302
    page = billing_client.get("/billing/invoices/").content.decode()
    assert "INV-" in page and "<script" not in page
    with tenant_scope(ALL_TENANTS):
        invoice = Invoice.objects.filter(tenant_id=world.acme.tenant.pk).first()
    assert invoice is not None
    assert billing_client.get("/billing/invoices/export?format=json").json()["data"]
    one = billing_client.get(f"/billing/invoices/export?format=json&number={invoice.number}").json()["data"]
    assert [i["number"] for i in one] == [invoice.number]
    assert billing_client.post(f"/billing/invoices/{invoice.pk}/send").status_code == 302
    assert "Sending failed" in billing_client.get("/billing/invoices/").content.decode()


def test_who_gets_in(world: World) -> None:
    anonymous = Client()
    response = anonymous.get("/billing/")
    assert response.status_code == 302 and response["Location"].startswith("/billing/login")
    user_create(email="plain@platform.test", password=PASSWORD)
    plain = Client()
    plain.post("/billing/login", {"username": "plain@platform.test", "password": PASSWORD})
    assert plain.get("/billing/").status_code == 403
    staff = Client()
    staff.post("/billing/login", {"username": world.staff.email, "password": PASSWORD})
    assert staff.get("/billing/").status_code == 200
    # Not on a tenant's host: a tenant admin never reaches it.
    assert Client().get("/billing/", HTTP_HOST="acme.localhost").status_code == 404
