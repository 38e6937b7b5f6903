"""Platform staff manage tenants; tenant admins read and tune their own."""

from __future__ import annotations

from django.db import connection

from tests.conftest import PASSWORD, Api, World, assert_error

SEED_BODY = {
    "name": "Globex Corporation",
    "tier": "pro",
    "rate_limits": {"requests_per_minute": 120, "tokens_per_minute": 50_000},
    "model_preferences": {"primary": "gpt-4o", "fallback": "claude-3-5-sonnet"},
    "admin_email": "boss@globex.test",
    "admin_password": PASSWORD,
}


def _schema_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [name])
        return cursor.fetchone() is not None


def test_staff_creates_tenant_with_schema_domain_and_admin(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    response = api.post("/api/v1/tenants", SEED_BODY, token=staff)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "globex-corporation"  # derived from the name
    assert body["domain"] == "globex-corporation.localhost"
    assert body["tier"] == "pro"
    assert body["config"]["rate_limits"]["requests_per_minute"] == 120
    assert body["config"]["model_preferences"] == {
        "primary": "gpt-4o",
        "fallback": ["claude-3-5-sonnet"],
        "strategy": "preference",
    }
    assert _schema_exists("t_globex_corporation")
    # The first admin can log in on the new tenant right away.
    admin_token = api.token("boss@globex.test", tenant="globex-corporation")
    users = api.get("/api/v1/users", tenant="globex-corporation", token=admin_token).json()["data"]
    assert [u["email"] for u in users] == ["boss@globex.test"]
    assert users[0]["is_admin"] is True


def test_explicit_slug_and_duplicates(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    assert api.post("/api/v1/tenants", {"name": "Initech", "slug": "initech"}, token=staff).status_code == 201
    assert_error(
        api.post("/api/v1/tenants", {"name": "Other", "slug": "initech"}, token=staff), 409, "tenant_exists"
    )
    assert_error(
        api.post("/api/v1/tenants", {"name": "X", "slug": "public"}, token=staff), 400, "reserved_slug"
    )
    assert_error(
        api.post("/api/v1/tenants", {"name": "X", "slug": "Bad_Slug!"}, token=staff), 400, "invalid_slug"
    )


def test_failed_creation_leaves_nothing_behind(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    body = {"name": "Weak Co", "slug": "weak-co", "admin_email": "a@weak.test", "admin_password": "123"}
    assert_error(api.post("/api/v1/tenants", body, token=staff), 400, "weak_password")
    assert not _schema_exists("t_weak_co")
    assert api.get("/api/v1/tenants/weak-co", token=staff).status_code == 404


def test_bad_inputs_are_400_with_param(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    error = assert_error(api.post("/api/v1/tenants", {"tier": "pro"}, token=staff), 400)
    assert error["param"] == "name"
    error = assert_error(
        api.post("/api/v1/tenants", {"name": "A", "rate_limits": {"requests_per_minute": -1}}, token=staff),
        400,
    )
    assert error["param"] == "rate_limits.requests_per_minute"
    error = assert_error(api.post("/api/v1/tenants", {"name": "A", "tier": "platinum"}, token=staff), 400)
    assert error["param"] == "tier"


def test_list_and_get(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    listing = api.get("/api/v1/tenants", token=staff).json()
    slugs = {t["slug"] for t in listing["data"]}
    assert {"acme", "outsider"} <= slugs
    by_id = api.get(f"/api/v1/tenants/{world.acme.tenant.pk}", token=staff)
    assert by_id.status_code == 200 and by_id.json()["slug"] == "acme"
    assert api.get("/api/v1/tenants/acme", token=staff).json()["id"] == world.acme.tenant.pk
    assert_error(api.get("/api/v1/tenants/999999", token=staff), 404, "tenant_not_found")


def test_patch_config(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    response = api.patch(
        f"/api/v1/tenants/{world.acme.tenant.pk}/config",
        {
            "cache_enabled": False,
            "semantic_cache_threshold": 0.92,
            "allowed_models": ["gpt-4o-mini", "claude-3-5-haiku"],
            "model_preferences": {
                "primary": "gpt-4o-mini",
                "fallback": ["claude-3-5-haiku"],
                "strategy": "cost",
            },
            "rate_limits": {"requests_per_minute": 10},
            "quotas": {"monthly_tokens": 1_000_000, "monthly_cost_usd": "25.50"},
        },
        token=staff,
    )
    assert response.status_code == 200, response.content
    config = response.json()
    assert config["cache_enabled"] is False
    assert config["semantic_cache_threshold"] == 0.92
    assert config["rate_limits"]["requests_per_minute"] == 10
    assert config["rate_limits"]["tokens_per_minute"] == world.acme.tenant.tokens_per_minute  # untouched
    assert config["quotas"] == {"monthly_tokens": 1_000_000, "monthly_cost_usd": "25.5000"}
    assert config["model_preferences"]["strategy"] == "cost"
    assert api.get(f"/api/v1/tenants/{world.acme.tenant.pk}/config", token=staff).json() == config


def test_patch_config_rejects_bad_values(api: Api, world: World) -> None:
    staff = api.token(world.staff.email)
    url = f"/api/v1/tenants/{world.acme.tenant.pk}/config"
    error = assert_error(api.patch(url, {"semantic_cache_threshold": 1.5}, token=staff), 400)
    assert error["param"] == "semantic_cache_threshold"
    assert_error(api.patch(url, {"no_such_setting": 1}, token=staff), 400)
    assert_error(api.patch(url, {"model_preferences": {"strategy": "random"}}, token=staff), 400)


def test_tenant_admin_sees_and_tunes_only_own_tenant(api: Api, world: World) -> None:
    admin = api.token(world.acme.admin.email, tenant="acme")
    own = api.get(f"/api/v1/tenants/{world.acme.tenant.pk}", tenant="acme", token=admin)
    assert own.status_code == 200 and own.json()["slug"] == "acme"
    # The other tenant does not exist from here.
    assert_error(api.get(f"/api/v1/tenants/{world.outsider.tenant.pk}", tenant="acme", token=admin), 404)
    url = f"/api/v1/tenants/{world.acme.tenant.pk}/config"
    assert api.patch(url, {"cache_enabled": False}, tenant="acme", token=admin).status_code == 200
    # Limits and quotas are the platform's to set.
    assert_error(
        api.patch(url, {"rate_limits": {"requests_per_minute": 9999}}, tenant="acme", token=admin), 403
    )
    # Listing and creating tenants is platform staff's alone.
    assert api.get("/api/v1/tenants", tenant="acme", token=admin).status_code == 404


def test_members_and_anonymous_cannot_manage_tenants(api: Api, world: World) -> None:
    member = api.token(world.acme.member.email, tenant="acme")
    assert_error(api.get(f"/api/v1/tenants/{world.acme.tenant.pk}/config", tenant="acme", token=member), 403)
    assert_error(api.get("/api/v1/tenants"), 401)
    assert_error(api.post("/api/v1/tenants", SEED_BODY), 401)
