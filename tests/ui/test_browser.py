"""The chat UI end to end in a real headless Chromium (Debian's, driven by Playwright; never a
downloaded browser), against the real server (daphne) and the fake model upstream.

Signs in, sends a message and watches it stream, stops it, regenerates, edits, drops and
restores the connection mid-answer, searches, and checks that a script in a message never runs.
`test_screenshots` saves the main screens (light and dark, desktop and phone) under
artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, GatewayServer

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (scripts/browser.sh installs it)"),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# A tenant of the browser tests' own, with its cache off: answers must stream from the model
# every time, and prompts of other tests (cached in acme) must not answer these, nor these theirs.
UI_TENANT = "northwind"
UI_USER = "ada@northwind.test"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
UUID_URL = re.compile(r".*/c/[0-9a-f-]{36}$")


def _words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def ui_schema(gateway: Any, django_db_blocker: Any) -> str:
    """The browser tests' tenant and its user (committed, so the server sees them)."""
    from django_tenants.utils import schema_context

    from tenants.models import Tenant
    from tenants.services import tenant_create, user_create

    with django_db_blocker.unblock():
        tenant = Tenant.objects.filter(slug=UI_TENANT).first() or tenant_create(
            name="Northwind",
            slug=UI_TENANT,
            primary_model="gpt-4o-mini",
            fallback_models=["claude-3-5-haiku"],
            cache_enabled=False,
        )
        with schema_context(tenant.schema_name):
            from django.contrib.auth import get_user_model

            if not get_user_model().objects.filter(username=UI_USER).exists():
                user_create(email=UI_USER, password=PASSWORD)
    return str(tenant.schema_name)


@pytest.fixture(scope="module")
def ui_user(ui_schema: str) -> str:
    return UI_USER


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    import os

    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    # Playwright's sync API keeps an event loop running in this thread, which makes Django
    # refuse every ORM call of the test's own fixtures (they are plain sync calls all the
    # same: Playwright's loop never runs them).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
            # Connections opened while Playwright's loop ran belong to that context: close them
            # here, or the test database cannot be dropped at the end of the run.
            from django.db import connections

            connections.close_all()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def site(gateway_server: GatewayServer) -> str:
    # Chromium resolves every *.localhost name to the loopback address.
    return f"http://{UI_TENANT}.localhost:{gateway_server.port}"


def _new_page(chromium: Any, errors: list[str], **options: Any) -> Any:
    context = chromium.new_context(**({"viewport": DESKTOP} | options))
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}")
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    return page


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    errors: list[str] = []
    page = _new_page(chromium, errors)
    yield page
    page.context.close()
    assert errors == [], errors  # no script error, no CSP violation


def _scripted(page: Any) -> None:
    """Waits for the page's modules to have run (before that, Enter only adds a line)."""
    page.wait_for_selector("html[data-js=ready]", state="attached")


def _sign_in(page: Any, site: str, email: str = UI_USER) -> None:
    from playwright.sync_api import expect

    page.goto(site + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(site + "/")
    _scripted(page)


def _composer(page: Any) -> Any:
    return page.get_by_label("Message", exact=True)


def _start_chat(page: Any, text: str) -> None:
    from playwright.sync_api import expect

    _composer(page).fill(text)
    _composer(page).press("Enter")
    expect(page).to_have_url(UUID_URL)
    _scripted(page)


def _answers(page: Any) -> Any:
    return page.locator("#thread > li.message.assistant")


def _wait_for_answer_done(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#thread li.pending")).to_have_count(0)
    expect(page.locator("#conversation")).to_have_attribute("aria-busy", "false")


def _slow_model(knobs: Any, **extra: Any) -> None:
    knobs.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "tokens_per_second": 12} | extra)


# --- signing in --------------------------------------------------------------------------------


def test_sign_in_wrong_password_then_workspace_chooser(
    page: Any, site: str, gateway_server: GatewayServer, ui_user: str
) -> None:
    from playwright.sync_api import expect

    page.goto(site + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.get_by_label("Email").fill(ui_user)
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("email and password do not match")
    expect(page.get_by_label("Email")).to_have_value(ui_user)

    # The bare host asks for the workspace, then hands over to the workspace's own host.
    page.goto(f"http://127.0.0.1:{gateway_server.port}/")
    page.get_by_label("Workspace").fill("no-such-team")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("There is no workspace called")
    page.get_by_label("Workspace").fill(UI_TENANT)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(site + "/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Northwind")


# --- chatting ----------------------------------------------------------------------------------


def test_message_streams_then_stop_regenerate_and_edit(
    page: Any, site: str, ui_user: str, knobs: Any
) -> None:
    from playwright.sync_api import expect

    _slow_model(knobs, reply_tokens=80)
    _sign_in(page, site)
    _start_chat(page, "Tell me a long story")
    expect(page.locator("#thread li.message.user").first).to_have_text(re.compile("Tell me a long story"))

    # Token by token: the answer grows while it is still being written.
    streaming = page.locator("#thread li.pending .streaming")
    expect(streaming).to_contain_text("Echo: Tell me a long story")
    page.wait_for_function(
        "() => (document.querySelector('#thread li.pending .streaming')?.textContent || '')"
        ".trim().split(/\\s+/).length >= 8"
    )
    expect(page.locator("#stop-button")).to_be_visible()
    expect(page.locator("#conversation-title")).to_have_text("New conversation")
    _shoot(page, "streaming-light-desktop")

    # Esc stops it; the partial answer is kept and marked.
    _composer(page).press("Escape")
    _wait_for_answer_done(page)
    stopped = _answers(page).last
    expect(stopped.locator(".meta")).to_contain_text("stopped")
    assert 8 <= _words(stopped.locator(".content").inner_text()) < 80
    expect(page.locator("#conversation-title")).to_have_text("Tell me a long story")
    expect(page.get_by_role("link", name="Tell me a long story")).to_have_attribute("aria-current", "page")

    # Regenerate: a new answer; the stopped one is kept, folded away.
    knobs.knobs.update(
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "tokens_per_second": None,
            "reply_tokens": None,
            "reply_text": "A **fresh** answer",
        }
    )
    page.get_by_role("button", name="Regenerate").click()
    _wait_for_answer_done(page)
    expect(_answers(page)).to_have_count(1)
    expect(_answers(page).last.locator(".content strong")).to_have_text("fresh")
    expect(page.get_by_text("1 earlier answer")).to_be_visible()

    # Edit the question: everything after it is replaced by a new answer.
    page.locator("#thread details.edit summary").first.click()
    page.get_by_label("Edit your message").fill("Tell me a short joke")
    page.get_by_role("button", name="Save and resubmit").click()
    _wait_for_answer_done(page)
    expect(page.locator("#thread li.message.user .content")).to_have_text(["Tell me a short joke"])
    expect(_answers(page)).to_have_count(1)
    expect(page.get_by_text("earlier answer")).to_have_count(0)
    expect(_answers(page).last.locator(".meta .model")).to_have_text("gpt-4o-mini")

    # Shift+Enter adds a line; Enter sends.
    box = _composer(page)
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    box.press("Enter")
    _wait_for_answer_done(page)
    expect(page.locator("#thread li.message.user .content").last).to_have_text("first line\nsecond line")
    expect(box).to_have_value("")


def test_connection_drops_mid_answer_and_the_answer_resumes(
    page: Any, site: str, ui_user: str, knobs: Any
) -> None:
    """The socket is cut while the answer streams and the browser goes offline; the page says
    so, reconnects by itself once online, resumes from its last event, and the whole answer
    arrives exactly once."""
    from playwright.sync_api import expect

    state: dict[str, Any] = {"blocked": False, "routes": []}

    def route(ws: Any) -> None:
        if state["blocked"]:
            ws.close(code=1011)
            return
        ws.connect_to_server()
        state["routes"].append(ws)

    page.route_web_socket(re.compile(r"/ws/"), route)
    _slow_model(knobs, reply_tokens=40, tokens_per_second=8)
    _sign_in(page, site)
    _start_chat(page, "Count slowly")
    page.wait_for_function(
        "() => (document.querySelector('#thread li.pending .streaming')?.textContent || '')"
        ".trim().split(/\\s+/).length >= 4"
    )

    # Drop: the network goes away and the socket with it.
    state["blocked"] = True
    page.context.set_offline(True)
    state["routes"][-1].close(code=1012)
    expect(page.locator("#connection")).to_contain_text("offline")
    expect(page.locator("#thread li.pending .answer-state")).to_contain_text("Connection lost")
    _shoot(page, "offline-mid-answer-light-desktop")

    # Restore: the page reconnects on its own and resumes the answer.
    state["blocked"] = False
    page.context.set_offline(False)
    _wait_for_answer_done(page)
    assert len(state["routes"]) >= 2
    text = _answers(page).last.locator(".content").inner_text()
    assert _words(text) == 40, text  # every token once: nothing lost, nothing repeated
    assert text.startswith("Echo: Count slowly")
    expect(page.locator("#connection")).to_contain_text("Reconnected")


def test_reloading_mid_answer_follows_the_answer_in_progress(
    page: Any, site: str, ui_user: str, knobs: Any
) -> None:
    from playwright.sync_api import expect

    _slow_model(knobs, reply_tokens=30, tokens_per_second=8)
    _sign_in(page, site)
    _start_chat(page, "Reload me")
    page.wait_for_function(
        "() => (document.querySelector('#thread li.pending .streaming')?.textContent || '')"
        ".trim().split(/\\s+/).length >= 3"
    )
    page.reload()
    _scripted(page)
    # The server saw the answer still running and the page picked it up from its start.
    expect(page.locator("#conversation")).to_have_attribute("data-resume-run", re.compile("^[0-9a-f]{32}$"))
    expect(page.locator("#thread li.pending .streaming")).to_contain_text("Echo: Reload me")
    _wait_for_answer_done(page)
    expect(page.locator("#thread li.message.user .content")).to_have_text(["Reload me"])
    assert _words(_answers(page).last.locator(".content").inner_text()) == 30


def test_reconnects_with_backoff_when_the_server_is_unreachable(
    page: Any, site: str, ui_user: str, knobs: Any
) -> None:
    """Without an offline signal (a server restart, a dead link), retries back off and say when."""
    from playwright.sync_api import expect

    state: dict[str, Any] = {"refused": 0, "blocked": False, "routes": []}

    def route(ws: Any) -> None:
        if state["blocked"] and state["refused"] < 2:
            state["refused"] += 1
            ws.close(code=1011)
            return
        ws.connect_to_server()
        state["routes"].append(ws)

    page.route_web_socket(re.compile(r"/ws/"), route)
    _slow_model(knobs, reply_tokens=30, tokens_per_second=10)
    _sign_in(page, site)
    _start_chat(page, "Keep going")
    page.wait_for_function("() => !!document.querySelector('#thread li.pending .streaming')?.textContent")
    state["blocked"] = True
    state["routes"][-1].close(code=1012)
    expect(page.locator("#connection")).to_contain_text(re.compile(r"retrying in \d+ s|Reconnecting"))
    _wait_for_answer_done(page)
    assert state["refused"] == 2
    assert _words(_answers(page).last.locator(".content").inner_text()) == 30


@pytest.fixture(scope="module")
def retired_model_conversation(ui_schema: str, django_db_blocker: Any) -> str:
    """A conversation whose model has left the catalog (committed, for the server to see)."""
    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    from chat.models import Conversation

    with django_db_blocker.unblock(), schema_context(ui_schema):
        user = get_user_model().objects.get(username=UI_USER)
        return str(Conversation.objects.create(user=user, title="Old model", model="retired-model").pk)


def test_errors_are_explained_and_the_message_is_kept(
    page: Any, site: str, ui_user: str, retired_model_conversation: str
) -> None:
    """A refusal before the answer starts: plain words, what to do next, the text back in the box."""
    from playwright.sync_api import expect

    _sign_in(page, site)
    page.goto(f"{site}/c/{retired_model_conversation}")
    _scripted(page)
    _composer(page).fill("Are you still there?")
    _composer(page).press("Enter")
    alert = page.locator("#thread").get_by_role("alert")
    expect(alert).to_contain_text("This conversation's model no longer exists.")
    expect(alert).to_contain_text("Pick another model in the conversation settings.")
    expect(_composer(page)).to_have_value("Are you still there?")
    expect(page.locator("#thread li.message.user")).to_have_count(0)
    expect(page.locator("#conversation")).to_have_attribute("aria-busy", "false")
    _shoot(page, "error-explained-light-desktop")


def test_a_script_in_a_message_never_runs(page: Any, site: str, ui_user: str, knobs: Any) -> None:
    from playwright.sync_api import expect

    attack = '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2"> **bold**'
    _sign_in(page, site)
    _start_chat(page, attack)
    _wait_for_answer_done(page)
    # The model echoes it back: neither the question nor the answer runs anything.
    expect(page.locator("#thread li.message.user .content")).to_have_text(attack)
    expect(_answers(page).last.locator(".content")).to_contain_text("<script>window.pwned = 1</script>")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#thread script, #thread img").count() == 0
    page.reload()  # the server-rendered page, too
    _scripted(page)
    expect(page.locator("#thread li.message.user .content")).to_have_text(attack)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#thread script, #thread img").count() == 0


def test_search_titles_and_messages(page: Any, site: str, ui_user: str, showcase: Any) -> None:
    from playwright.sync_api import expect

    _sign_in(page, site)
    page.get_by_label("Search titles and messages").fill("quick bro")
    results = page.locator("#search-results")
    expect(results).to_be_visible()
    expect(results.locator("mark").first).to_have_text(re.compile("quick", re.I))
    expect(results.get_by_role("link")).to_have_count(1)
    results.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}#message-\d+$"))
    expect(page.locator("#conversation-title")).to_have_text("Foxes and dogs")
    # Without script, the same search is a page of its own.
    page.goto(site + "/search?q=rust+ownership")
    expect(page.get_by_role("main").get_by_role("link")).to_have_count(1)


def test_code_blocks_have_a_copy_button(page: Any, site: str, ui_user: str, showcase: Any) -> None:
    from playwright.sync_api import expect

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _sign_in(page, site)
    page.goto(f"{site}/c/{showcase['markdown']}")
    _scripted(page)
    block = page.locator("#thread pre").first
    expect(block.locator(".k").first).to_have_text("def")  # highlighted on the server
    block.get_by_role("button", name="Copy python code").click()
    expect(block.get_by_role("button")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").startswith("def fizzbuzz(n: int)")


def test_keyboard_and_screen_reader_basics(page: Any, site: str, ui_user: str, showcase: Any) -> None:
    from playwright.sync_api import expect

    _sign_in(page, site)
    page.goto(site + "/usage")  # a page that focuses nothing by itself
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to main content")
    page.goto(f"{site}/c/{showcase['markdown']}")
    _scripted(page)
    expect(_composer(page)).to_be_focused()  # a conversation opens ready to type
    for label in ("Message", "Search titles and messages"):
        expect(page.get_by_label(label, exact=True)).to_have_count(1)
    expect(page.get_by_role("navigation", name="Your conversations")).to_be_visible()
    expect(page.get_by_role("region", name="Messages")).to_be_visible()
    expect(page.get_by_role("status").first).to_be_attached()
    # Settings open from the keyboard and close with Esc.
    page.get_by_text("Settings", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("System prompt")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_label("System prompt")).to_be_hidden()


CONTRAST_JS = """
(selectors) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  return selectors.map((selector) => {
    const el = document.querySelector(selector);
    if (!el) return [selector, null];
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
    return [selector, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  });
}
"""
CONTRAST_CHECKED = [
    "body",
    ".muted",
    ".message .meta",
    ".badge.cache",
    ".message.user .content",
    ".conversation-list a",
    ".conversation-list a[aria-current=page]",
    ".usage h2 a",
    "button.primary",
    ".tool summary",
    ".actions button.ghost",
    ".edit button.primary",
    ".markdown pre .c1",
    ".markdown pre .k",
    ".markdown pre .s2",
    ".hint",
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_meets_wcag_aa(
    chromium: Any, site: str, ui_user: str, showcase: Any, scheme: str
) -> None:
    """Normal text at least 4.5:1 against what is behind it, in both colour schemes."""
    errors: list[str] = []
    page = _new_page(chromium, errors, color_scheme=scheme)
    _sign_in(page, site)
    page.goto(f"{site}/c/{showcase['markdown']}")
    _scripted(page)
    ratios = dict(page.evaluate(CONTRAST_JS, CONTRAST_CHECKED))
    page.context.close()
    assert None not in ratios.values(), ratios
    low = {selector: round(ratio, 2) for selector, ratio in ratios.items() if ratio < 4.5}
    assert low == {}, low


# --- screenshots -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def showcase(ui_schema: str, django_db_blocker: Any) -> dict[str, str]:
    """Stored conversations of the browser user (committed): one of each kind of content."""
    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    from chat.models import Conversation, Message

    with django_db_blocker.unblock(), schema_context(ui_schema):
        user = get_user_model().objects.get(username=UI_USER)
        Conversation.objects.filter(user=user).delete()
        ids = {}
        for key, title, turns in SHOWCASE:
            conversation = Conversation.objects.create(user=user, title=title, model="gpt-4o-mini")
            for role, content, extra in turns:
                fields = {"model": "gpt-4o-mini", "provider": "fake-openai", "completion_tokens": 120} | extra
                Message.objects.create(
                    conversation=conversation,
                    role=role,
                    content=content,
                    **(fields if role == "assistant" else {}),
                )
            ids[key] = str(conversation.pk)
    return ids


SHOWCASE: list[tuple[str, str, list[tuple[str, str, dict[str, Any]]]]] = [
    ("rust", "Rust ownership in one page", [("user", "Explain rust ownership briefly", {}), ("assistant", "Each value has **one owner**; moving it transfers ownership, borrowing lends it.", {})]),
    ("foxes", "Foxes and dogs", [("user", "Write a pangram", {}), ("assistant", "The quick brown fox jumps over the lazy dog.", {"cache_status": "exact"})]),
    (
        "markdown",
        "FizzBuzz in Python",
        [
            ("user", "Write FizzBuzz in Python, with type hints, and explain it.", {}),
            ("assistant", "Here is a first version.", {"finish_reason": "stopped", "status": "partial"}),
            (
                "assistant",
                "Here is a **typed** FizzBuzz:\n\n```python\ndef fizzbuzz(n: int) -> list[str]:\n"
                '    """FizzBuzz from 1 to n."""\n    out = []\n    for i in range(1, n + 1):\n'
                '        word = ("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "")\n'
                "        out.append(word or str(i))  # 15 -> FizzBuzz\n    return out\n```\n\n"
                "How it works:\n\n1. `i % 3 == 0` adds *Fizz*, `i % 5 == 0` adds *Buzz*.\n"
                "2. An empty word falls back to the number.\n\n| n | output |\n|---|---|\n| 3 | Fizz |\n"
                "| 5 | Buzz |\n| 15 | FizzBuzz |\n\n> Tip: `fizzbuzz(15)[-1] == \"FizzBuzz\"`.",
                {},
            ),
            ("user", "Can it print <script>alert('hi')</script> safely?", {}),
            ("assistant", "Yes: text is escaped, so `<script>` shows as text and never runs.", {"cache_status": "semantic"}),
        ],
    ),
]  # fmt: skip


def _shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_screenshots(
    chromium: Any, site: str, ui_user: str, showcase: dict[str, str], scheme: str, size: str
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    viewport = DESKTOP if size == "desktop" else PHONE
    page = _new_page(
        chromium, errors, viewport=viewport, color_scheme=scheme, is_mobile=size == "phone",
        has_touch=size == "phone", device_scale_factor=2 if size == "phone" else 1,
    )  # fmt: skip
    suffix = f"{scheme}-{size}"
    page.goto(site + "/login")
    _shoot(page, f"login-{suffix}")
    _sign_in(page, site)
    _shoot(page, f"new-chat-{suffix}")
    page.goto(f"{site}/c/{showcase['markdown']}")
    _scripted(page)
    expect(page.locator("#thread pre .copy-button")).to_have_count(1)
    _shoot(page, f"conversation-{suffix}")  # opens at the latest message
    page.locator("#thread details.earlier summary").first.click()
    _shoot(page, f"conversation-earlier-answer-{suffix}")
    page.get_by_text("Settings", exact=True).click()
    _shoot(page, f"conversation-settings-{suffix}")
    page.goto(f"{site}/c/{showcase['markdown']}#sidebar" if size == "phone" else f"{site}/search?q=fizz")
    _shoot(page, f"{'conversation-list' if size == 'phone' else 'search'}-{suffix}")
    page.context.close()
    assert errors == [], errors
