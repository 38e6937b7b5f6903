"""The chat pages without script: the thread rendered safely, the conversation tools, search,
export, usage, and isolation between users and tenants."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.conftest import World
from tests.ui.conftest import Browser, in_acme


def _scripts(html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", html)


def test_pages_run_no_inline_script(member: Browser, make_conversation: Callable[..., Any]) -> None:
    conversation = make_conversation([("user", "hi"), ("assistant", "hello")], title="Greeting")
    for path in ("/", f"/c/{conversation.pk}", "/search?q=hi", "/usage"):
        html = member.get(path).content.decode()
        for tag in _scripts(html):
            # Our module, or a JSON data block (never executed).
            assert 'src="/static/js/main.js"' in tag or 'type="application/json"' in tag, tag


def test_conversation_page_renders_markdown_and_escapes_everything_else(
    member: Browser, make_conversation: Callable[..., Any]
) -> None:
    conversation = make_conversation(
        [
            ("user", "Show me <script>alert('user')</script> **not bold**"),
            (
                "assistant",
                "# Title\n\n<img src=x onerror=alert(1)> [bad](javascript:alert(2))\n\n"
                "```python\ndef f():\n    return '<b>'\n```\n",
            ),
        ],
        title="Safety",
    )
    response = member.get(f"/c/{conversation.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;user&#x27;)&lt;/script&gt;" in html
    assert "**not bold**" in html  # the user's text is shown as typed
    assert "<h1>Title</h1>" in html
    assert "<img" not in html and 'href="javascript' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert '<span class="k">def</span>' in html  # highlighted on the server
    assert "&lt;b&gt;" in html
    assert "gpt-4o-mini" in html  # which model answered


def test_regenerated_answers_are_folded_and_the_last_question_can_be_asked_again(
    member: Browser, make_conversation: Callable[..., Any]
) -> None:
    conversation = make_conversation(
        [("user", "q1"), ("assistant", "first try"), ("assistant", "second try")], title="Again"
    )
    html = member.get(f"/c/{conversation.pk}").content.decode()
    assert "1 earlier answer" in html and "first try" in html and "second try" in html
    assert html.count('data-action="regenerate"') == 1
    assert html.count('data-action="edit"') == 1


def test_thread_fragment_is_json_with_title(member: Browser, make_conversation: Callable[..., Any]) -> None:
    conversation = make_conversation([("user", "a"), ("assistant", "*b*")], title="T")
    body = member.get(f"/c/{conversation.pk}/thread").json()
    assert body["title"] == "T" and "<em>b</em>" in body["html"]


def test_someone_elses_conversation_is_not_found(
    member: Browser, world: World, make_conversation: Callable[..., Any]
) -> None:
    theirs = make_conversation([("user", "secret")], user_id=world.acme.admin.pk, title="Admin's")
    for path in (f"/c/{theirs.pk}", f"/c/{theirs.pk}/thread", f"/c/{theirs.pk}/export.md"):
        assert member.get(path).status_code == 404, path
    assert member.post(f"/c/{theirs.pk}/delete").status_code == 404
    assert member.post(f"/c/{theirs.pk}/rename", {"title": "x"}).status_code == 404
    # Another tenant's user, on their own host, does not reach acme's conversation either.
    other = Browser("outsider.localhost")
    assert other.sign_in(world.outsider.member.email).status_code == 302
    assert other.get(f"/c/{theirs.pk}").status_code == 404


def test_list_is_newest_first_and_rename_delete_work(
    member: Browser, world: World, make_conversation: Callable[..., Any]
) -> None:
    older = make_conversation(title="Older")
    newer = make_conversation(title="Newer")
    html = member.get("/").content.decode()
    assert html.index("Newer") < html.index("Older")
    response = member.post(f"/c/{older.pk}/rename", {"title": "Renamed <b>"})
    assert response.status_code == 302
    html = member.get(f"/c/{older.pk}").content.decode()
    assert "Renamed &lt;b&gt;" in html
    assert member.post(f"/c/{newer.pk}/delete").status_code == 302
    assert member.get(f"/c/{newer.pk}").status_code == 404
    assert "Deleted “Newer”" in member.get("/").content.decode()


def test_settings_accept_allowed_models_only(
    member: Browser, world: World, make_conversation: Callable[..., Any], gateway: Any
) -> None:
    from chat.models import Conversation
    from tenants.models import Tenant
    from tenants.selectors import forget_cached_tenants

    conversation = make_conversation(title="Settings")
    page = member.get(f"/c/{conversation.pk}").content.decode()
    assert '<option value="claude-3-5-haiku">' in page
    ok = member.post(
        f"/c/{conversation.pk}/settings",
        {"model": "claude-3-5-haiku", "system_prompt": "Be brief.", "temperature": "0.3"},
        follow=True,
    )
    assert "Settings saved." in ok.content.decode()
    with in_acme(world):
        stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.model, stored.system_prompt, stored.temperature) == ("claude-3-5-haiku", "Be brief.", 0.3)

    Tenant.objects.filter(pk=world.acme.tenant.pk).update(allowed_models=["gpt-4o-mini"])
    forget_cached_tenants()
    page = member.get(f"/c/{conversation.pk}").content.decode()
    assert '<option value="claude-3-5-haiku"' not in page
    refused = member.post(f"/c/{conversation.pk}/settings", {"model": "claude-3-5-sonnet"}, follow=True)
    assert "not available to your workspace" in refused.content.decode()
    bad = member.post(f"/c/{conversation.pk}/settings", {"temperature": "9"}, follow=True)
    assert "Temperature:" in bad.content.decode()


def test_export_markdown_and_json(member: Browser, make_conversation: Callable[..., Any]) -> None:
    conversation = make_conversation(
        [("user", "What is 2+2?"), ("assistant", "old"), ("assistant", "**4**")],
        title="Sums",
        system_prompt="Be exact.",
    )
    md = member.get(f"/c/{conversation.pk}/export.md")
    assert md["Content-Disposition"] == 'attachment; filename="sums.md"'
    text = md.content.decode()
    assert text.startswith("# Sums") and "> System prompt: Be exact." in text
    assert "What is 2+2?" in text and "**4**" in text and "old" not in text
    exported = json.loads(member.get(f"/c/{conversation.pk}/export.json").content)
    assert exported["title"] == "Sums"
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [
        ("user", "What is 2+2?"),
        ("assistant", "**4**"),
    ]
    assert member.get(f"/c/{conversation.pk}/export.pdf").status_code == 404


def test_search_finds_titles_and_message_text_by_prefix(
    member: Browser, world: World, make_conversation: Callable[..., Any]
) -> None:
    make_conversation(
        [("user", "Tell me about foxes"), ("assistant", "The quick brown fox jumps")], title="Animals"
    )
    make_conversation([("user", "nothing here")], title="Python tips")
    make_conversation([("user", "quick brown secret")], user_id=world.acme.admin.pk, title="Not yours")
    full = member.get("/search?q=quick+bro").content.decode()
    assert "Animals" in full and "Not yours" not in full
    assert "<mark>quick</mark>" in full and "<mark>brown</mark>" in full
    partial = member.get("/search?q=pyth&partial=1").content.decode()
    assert "<mark>Python</mark> tips" in partial and "<html" not in partial
    assert "Nothing matches" in member.get("/search?q=zebra").content.decode()
    assert "too common to search for" in member.get("/search?q=the+and").content.decode()
    # tsquery operators in the query are only text.
    assert member.get("/search?q=%27%29%20%7C%20%21%3A%2A").status_code == 200


def test_search_uses_the_full_text_indexes(db: None, world: World) -> None:
    from django.db import connection

    from chat.models import Message
    from chat.selectors import search_query

    query = search_query("quick")
    with in_acme(world), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        from django.contrib.postgres.search import SearchVector

        plan = (
            Message.objects.annotate(doc=SearchVector("content", config="english"))
            .filter(doc=query)
            .explain()
        )
    assert "chat_message_content_fts" in plan


def test_usage_page_and_meter(member: Browser, world: World, make_conversation: Callable[..., Any]) -> None:
    from billing.models import UsageRecord
    from chat.selectors import monthly_usage
    from chat.templatetags.chat_ui import compact_number
    from tenants.models import Tenant
    from tenants.selectors import forget_cached_tenants

    # Live-server tests of this run may have committed usage of their own: count from there.
    with in_acme(world):
        before = monthly_usage(world.acme.tenant, world.acme.member.pk)
    quota = 2 * (before.tenant_tokens + 5000)
    Tenant.objects.filter(pk=world.acme.tenant.pk).update(monthly_token_quota=quota)
    forget_cached_tenants()
    with in_acme(world):
        UsageRecord.objects.create(
            request_id="ui-usage-1", user_id=world.acme.member.pk, model="gpt-4o-mini",
            provider="fake-openai", prompt_tokens=1500, completion_tokens=1000, cost="0.0123",
        )  # fmt: skip
        UsageRecord.objects.create(
            request_id="ui-usage-2", user_id=world.acme.admin.pk, model="gpt-4o-mini",
            provider="fake-openai", prompt_tokens=2000, completion_tokens=500,
        )  # fmt: skip
        tenant = Tenant.objects.get(pk=world.acme.tenant.pk)
        after = monthly_usage(tenant, world.acme.member.pk)
    assert after.user_tokens == before.user_tokens + 2500
    assert after.tenant_tokens == before.tenant_tokens + 5000
    assert after.percent_used == 50 and after.tokens_left == quota // 2
    html = member.get("/usage").content.decode()
    assert f"{compact_number(after.user_tokens)}</dd>" in html  # the member's own
    assert "Workspace quota used: 50%" in html
    home = member.get("/").content.decode()
    assert "Workspace quota: 50% left" in home and 'value="50"' in home
