"""Fixtures of the chat UI's tests: a browser-like client on a tenant's host."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from tests.conftest import PASSWORD, World

ACME_HOST = "acme.localhost"


class Browser(Client):
    """Django's test client that behaves like a browser on one host: asks for HTML."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(HTTP_HOST=host, HTTP_ACCEPT="text/html,application/xhtml+xml", **kwargs)
        self.host = host

    def sign_in(self, email: str, password: str = PASSWORD) -> Any:
        return self.post("/login", {"email": email, "password": password})


@pytest.fixture
def browser(db: None, world: World) -> Browser:
    return Browser(ACME_HOST)


@pytest.fixture
def member(browser: Browser, world: World) -> Browser:
    """A browser signed in as acme's member."""
    response = browser.sign_in(world.acme.member.email)
    assert response.status_code == 302, response.content
    return browser


@pytest.fixture
def clear_lockouts() -> Iterator[None]:
    yield
    from django.conf import settings

    from config.redis import get_redis

    redis = get_redis()
    keys = list(redis.scan_iter(f"{settings.REDIS_KEY_PREFIX}:login-failures:*", count=1000))
    if keys:
        redis.delete(*keys)


def in_acme(world: World) -> Any:
    return schema_context(world.acme.tenant.schema_name)


@pytest.fixture
def make_conversation(world: World) -> Callable[..., Any]:
    """Creates a conversation of acme's member with messages: [(role, content), ...]."""
    from chat.models import Conversation, Message

    def make(messages: Sequence[tuple[str, str]] = (), user_id: int | None = None, **fields: Any) -> Any:
        with in_acme(world):
            conversation = Conversation.objects.create(user_id=user_id or world.acme.member.pk, **fields)
            for role, content in messages:
                extra = {"model": "gpt-4o-mini", "provider": "fake-openai"} if role == "assistant" else {}
                Message.objects.create(conversation=conversation, role=role, content=content, **extra)
        return conversation

    return make
