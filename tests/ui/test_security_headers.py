"""The Content-Security-Policy (config/security.py): on every HTML page, compatible with the
Django admin, not on JSON, not on Swagger UI."""

from __future__ import annotations

import re

from tests.conftest import PASSWORD, World
from tests.ui.conftest import Browser


def _inline_scripts(html: str) -> list[str]:
    """Script elements that would run inline code (no src, not a JSON data block)."""
    return [
        tag
        for tag in re.findall(r"<script\b[^>]*>", html)
        if "src=" not in tag and "application/json" not in tag
    ]


def test_admin_pages_work_under_the_policy(db: None, world: World) -> None:
    admin = Browser("acme.localhost")
    login = admin.get("/admin/login/")
    assert "script-src 'self'" in login["Content-Security-Policy"]
    assert _inline_scripts(login.content.decode()) == []
    assert (
        admin.post("/admin/login/", {"username": world.acme.admin.email, "password": PASSWORD}).status_code
        == 302
    )
    for path in ("/admin/", "/admin/auth/user/", "/admin/auth/user/add/"):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert "Content-Security-Policy" in page
        # No inline script, so nothing the policy blocks breaks the admin. (django-tenants'
        # app list colours its captions with an inline <style>, which the policy ignores.)
        assert _inline_scripts(page.content.decode()) == [], path
    platform = Browser("127.0.0.1").get("/admin/login/")
    assert "Content-Security-Policy" in platform and _inline_scripts(platform.content.decode()) == []


def test_no_policy_on_json_or_swagger(db: None, world: World) -> None:
    client = Browser("127.0.0.1")
    assert "Content-Security-Policy" not in client.get("/healthz")
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and "Content-Security-Policy" not in docs
