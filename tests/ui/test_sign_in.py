"""Signing in to a tenant: the workspace chooser on the bare host, wrong passwords, lockout,
disabled accounts, unknown tenants, sign-out."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tests.conftest import PASSWORD, World
from tests.ui.conftest import Browser, in_acme


def test_anonymous_pages_send_to_sign_in(browser: Browser) -> None:
    response = browser.get("/")
    assert response.status_code == 302 and response["Location"] == "/login?next=/"
    page = browser.get("/login")
    assert page.status_code == 200
    assert "Sign in to Acme" in page.content.decode()


def test_sign_in_and_out(browser: Browser, world: World) -> None:
    response = browser.post("/login?next=/search", {"email": world.acme.member.email, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/search"
    assert browser.get("/").status_code == 200
    out = browser.post("/logout")
    assert out.status_code == 302
    assert browser.get("/").status_code == 302


def test_next_cannot_leave_the_site(browser: Browser, world: World) -> None:
    response = browser.post(
        "/login", {"email": world.acme.member.email, "password": PASSWORD, "next": "https://evil.test/"}
    )
    assert response["Location"] == "/"


def test_wrong_password_is_a_clear_page(browser: Browser, world: World, clear_lockouts: None) -> None:
    response = browser.sign_in(world.acme.member.email, "not-the-password")
    assert response.status_code == 401
    html = response.content.decode()
    assert 'role="alert"' in html and "email and password do not match" in html
    assert world.acme.member.email in html  # the email stays filled in


@override_settings(LOGIN_MAX_FAILURES=3, LOGIN_LOCKOUT_SECONDS=120)
def test_lockout_after_repeated_failures_even_with_the_right_password(
    browser: Browser, world: World, clear_lockouts: None
) -> None:
    email = world.acme.admin.email
    assert browser.sign_in(email, "wrong-1").status_code == 401
    assert browser.sign_in(email, "wrong-2").status_code == 401
    locked = browser.sign_in(email, "wrong-3")
    assert locked.status_code == 429
    assert "Sign-in paused" in locked.content.decode() and "2 minutes" in locked.content.decode()
    # Locked: the right password is not even checked.
    assert browser.sign_in(email, PASSWORD).status_code == 429
    # Another email of the same tenant is not affected.
    assert browser.sign_in(world.acme.member.email).status_code == 302


@override_settings(LOGIN_MAX_FAILURES=2)
def test_lockout_is_per_tenant(world: World, clear_lockouts: None, db: None) -> None:
    acme = Browser("acme.localhost")
    outsider = Browser("outsider.localhost")
    for _ in range(2):
        acme.sign_in("member@outsider.test", "wrong")
    assert outsider.sign_in("member@outsider.test").status_code == 302


def test_success_clears_the_failure_count(browser: Browser, world: World, clear_lockouts: None) -> None:
    with override_settings(LOGIN_MAX_FAILURES=2):
        assert browser.sign_in(world.acme.member.email, "wrong").status_code == 401
        assert browser.sign_in(world.acme.member.email).status_code == 302
        browser.post("/logout")
        assert browser.sign_in(world.acme.member.email, "wrong").status_code == 401


def test_disabled_account_is_told_so(browser: Browser, world: World) -> None:
    from django.contrib.auth import get_user_model

    with in_acme(world):
        get_user_model().objects.filter(pk=world.acme.member.pk).update(is_active=False)
    response = browser.sign_in(world.acme.member.email)
    assert response.status_code == 403 and "account is disabled" in response.content.decode()
    # A wrong password on a disabled account does not reveal anything more.
    assert browser.sign_in(world.acme.member.email, "wrong").status_code == 401


def test_a_user_of_another_tenant_cannot_sign_in_here(browser: Browser, world: World) -> None:
    assert browser.sign_in(world.outsider.member.email).status_code == 401


def test_workspace_chooser_on_the_bare_host(db: None, world: World) -> None:
    public = Browser("127.0.0.1:8000")
    page = public.get("/")
    assert page.status_code == 200 and 'name="workspace"' in page.content.decode()
    # The redirect to the tenant's host is a form answer: the page's policy must allow it.
    assert "form-action 'self' http://*.localhost:*" in page["Content-Security-Policy"]
    unknown = public.post("/", {"workspace": "nope"})
    assert unknown.status_code == 404 and "no workspace called “nope”" in unknown.content.decode()
    found = public.post("/", {"workspace": "Acme "})
    assert found.status_code == 302 and found["Location"] == "http://acme.localhost:8000/login"


def test_unknown_tenant_host_is_a_page_for_browsers_and_json_for_apis(db: None, world: World) -> None:
    response = Browser("nope.localhost:8000").get("/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "No workspace here" in html and "http://localhost:8000/" in html
    assert "Content-Security-Policy" in response
    api = Browser("nope.localhost").get("/api/v1/conversations")
    assert api.status_code == 404 and api.json()["error"]["code"] == "tenant_not_found"


def test_suspended_tenant_page(db: None, world: World) -> None:
    from tenants.models import Tenant
    from tenants.selectors import forget_cached_tenants

    Tenant.objects.filter(pk=world.acme.tenant.pk).update(is_active=False)
    forget_cached_tenants()
    response = Browser("acme.localhost").get("/login")
    assert response.status_code == 403 and "suspended" in response.content.decode()


def test_login_form_needs_the_csrf_token(db: None, world: World) -> None:
    strict = Browser("acme.localhost", enforce_csrf_checks=True)
    refused = strict.post("/login", {"email": world.acme.member.email, "password": PASSWORD})
    assert refused.status_code == 403
    page = strict.get("/login")
    token = page.context["csrf_token"]
    accepted = strict.post(
        "/login", {"email": world.acme.member.email, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert accepted.status_code == 302


def test_session_cookie_is_http_only_and_rotated_on_sign_in(browser: Browser, world: World) -> None:
    browser.get("/login")
    before = browser.cookies.get("sessionid")
    browser.sign_in(world.acme.member.email)
    cookie: Any = browser.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert before is None or before.value != cookie.value


@pytest.mark.parametrize("path", ["/", "/search?q=x", "/usage"])
def test_signed_in_pages_send_a_strict_policy(member: Browser, path: str) -> None:
    response = member.get(path)
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
