"""Monthly invoices (from the rollups, idempotent, exported, sent signed to a webhook) and the
tenant-aware Celery tasks that make rollups and invoices on schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django_tenants.utils import schema_context

from billing.invoices import WebhookError, invoices_csv, issue_invoice, send_invoice
from billing.models import DailyUsage, Invoice, InvoiceStatus, UsageRollupState
from billing.rls import ALL_TENANTS, tenant_scope
from billing.tasks import issue_monthly_invoices, rollup_all_tenants, rollup_tenant
from config.celery_app import app
from tests.billing.test_usage import seed
from tests.conftest import World

pytestmark = pytest.mark.usefixtures("db")
MARCH = date(2025, 3, 1)


class Receiver:
    """A billing system's webhook on a loopback port, answering with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/invoices"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture
def eager_celery() -> Iterator[None]:
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_an_invoice_sums_the_month_by_model_once(world: World) -> None:
    seed(world)
    invoice, created = issue_invoice(world.acme.tenant, MARCH)
    assert created and invoice.number == f"INV-202503-{world.acme.tenant.pk:05d}"
    assert (invoice.period_start, invoice.period_end) == (date(2025, 3, 1), date(2025, 3, 31))
    assert invoice.requests == 4 and invoice.cost == Decimal("0.000605")
    assert {line["model"]: line["requests"] for line in invoice.lines} == {"claude-3-5-haiku": 1, "gpt-4o-mini": 3}
    again, created_again = issue_invoice(world.acme.tenant, MARCH)
    assert not created_again and again.pk == invoice.pk
    csv_text = invoices_csv([invoice])
    assert csv_text.splitlines()[0].startswith("number,tenant,period_start")
    assert "gpt-4o-mini,3," in csv_text


def test_invoices_are_sent_signed_with_hmac(world: World, receiver: Receiver, settings: Any) -> None:
    settings.INVOICE_WEBHOOK_URL = receiver.url
    settings.INVOICE_WEBHOOK_SECRET = "s3cret"
    seed(world)
    invoice, _ = issue_invoice(world.acme.tenant, MARCH)
    sent = send_invoice(invoice.pk)
    assert sent.status == InvoiceStatus.SENT and sent.sent_at is not None
    [(headers, body)] = receiver.requests
    expected = hmac.new(b"s3cret", headers["X-Gateway-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Gateway-Signature"] == f"sha256={expected}"
    assert headers["X-Gateway-Delivery"] == invoice.number
    assert json.loads(body)["total"] == "0.000605"


def test_a_refused_send_is_recorded_and_raised_for_retry(world: World, settings: Any) -> None:
    failing = Receiver(status=500)
    try:
        settings.INVOICE_WEBHOOK_URL = failing.url
        seed(world)
        invoice, _ = issue_invoice(world.acme.tenant, MARCH)
        with pytest.raises(WebhookError):
            send_invoice(invoice.pk)
    finally:
        failing.server.shutdown()
    with tenant_scope(ALL_TENANTS):
        stored = Invoice.objects.get(pk=invoice.pk)
    assert stored.status == InvoiceStatus.FAILED and stored.last_error == "HTTP 500" and stored.send_attempts == 1


def test_the_rollup_task_runs_in_the_schema_it_was_queued_in(world: World) -> None:
    seed(world)
    with schema_context(world.acme.tenant.schema_name):
        result = rollup_tenant.apply().get()
    assert result["tenant"] == "acme" and result["rows"] >= 3
    assert UsageRollupState.objects.filter(tenant_id=world.acme.tenant.pk).exists()
    with pytest.raises(RuntimeError):  # queued on the public schema by mistake
        rollup_tenant.apply().get()


def test_the_scheduled_fan_out_rolls_up_every_tenant(world: World, eager_celery: None) -> None:
    seed(world)
    assert rollup_all_tenants.apply().get() >= 2
    with tenant_scope(ALL_TENANTS):
        tenants = set(DailyUsage.objects.filter(day=date(2025, 3, 10)).values_list("tenant_id", flat=True))
    assert {world.acme.tenant.pk, world.outsider.tenant.pk} <= tenants


def test_the_monthly_task_issues_every_tenants_invoice(world: World) -> None:
    seed(world)
    numbers = issue_monthly_invoices.apply(kwargs={"month": "2025-03-01"}).get()
    assert f"INV-202503-{world.acme.tenant.pk:05d}" in numbers
    assert f"INV-202503-{world.outsider.tenant.pk:05d}" in numbers
