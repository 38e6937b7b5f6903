"""Logging in, JWT validation and tenant binding of tokens and keys."""

from __future__ import annotations

import base64
import json
import time

import jwt
from django.conf import settings

from tests.conftest import PASSWORD, Api, World, assert_error


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tenant_user_gets_tokens_with_tenant_claim(api: Api, world: World) -> None:
    response = api.post(
        "/api/v1/auth/token", {"email": world.acme.member.email, "password": PASSWORD}, tenant="acme"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["tenant"] == "acme"
    claims = jwt.decode(
        body["access"], settings.JWT_SECRET_KEY, algorithms=["HS256"], audience="chat-platform"
    )
    assert claims["tenant"] == "acme"
    assert str(claims["user_id"]) == str(world.acme.member.pk)
    assert claims["token_type"] == "access"


def test_login_by_subdomain(api: Api, world: World) -> None:
    response = api.post(
        "/api/v1/auth/token", {"email": world.acme.admin.email, "password": PASSWORD}, host="acme.localhost"
    )
    assert response.status_code == 200
    assert response.json()["tenant"] == "acme"


def test_wrong_password_is_401(api: Api, world: World) -> None:
    response = api.post(
        "/api/v1/auth/token", {"email": world.acme.member.email, "password": "nope"}, tenant="acme"
    )
    assert_error(response, 401, "invalid_credentials")


def test_user_of_other_tenant_cannot_log_in_here(api: Api, world: World) -> None:
    response = api.post(
        "/api/v1/auth/token", {"email": world.outsider.member.email, "password": PASSWORD}, tenant="acme"
    )
    assert_error(response, 401, "invalid_credentials")


def test_missing_fields_are_400(api: Api, world: World) -> None:
    error = assert_error(api.post("/api/v1/auth/token", {"password": "x"}, tenant="acme"), 400)
    assert error["type"] == "invalid_request_error"


def test_unknown_tenant_is_404(api: Api, world: World) -> None:
    response = api.post("/api/v1/auth/token", {"email": "a@b.c", "password": "x"}, tenant="no-such-tenant")
    assert_error(response, 404, "tenant_not_found")
    assert_error(api.get("/api/v1/users", host="ghost.localhost"), 404, "tenant_not_found")


def test_token_of_tenant_a_is_refused_on_tenant_b(api: Api, world: World) -> None:
    token = api.token(world.acme.admin.email, tenant="acme")
    assert api.get("/api/v1/users", tenant="acme", token=token).status_code == 200
    assert_error(api.get("/api/v1/users", tenant="outsider", token=token), 401, "token_tenant_mismatch")
    # ...and on the public schema, where platform staff work.
    assert_error(api.get("/api/v1/tenants", token=token), 401, "token_tenant_mismatch")


def test_alg_none_is_401(api: Api, world: World) -> None:
    claims = {
        "token_type": "access",
        "user_id": world.acme.admin.pk,
        "tenant": "acme",
        "exp": int(time.time()) + 600,
        "aud": "chat-platform",
        "jti": "x",
    }
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert_error(api.get("/api/v1/users", tenant="acme", token=forged), 401)


def _sign(claims: dict[str, object], key: str = settings.JWT_SECRET_KEY) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _claims(world: World, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "token_type": "access",
        "user_id": world.acme.admin.pk,
        "tenant": "acme",
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
        "aud": "chat-platform",
        "iss": "chat-platform",
        "jti": "abc",
    }
    base.update(overrides)
    return base


def test_well_formed_token_passes_so_the_negative_cases_mean_something(api: Api, world: World) -> None:
    assert api.get("/api/v1/users", tenant="acme", token=_sign(_claims(world))).status_code == 200


def test_wrong_signature_is_401(api: Api, world: World) -> None:
    assert_error(
        api.get(
            "/api/v1/users",
            tenant="acme",
            token=_sign(_claims(world), "another-secret-of-at-least-32-bytes!"),
        ),
        401,
    )


def test_wrong_audience_is_401(api: Api, world: World) -> None:
    assert_error(
        api.get("/api/v1/users", tenant="acme", token=_sign(_claims(world, aud="someone-else"))), 401
    )


def test_expired_token_is_401(api: Api, world: World) -> None:
    token = _sign(_claims(world, exp=int(time.time()) - 5))
    assert_error(api.get("/api/v1/users", tenant="acme", token=token), 401)


def test_forged_tenant_claim_does_not_help(api: Api, world: World) -> None:
    # A validly signed token claiming another tenant is refused where the claim does not match.
    token = _sign(_claims(world, tenant="outsider"))
    assert_error(api.get("/api/v1/users", tenant="acme", token=token), 401, "token_tenant_mismatch")


def test_refresh_gives_new_access_on_same_tenant_only(api: Api, world: World) -> None:
    pair = api.post(
        "/api/v1/auth/token", {"email": world.acme.admin.email, "password": PASSWORD}, tenant="acme"
    ).json()
    refreshed = api.post("/api/v1/auth/token/refresh", {"refresh": pair["refresh"]}, tenant="acme")
    assert refreshed.status_code == 200
    assert api.get("/api/v1/users", tenant="acme", token=refreshed.json()["access"]).status_code == 200
    other = api.post("/api/v1/auth/token/refresh", {"refresh": pair["refresh"]}, tenant="outsider")
    assert_error(other, 401, "token_tenant_mismatch")
    assert_error(api.post("/api/v1/auth/token/refresh", {"refresh": "garbage"}, tenant="acme"), 401)


def test_no_credentials_is_401_with_error_shape(api: Api, world: World) -> None:
    response = api.get("/api/v1/users", tenant="acme")
    assert_error(response, 401, "not_authenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
