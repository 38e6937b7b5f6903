"""Creates what a first `make run` needs, idempotently: platform staff, the `demo` tenant with an
admin, a member and an API key, and the model catalog. Prints how to log in.

Passwords are generated once and kept in a local, git-ignored file, so every later run prints
the same credentials instead of resetting them.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django_tenants.utils import schema_context

from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, tenant_create, user_create


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    os.chmod(path, 0o600)


class Command(BaseCommand):
    help = "Create the platform admin and the demo tenant (idempotent) and print the credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--credentials-file", default=str(settings.BASE_DIR / ".cache/demo-credentials.json")
        )
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["credentials_file"])
        creds = _load(path)
        creds.setdefault("staff", {"email": "staff@example.com", "password": secrets.token_urlsafe(12)})
        creds.setdefault(
            "demo_admin", {"email": "admin@demo.example.com", "password": secrets.token_urlsafe(12)}
        )
        creds.setdefault(
            "demo_user", {"email": "user@demo.example.com", "password": secrets.token_urlsafe(12)}
        )

        if "sync_model_catalog" in self._commands():
            call_command("sync_model_catalog", verbosity=0)

        User = get_user_model()
        staff = creds["staff"]
        if not User.objects.filter(username=staff["email"]).exists():
            user_create(email=staff["email"], password=staff["password"], is_admin=True)

        tenant = Tenant.objects.filter(slug="demo").first()
        if tenant is None:
            tenant = tenant_create(
                name="Demo Organisation",
                slug="demo",
                admin_email=creds["demo_admin"]["email"],
                admin_password=creds["demo_admin"]["password"],
            )
        with schema_context(tenant.schema_name):
            admin = User.objects.get(username=creds["demo_admin"]["email"])
            if not User.objects.filter(username=creds["demo_user"]["email"]).exists():
                user_create(email=creds["demo_user"]["email"], password=creds["demo_user"]["password"])
        if (
            "api_key" not in creds
            or not ApiKey.objects.filter(prefix=creds["api_key"][:12], revoked_at=None).exists()
        ):
            creds["api_key"] = api_key_create(
                tenant=tenant, user_id=admin.pk, name="demo key", scopes=["chat", "models", "usage"]
            ).secret
        _save(path, creds)
        self._print(creds, options["port"])

    def _commands(self) -> set[str]:
        from django.core.management import get_commands

        return set(get_commands())

    def _print(self, creds: dict[str, Any], port: int) -> None:
        base = f"http://127.0.0.1:{port}"
        demo = f"http://demo.localhost:{port}"
        lines = [
            "",
            "The platform is starting.",
            f"  Chat (demo tenant):   {demo}/",
            f"  Tenant admin:         {demo}/admin/",
            f"  Platform admin:       {base}/admin/",
            f"  API docs:             {base}/api/docs/",
            "",
            f"  Platform staff:       {creds['staff']['email']} / {creds['staff']['password']}",
            f"  Demo tenant admin:    {creds['demo_admin']['email']} / {creds['demo_admin']['password']}",
            f"  Demo tenant user:     {creds['demo_user']['email']} / {creds['demo_user']['password']}",
            f"  Demo API key:         {creds['api_key']}",
            "",
            "  Try the OpenAI-compatible API:",
            f"    curl {base}/v1/models -H 'Authorization: Bearer {creds['api_key']}'",
            "  Get a JWT for the demo admin:",
            f"    curl -X POST {base}/api/v1/auth/token -H 'X-Tenant-ID: demo' -H 'Content-Type: application/json' \\",
            f'      -d \'{{"email": "{creds["demo_admin"]["email"]}", "password": "{creds["demo_admin"]["password"]}"}}\'',
            "",
        ]
        self.stdout.write("\n".join(lines))
