"""The chat UI's pages (server-rendered; static/js/ upgrades them to streaming over the WebSocket).

Every page is complete without script: the conversation list, the thread rendered as sanitised
HTML, and forms for every action (send, stop-less non-streamed answers, regenerate, edit, rename,
settings, delete, search, export). With script, the same forms are sent over `/ws/{id}` instead
and answers stream token by token; after each answer the page fetches the thread fragment
(`thread_view`), so what the reader sees is always the server's rendering of the stored messages.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from chat import runs
from chat.api import conversation_out, message_out
from chat.callers import request_id_of
from chat.gateway import Caller, answer
from chat.models import Conversation, Message
from chat.rendering import render_markdown, render_plain
from chat.selectors import (
    ThreadEntry,
    conversation_for_user,
    conversations_of,
    monthly_usage,
    query_too_common,
    search_conversations,
    thread_of,
)
from chat.services import conversation_autotitle, conversation_create, conversation_update
from chat.stream_views import (
    again_call,
    conversation_call,
    open_turn,
    parse_again_in,
    parse_message_in,
    prepare_again,
)
from chat.ui_errors import error_texts_for_script, explain_error
from config.errors import ApiError
from config.redis import get_redis
from routing.catalog import catalog_targets, refresh_catalog
from tenants.models import Tenant
from tenants.schema import tenant_db

SIDEBAR_CONVERSATIONS = 100


def _tenant(request: HttpRequest) -> Tenant:
    tenant: Tenant | None = getattr(request, "tenant", None)
    if tenant is None:  # the chat URLs exist only in the tenant URLconf
        raise Http404("No workspace")
    return tenant


def _owned(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    try:
        return conversation_for_user(conversation_id, int(request.user.pk or 0))
    except ApiError as exc:
        raise Http404(exc.message) from exc


def allowed_models(tenant: Tenant) -> list[str]:
    return sorted(name for name in catalog_targets() if tenant.allows_model(name))


# --- rendering the thread --------------------------------------------------------------------


@dataclass
class ShownMessage:
    message: Message
    html: str
    earlier: list[ShownMessage] = field(default_factory=list)
    can_regenerate: bool = False

    @property
    def cached(self) -> bool:
        return self.message.cache_status in ("exact", "semantic")


def _shown(message: Message) -> ShownMessage:
    text = message.content
    html = render_markdown(text) if message.role == "assistant" else render_plain(text)
    # Safe by construction: sanitised by nh3 or escaped (chat/rendering.py).
    return ShownMessage(message, mark_safe(html))


def rendered_thread(conversation: Conversation) -> list[ShownMessage]:
    entries: list[ThreadEntry] = thread_of(conversation)
    shown = []
    for entry in entries:
        item = _shown(entry.message)
        item.earlier = [_shown(m) for m in entry.earlier]
        shown.append(item)
    # The last question can be answered again, from its answer or, when it has none (an
    # answer that never started), from the question itself.
    if shown:
        shown[-1].can_regenerate = True
    return shown


def _thread_html(request: HttpRequest, conversation: Conversation) -> str:
    return render_to_string(
        "chat/_thread.html",
        {"conversation": conversation, "thread": rendered_thread(conversation)},
        request=request,
    )


# --- page context ----------------------------------------------------------------------------


def _shell(request: HttpRequest, current: Conversation | None = None) -> dict[str, Any]:
    """What every signed-in page shows: the conversation list, the usage meter, the models."""
    tenant = _tenant(request)
    user_id = int(request.user.pk or 0)
    return {
        "tenant": tenant,
        "conversations": list(
            conversations_of(user_id).only("id", "title", "updated_at")[:SIDEBAR_CONVERSATIONS]
        ),
        "current": current,
        "usage": monthly_usage(tenant, user_id),
        "models": allowed_models(tenant),
        "error_texts": error_texts_for_script(),
    }


def unfinished_run(tenant: Tenant, conversation: Conversation, user_id: int) -> str | None:
    """The id of an answer still being written in this conversation (to resume on load), or None.

    The conversation's latest run is live while the last event in its buffer is not terminal;
    one XREVRANGE, no waiting. A run that died with its server (no terminal event ever) looks
    live: the page then follows it and says so when nothing arrives. This reads `chat.runs`'
    Redis layout; a public `run_is_live()` there would be the better home.
    """
    client = get_redis()
    try:
        latest = client.get(runs._latest_key(tenant.slug, conversation.id))
        if latest is None:
            return None
        run_id = latest.decode()
        owner = client.get(runs._owner_key(tenant.slug, run_id))
        if owner is None or owner.decode() != f"{user_id}:{conversation.id}":
            return None
        last = client.xrevrange(runs._events_key(tenant.slug, run_id), count=1)
    except redis.RedisError:
        return None  # the page still shows everything stored; only the live answer is missed
    if not last or last[0][1][b"t"].decode() in runs.TERMINAL:
        return None
    return run_id


# --- pages -----------------------------------------------------------------------------------


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """A new chat: the composer; the conversation is created with its first message."""
    return render(request, "chat/home.html", _shell(request))


@login_required
@require_GET
def conversation_page(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    context = _shell(request, conversation) | {
        "conversation": conversation,
        "thread": rendered_thread(conversation),
        "resume_run": unfinished_run(_tenant(request), conversation, int(request.user.pk or 0)),
    }
    return render(request, "chat/conversation.html", context)


@login_required
@require_GET
def thread_view(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """The thread as the server renders it, fetched by the page after each answer."""
    conversation = _owned(request, conversation_id)
    return JsonResponse({"html": _thread_html(request, conversation), "title": conversation.title})


@login_required
@require_GET
def search_view(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:200]
    hits = search_conversations(int(request.user.pk or 0), query) if query else []
    context = {"query": query, "hits": hits, "too_common": not hits and query_too_common(query)}
    if request.GET.get("partial"):
        return render(request, "chat/_search_results.html", context)
    return render(request, "chat/search.html", _shell(request) | context)


@login_required
@require_GET
def usage_view(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/usage.html", _shell(request))


# --- conversation settings -------------------------------------------------------------------


class SettingsForm(forms.Form):
    model = forms.CharField(max_length=100, required=False)
    system_prompt = forms.CharField(max_length=20_000, required=False, strip=False)
    temperature = forms.FloatField(min_value=0.0, max_value=2.0, required=False)


class RenameForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)


def _form_problem(form: forms.Form) -> str:
    field_name, errors = next(iter(form.errors.items()))
    return f"{field_name.replace('_', ' ').capitalize()}: {errors[0]}"


@login_required
@require_POST
def settings_view(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    form = SettingsForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_problem(form))
        return redirect("ui-conversation", conversation.pk)
    try:
        conversation_update(conversation, tenant=_tenant(request), **form.cleaned_data)
    except ApiError as exc:
        messages.error(request, explain_error(exc.code, exc.status_code, exc.error_type))
    else:
        messages.success(request, "Settings saved.")
    return redirect("ui-conversation", conversation.pk)


@login_required
@require_POST
def rename_view(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    form = RenameForm(request.POST)
    if form.is_valid():
        conversation_update(conversation, tenant=_tenant(request), title=form.cleaned_data["title"])
    else:
        messages.error(request, _form_problem(form))
    return redirect("ui-conversation", conversation.pk)


@login_required
@require_POST
def delete_view(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    title = conversation.title or "Untitled conversation"
    conversation.delete()
    messages.info(request, f"Deleted “{title}”.")
    return redirect("ui-home")


# --- export ----------------------------------------------------------------------------------


def export_markdown(conversation: Conversation, thread: list[ShownMessage]) -> str:
    """The conversation as the reader sees it (superseded answers left out), as Markdown."""
    lines = [f"# {conversation.title or 'Untitled conversation'}", ""]
    if conversation.system_prompt:
        lines += ["> System prompt: " + conversation.system_prompt.replace("\n", "\n> "), ""]
    for item in thread:
        message = item.message
        when = message.created_at.strftime("%Y-%m-%d %H:%M UTC")
        who = "You" if message.role == "user" else f"Assistant ({message.model or 'model'})"
        lines += [f"## {who} · {when}", "", message.content, ""]
    return "\n".join(lines)


@login_required
@require_GET
def export_view(request: HttpRequest, conversation_id: uuid.UUID, fmt: str) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    thread = rendered_thread(conversation)
    name = slugify(conversation.title)[:60] or f"conversation-{conversation.pk}"
    if fmt == "json":
        body = conversation_out(conversation) | {"messages": [message_out(i.message) for i in thread]}
        response = HttpResponse(
            json.dumps(body, indent=2, ensure_ascii=False), content_type="application/json; charset=utf-8"
        )
    else:
        response = HttpResponse(
            export_markdown(conversation, thread), content_type="text/markdown; charset=utf-8"
        )
    response["Content-Disposition"] = f'attachment; filename="{name}.{"json" if fmt == "json" else "md"}"'
    return response


# --- answering without script (the page's forms, when no JavaScript runs) --------------------
# With script these forms never reach here: the page sends them over the WebSocket and streams.


async def _signed_in_user_id(request: HttpRequest) -> int | None:
    user = await request.auser()
    return int(user.pk) if user.is_authenticated else None


def _to_login(request: HttpRequest) -> HttpResponse:
    return redirect(f"{reverse('ui-login')}?next={request.path}")


async def _answer_or_explain(request: HttpRequest, caller: Caller, run: Any) -> None:
    try:
        await answer(caller, await run())
    except ApiError as exc:
        _flash_error(request, exc)


def _flash_error(request: HttpRequest, exc: ApiError) -> None:
    # Only queues the text; the messages middleware stores it (sync) when the response leaves.
    messages.error(request, explain_error(exc.code, exc.status_code, exc.error_type))


def _create_conversation(tenant: Tenant, user_id: int, model: str) -> Conversation:
    return conversation_create(tenant=tenant, user_id=user_id, model=model)


@require_POST
async def new_view(request: HttpRequest) -> HttpResponseBase:
    """Creates a conversation; with `content`, also answers it (no script). The page's script
    asks for JSON and sends the first message over the WebSocket itself."""
    user_id = await _signed_in_user_id(request)
    if user_id is None:
        return _to_login(request)
    tenant = _tenant(request)
    model = request.POST.get("model", "")[:100]
    try:
        conversation = await tenant_db(tenant, _create_conversation, tenant, user_id, model)
    except ApiError as exc:
        if "application/json" in request.headers.get("Accept", ""):
            return JsonResponse(exc.body(), status=exc.status_code)
        _flash_error(request, exc)
        return redirect("ui-home")
    url = reverse("ui-conversation", args=[conversation.pk])
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"id": str(conversation.pk), "url": url}, status=201)
    if request.POST.get("content", "").strip():
        return await _send(request, tenant, user_id, conversation.pk)
    return redirect(url)


@require_POST
async def send_view(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponseBase:
    user_id = await _signed_in_user_id(request)
    if user_id is None:
        return _to_login(request)
    return await _send(request, _tenant(request), user_id, conversation_id)


async def _send(
    request: HttpRequest, tenant: Tenant, user_id: int, conversation_id: uuid.UUID
) -> HttpResponse:
    caller = Caller(tenant, request_id_of(request), user_id)

    async def call() -> Any:
        data = parse_message_in({"content": request.POST.get("content", "")})
        turn = await tenant_db(tenant, open_turn, str(conversation_id), user_id, data)
        await refresh_catalog()
        built = conversation_call(tenant, turn.conversation, turn.history, data)
        if not turn.conversation.title:
            await tenant_db(tenant, conversation_autotitle, turn.conversation.id, data.content)
        return built

    await _answer_or_explain(request, caller, call)
    return redirect("ui-conversation", conversation_id)


@require_POST
async def regenerate_view(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponseBase:
    return await _again(request, conversation_id, None)


@require_POST
async def edit_view(request: HttpRequest, conversation_id: uuid.UUID, message_id: int) -> HttpResponseBase:
    return await _again(request, conversation_id, message_id)


async def _again(
    request: HttpRequest, conversation_id: uuid.UUID, message_id: int | None
) -> HttpResponseBase:
    user_id = await _signed_in_user_id(request)
    if user_id is None:
        return _to_login(request)
    tenant = _tenant(request)
    caller = Caller(tenant, request_id_of(request), user_id)

    async def call() -> Any:
        edit = message_id is not None
        data = parse_again_in({"content": request.POST.get("content", "")}, edit=edit)
        change = (message_id, data.content) if message_id is not None else None
        conversation, replay = await tenant_db(tenant, prepare_again, str(conversation_id), user_id, change)
        await refresh_catalog()
        return again_call(tenant, conversation, replay, data)

    await _answer_or_explain(request, caller, call)
    return redirect("ui-conversation", conversation_id)
