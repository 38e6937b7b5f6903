"""Billing fixtures: admission state (Redis keys, this process' fallback) is fresh per test."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from billing.admission import flush_admission_state
from tenants.models import Tenant


@pytest.fixture(autouse=True)
def _fresh_admission_state() -> Iterator[None]:
    flush_admission_state()
    yield
    flush_admission_state()


def limited(tenant: Tenant, **fields: Any) -> Tenant:
    """A copy of a session tenant with other limits, never saved (the session's stays as it is)."""
    clone = copy.copy(tenant)
    for name, value in fields.items():
        setattr(clone, name, value)
    return clone


def child_env() -> dict[str, str]:
    """Environment for a subprocess that uses this test run's database and Redis prefix."""
    db = connection.settings_dict
    url = f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "PLATFORM_ENV": "test",
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
