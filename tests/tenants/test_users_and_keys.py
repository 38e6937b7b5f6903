"""Tenant admins manage users and API keys; keys authenticate and stay in their tenant."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from billing.models import AuditEvent
from billing.rls import tenant_scope
from tenants.models import ApiKey
from tenants.selectors import hash_api_key
from tenants.services import api_key_create
from tests.conftest import PASSWORD, Api, World, assert_error


def test_admin_creates_user_who_can_log_in(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    response = api.post(
        "/api/v1/users", {"email": "new@acme.test", "password": PASSWORD}, tenant="acme", token=admin
    )
    assert response.status_code == 201
    assert response.json()["is_admin"] is False
    assert "password" not in response.json()
    assert api.token("new@acme.test", tenant="acme")
    assert_error(
        api.post(
            "/api/v1/users", {"email": "new@acme.test", "password": PASSWORD}, tenant="acme", token=admin
        ),
        409,
    )
    assert_error(
        api.post("/api/v1/users", {"email": "weak@acme.test", "password": "1"}, tenant="acme", token=admin),
        400,
        "weak_password",
    )
    assert_error(
        api.post(
            "/api/v1/users", {"email": "not-an-email", "password": PASSWORD}, tenant="acme", token=admin
        ),
        400,
    )


def test_same_email_may_exist_in_two_tenants(api: Api, world: World) -> None:
    for slug, who in (("acme", world.acme.admin), ("outsider", world.outsider.admin)):
        token = api.token(who.email, tenant=slug)
        body = {"email": "shared@person.test", "password": PASSWORD}
        assert api.post("/api/v1/users", body, tenant=slug, token=token).status_code == 201


def test_members_cannot_manage_users(api: Api, world: World) -> None:
    member = api.token(world.acme.member.email, tenant="acme")
    assert_error(api.get("/api/v1/users", tenant="acme", token=member), 403)
    assert_error(
        api.post("/api/v1/users", {"email": "x@y.z", "password": PASSWORD}, tenant="acme", token=member), 403
    )


def test_user_deactivation_revokes_keys_and_blocks_login(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    member_token = api.token(world.acme.member.email, tenant="acme")
    key = api.post("/api/v1/api-keys", {"name": "mine"}, tenant="acme", token=member_token).json()["key"]
    assert api.get("/api/v1/api-keys", token=key).status_code == 200
    assert api.delete(f"/api/v1/users/{world.acme.member.pk}", tenant="acme", token=admin).status_code == 204
    assert_error(api.get("/api/v1/api-keys", token=key), 401)
    response = api.post(
        "/api/v1/auth/token", {"email": world.acme.member.email, "password": PASSWORD}, tenant="acme"
    )
    assert_error(response, 401, "invalid_credentials")


def test_admin_cannot_demote_self(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    url = f"/api/v1/users/{world.acme.admin.pk}"
    assert_error(api.patch(url, {"is_admin": False}, tenant="acme", token=admin), 400, "self_demotion")


def test_api_key_is_shown_once_and_stored_hashed(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    response = api.post("/api/v1/api-keys", {"name": "ci", "scopes": ["chat"]}, tenant="acme", token=admin)
    assert response.status_code == 201
    body = response.json()
    secret = body["key"]
    assert secret.startswith("gwk_") and len(secret) > 40
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.key_hash == hash_api_key(secret)
    assert secret not in {stored.key_hash, stored.prefix, stored.name}
    listing = api.get("/api/v1/api-keys", tenant="acme", token=admin).json()["data"]
    assert all("key" not in item for item in listing)
    assert body["expires_at"]  # keys always expire


def test_key_alone_resolves_its_tenant(api: Api, world: World, acme_key: str) -> None:
    # No X-Tenant-ID, no subdomain: the key says which tenant (as the openai SDK sends it).
    response = api.get("/api/v1/api-keys", token=acme_key)
    assert response.status_code == 200
    assert {k["user_id"] for k in response.json()["data"]} == {world.acme.member.pk}


def test_key_of_tenant_a_is_refused_on_tenant_b(api: Api, world: World, acme_key: str) -> None:
    assert_error(api.get("/api/v1/api-keys", tenant="outsider", token=acme_key), 401, "invalid_api_key")
    assert_error(
        api.get("/api/v1/api-keys", host="outsider.localhost", token=acme_key), 401, "invalid_api_key"
    )


def test_unknown_revoked_and_expired_keys_are_401(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    assert_error(api.get("/api/v1/api-keys", token="gwk_not-a-real-key"), 401, "invalid_api_key")
    created = api.post("/api/v1/api-keys", {"name": "t"}, tenant="acme", token=admin).json()
    assert api.get("/api/v1/api-keys", token=created["key"]).status_code == 200
    assert api.delete(f"/api/v1/api-keys/{created['id']}", tenant="acme", token=admin).status_code == 204
    assert_error(api.get("/api/v1/api-keys", token=created["key"]), 401, "invalid_api_key")
    expiring = api.post("/api/v1/api-keys", {"name": "e"}, tenant="acme", token=admin).json()
    ApiKey.objects.filter(pk=expiring["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    from tenants.selectors import forget_cached_tenants

    forget_cached_tenants()
    assert_error(api.get("/api/v1/api-keys", token=expiring["key"]), 401, "invalid_api_key")


def test_key_scopes_are_enforced(api: Api, world: World, acme_key: str) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    # An admin's key without the admin scope cannot manage users.
    chat_only = api.post(
        "/api/v1/api-keys", {"name": "c", "scopes": ["chat"]}, tenant="acme", token=admin
    ).json()["key"]
    assert_error(api.get("/api/v1/users", token=chat_only), 403)
    admin_key = api.post(
        "/api/v1/api-keys", {"name": "a", "scopes": ["admin"]}, tenant="acme", token=admin
    ).json()["key"]
    assert api.get("/api/v1/users", token=admin_key).status_code == 200
    assert_error(
        api.post("/api/v1/api-keys", {"name": "x", "scopes": ["root"]}, tenant="acme", token=admin), 400
    )


def test_members_see_only_their_keys_and_cannot_mint_admin_keys(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    member = api.token(world.acme.member.email, tenant="acme")
    admin_key_id = api.post("/api/v1/api-keys", {"name": "adm"}, tenant="acme", token=admin).json()["id"]
    api.post("/api/v1/api-keys", {"name": "mem"}, tenant="acme", token=member)
    keys = api.get("/api/v1/api-keys", tenant="acme", token=member).json()["data"]
    assert "mem" in {k["name"] for k in keys}
    assert {k["user_id"] for k in keys} == {world.acme.member.pk}
    assert_error(api.delete(f"/api/v1/api-keys/{admin_key_id}", tenant="acme", token=member), 404)
    assert_error(
        api.post("/api/v1/api-keys", {"name": "x", "scopes": ["admin"]}, tenant="acme", token=member), 403
    )
    body = {"name": "x", "user_id": world.acme.admin.pk}
    assert_error(api.post("/api/v1/api-keys", body, tenant="acme", token=member), 403)


def test_key_expiry_bounds(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    past = (timezone.now() - timedelta(days=1)).isoformat()
    assert_error(
        api.post("/api/v1/api-keys", {"name": "p", "expires_at": past}, tenant="acme", token=admin),
        400,
        "invalid_expiry",
    )
    assert_error(
        api.post("/api/v1/api-keys", {"name": "l", "expires_in_days": 5000}, tenant="acme", token=admin),
        400,
        "invalid_expiry",
    )
    ok = api.post("/api/v1/api-keys", {"name": "s", "expires_in_days": 7}, tenant="acme", token=admin)
    assert ok.status_code == 201


def test_outsider_admin_cannot_see_acme_keys_or_users(api: Api, world: World, acme_key: str) -> None:
    outsider = api.token(world.outsider.admin.email, tenant="outsider")
    keys = api.get("/api/v1/api-keys", tenant="outsider", token=outsider).json()["data"]
    assert all(k["name"] != "test" for k in keys)
    acme_key_id = ApiKey.objects.get(key_hash=hash_api_key(acme_key)).pk
    assert_error(api.delete(f"/api/v1/api-keys/{acme_key_id}", tenant="outsider", token=outsider), 404)
    emails = {u["email"] for u in api.get("/api/v1/users", tenant="outsider", token=outsider).json()["data"]}
    assert world.acme.member.email not in emails


def test_imported_key_in_another_format_authenticates(api: Api, world: World) -> None:
    from tenants.services import api_key_create

    secret = "sk-" + "ab" * 32
    api_key_create(tenant=world.acme.tenant, user_id=world.acme.member.pk, name="imported", secret=secret)
    assert api.get("/api/v1/api-keys", token=secret).status_code == 200
    from config.errors import ApiError

    for bad in ("short", "x" * 20 + "." + "y" * 20 + "." + "z" * 20):
        try:
            api_key_create(tenant=world.acme.tenant, user_id=world.acme.member.pk, name="x", secret=bad)
        except ApiError as exc:
            assert exc.code == "invalid_key"
        else:
            raise AssertionError("accepted a bad imported key")


def test_admin_sets_and_clears_a_keys_own_limits_and_budget(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    body = {"name": "budget", "user_id": world.acme.member.pk, "monthly_cost_quota": "2.5"}
    created = api.post("/api/v1/api-keys", body, tenant="acme", token=admin).json()
    assert created["monthly_cost_quota"] == "2.5000"
    assert ApiKey.objects.get(pk=created["id"]).monthly_cost_quota == Decimal("2.5")
    changes = {"monthly_cost_quota": "10", "monthly_token_quota": 50_000, "requests_per_minute": 5}
    response = api.patch(f"/api/v1/api-keys/{created['id']}", changes, tenant="acme", token=admin)
    assert response.status_code == 200, response.content
    assert response.json()["monthly_cost_quota"] == "10.0000"
    stored = ApiKey.objects.get(pk=created["id"])
    assert (stored.monthly_cost_quota, stored.monthly_token_quota, stored.requests_per_minute) == (
        Decimal("10"),
        50_000,
        5,
    )
    cleared = api.patch(
        f"/api/v1/api-keys/{created['id']}", {"monthly_cost_quota": None}, tenant="acme", token=admin
    )
    assert cleared.json()["monthly_cost_quota"] is None
    with tenant_scope(world.acme.tenant.pk):
        quota_changes = [
            e.detail
            for e in AuditEvent.objects.filter(
                action="quota.changed", target_type="api_key", target_id=str(created["id"])
            )
        ]
    assert quota_changes == [
        {
            "monthly_cost_quota": {"from": "2.5000", "to": "10.0000"},
            "monthly_token_quota": {"from": None, "to": 50000},
        },
        {"monthly_cost_quota": {"from": "10.0000", "to": None}},
    ]


def test_only_a_tenant_admin_changes_key_limits_and_only_in_its_tenant(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    member = api.token(world.acme.member.email, tenant="acme")
    key_id = api.post("/api/v1/api-keys", {"name": "mine"}, tenant="acme", token=member).json()["id"]
    raise_own = {"monthly_cost_quota": "100"}
    assert_error(api.patch(f"/api/v1/api-keys/{key_id}", raise_own, tenant="acme", token=member), 403)
    outsider = api.token(world.outsider.admin.email, tenant="outsider")
    assert_error(api.patch(f"/api/v1/api-keys/{key_id}", raise_own, tenant="outsider", token=outsider), 404)
    assert ApiKey.objects.get(pk=key_id).monthly_cost_quota is None
    assert_error(
        api.patch(f"/api/v1/api-keys/{key_id}", {"monthly_cost_quota": "-1"}, tenant="acme", token=admin), 400
    )
    assert_error(api.patch(f"/api/v1/api-keys/{key_id}", {}, tenant="acme", token=admin), 400)


def test_tenant_admin_site_changes_only_a_keys_limits(api: Api, world: World) -> None:
    created = api_key_create(tenant=world.acme.tenant, user_id=world.acme.member.pk, name="site")
    host = {"Host": "acme.localhost"}
    login = {"username": world.acme.admin.email, "password": PASSWORD}
    assert api.client.post("/admin/login/?next=/admin/", login, headers=host).status_code == 302
    path = f"/admin/tenants/apikey/{created.api_key.pk}/change/"
    page = api.client.get(path, headers=host)
    assert page.status_code == 200 and b'name="monthly_cost_quota"' in page.content
    assert b'name="name"' not in page.content  # everything else is read-only
    form = {
        "requests_per_minute": "",
        "tokens_per_minute": "",
        "monthly_token_quota": "1000",
        "monthly_cost_quota": "3.25",
        "name": "renamed",  # ignored: read-only
    }
    assert api.client.post(path, form, headers=host).status_code == 302
    stored = ApiKey.objects.get(pk=created.api_key.pk)
    assert (stored.monthly_cost_quota, stored.monthly_token_quota, stored.name) == (
        Decimal("3.25"),
        1000,
        "site",
    )
    with tenant_scope(world.acme.tenant.pk):
        change = AuditEvent.objects.filter(action="quota.changed", target_id=str(created.api_key.pk)).get()
    assert change.detail["monthly_cost_quota"] == {"from": None, "to": "3.25"}
