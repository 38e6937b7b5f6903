"""Registers an existing key (from another gateway, or a fixed key for a benchmark) for a user.

The secret is read from an environment variable, not the command line, so it stays out of shell
history and process lists. Only its hash is stored, as for keys we mint.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import schema_context

from config.errors import ApiError
from tenants.models import Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Register an existing API key (secret from an environment variable) for a tenant user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--email", required=True, help="the key's user")
        parser.add_argument("--secret-env", required=True, help="environment variable holding the key")
        parser.add_argument("--name", default="imported key")
        parser.add_argument("--scopes", default="chat,models")
        parser.add_argument("--if-missing", action="store_true", help="succeed quietly if already registered")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = os.environ.get(options["secret_env"], "")
        if not secret:
            raise CommandError(f"${options['secret_env']} is empty")
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant '{options['tenant']}'")
        with schema_context(tenant.schema_name):
            user = get_user_model().objects.filter(username=options["email"]).first()
        if user is None:
            raise CommandError(f"no user '{options['email']}' in tenant '{tenant.slug}'")
        try:
            created = api_key_create(
                tenant=tenant, user_id=user.pk, name=options["name"],
                scopes=options["scopes"].split(","), secret=secret,
            )
        except ApiError as exc:
            if exc.code == "key_exists" and options["if_missing"]:
                return
            raise CommandError(exc.message) from exc
        self.stdout.write(f"registered key {created.api_key.prefix}… for {user.email} on {tenant.slug}")
