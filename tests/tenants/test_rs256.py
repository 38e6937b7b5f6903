"""RS256 signing with a key pair from the environment, as the seed's JWT_ALGORITHM=RS256."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import django, jwt
django.setup()
from rest_framework_simplejwt.tokens import AccessToken
from django.conf import settings
token = AccessToken()
token["tenant"] = "acme"
header = jwt.get_unverified_header(str(token))
claims = jwt.decode(str(token), settings.JWT_PUBLIC_KEY, algorithms=["RS256"], audience="chat-platform")
print(header["alg"], claims["tenant"])
"""


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _run(env: dict[str, str], script: str = SCRIPT) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=full, capture_output=True, text=True)


def test_rs256_tokens_are_signed_with_the_private_key_and_verify_with_the_public(tmp_path: Path) -> None:
    private, public = _pem_pair()
    (tmp_path / "jwt.pem").write_text(private)
    result = _run(
        {
            "JWT_ALGORITHM": "RS256",
            "JWT_PRIVATE_KEY_FILE": str(tmp_path / "jwt.pem"),
            "JWT_PUBLIC_KEY": public,
        }
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["RS256", "acme"]


def test_rs256_without_keys_refuses_to_start() -> None:
    result = _run({"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY": "", "JWT_PUBLIC_KEY": ""})
    assert result.returncode != 0
    assert "JWT_PRIVATE_KEY" in result.stderr


def test_production_refuses_default_secrets() -> None:
    setup_only = "import django; django.setup(); print('started')"
    env = {"PLATFORM_ENV": "production", "DEBUG": "0", "DJANGO_SECRET_KEY": "", "JWT_SECRET_KEY": ""}
    result = _run(env, setup_only)
    assert result.returncode != 0
    assert "default secret" in result.stderr
    ok = _run(env | {"DJANGO_SECRET_KEY": "s" * 50, "JWT_SECRET_KEY": "j" * 50}, setup_only)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "started"
