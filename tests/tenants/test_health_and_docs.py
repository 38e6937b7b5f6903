from __future__ import annotations

from tests.conftest import Api, World, assert_error


def test_healthz_and_readyz(api: Api) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    # Probes answer on tenant hosts too, without resolving anything.
    assert api.get("/healthz", host="ghost.localhost").status_code == 200


def test_openapi_schema_and_docs(api: Api, world: World) -> None:
    schema = api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/tenants" in schema.content
    assert api.get("/api/docs/").status_code == 200


def test_unknown_api_route_is_json_404(api: Api, world: World) -> None:
    assert_error(api.get("/api/v1/nothing-here"), 404, "not_found")


def test_request_id_is_echoed_or_made(api: Api) -> None:
    assert api.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(api.get("/healthz").headers["x-request-id"]) == 32


def test_admin_front_pages_render_for_platform_staff_and_tenant_admins(api: Api, world: World) -> None:
    from tests.conftest import PASSWORD

    assert api.client.login(username=world.staff.email, password=PASSWORD)
    platform = api.client.get("/admin/")
    assert platform.status_code == 200
    assert b"/admin/tenants/tenant/" in platform.content
    api.client.logout()
    response = api.client.post(
        "/admin/login/?next=/admin/",
        {"username": world.acme.admin.email, "password": PASSWORD},
        headers={"Host": "acme.localhost"},
    )
    assert response.status_code == 302
    page = api.client.get("/admin/", headers={"Host": "acme.localhost"})
    assert page.status_code == 200
    assert b"/admin/tenants/apikey/" in page.content and b"/admin/tenants/tenant/" in page.content
