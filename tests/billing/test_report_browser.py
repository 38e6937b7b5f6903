"""The billing report in a real browser (headless Chromium through Playwright): it logs in,
renders the chart and tables, and runs no script. Skipped where no Chromium is installed."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import PASSWORD, GatewayServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine"),
]


@pytest.fixture(scope="session")
def billing_user(django_db_setup: None, django_db_blocker: Any) -> str:
    """Committed (session scope, outside any test's transaction), so the server process sees it."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from tenants.services import user_create

    email = "browser-billing@platform.test"
    with django_db_blocker.unblock():
        user = get_user_model().objects.filter(username=email).first() or user_create(email=email, password=PASSWORD)
        user.groups.add(Group.objects.get_or_create(name="billing")[0])
    return email


def test_report_page_in_chromium(gateway_server: GatewayServer, billing_user: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{gateway_server.url}/billing/")
        assert "/billing/login" in page.url
        page.fill("input[name=username]", billing_user)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").inner_text() == "Usage and cost"
        assert page.locator("svg.chart").count() == 1
        assert page.locator("svg.chart").bounding_box()["width"] > 300  # type: ignore[index]
        assert page.locator("script").count() == 0
        assert "acme" in page.locator("table").first.inner_text()
        page.click("text=Invoices")
        assert page.locator("h1").inner_text() == "Invoices"
        browser.close()
    assert errors == []
