"""Titles, regenerate and edit in chat.services; what the model sees (chat.selectors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chat.models import Conversation, MessageStatus
from chat.selectors import history_of, thread_of
from chat.services import (
    conversation_autotitle,
    conversation_prepare_edit,
    conversation_prepare_regenerate,
    title_from_text,
)
from config.errors import ApiError
from tests.conftest import World
from tests.ui.conftest import in_acme


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("How do I sort a list in Python?", "How do I sort a list in Python?"),
        ("\n\n  # Heading   with   spaces\nsecond line", "Heading with spaces"),
        (
            "Please explain the difference between processes and threads in operating systems in detail",
            "Please explain the difference between processes and…",
        ),
        ("`code`", "code"),
        ("   \n ", ""),
    ],
)
def test_title_from_text(text: str, title: str) -> None:
    assert title_from_text(text) == title
    assert len(title_from_text(text)) <= 60


def test_autotitle_only_titles_untitled(
    db: None, world: World, make_conversation: Callable[..., Any]
) -> None:
    untitled = make_conversation()
    titled = make_conversation(title="Mine")
    with in_acme(world):
        assert conversation_autotitle(untitled.pk, "What is a monad?") == "What is a monad?"
        assert conversation_autotitle(untitled.pk, "Second question") is None
        assert conversation_autotitle(titled.pk, "Anything") is None
        assert Conversation.objects.get(pk=titled.pk).title == "Mine"


def test_regenerate_drops_the_current_answer_from_the_context(
    db: None, world: World, make_conversation: Callable[..., Any]
) -> None:
    conversation = make_conversation(
        [
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2 old"),
            ("assistant", "a2 new"),
        ]
    )
    with in_acme(world):
        assert [m.content for m in history_of(conversation)] == ["q1", "a1", "q2", "a2 new"]
        thread = thread_of(conversation)
        assert [e.message.content for e in thread] == ["q1", "a1", "q2", "a2 new"]
        assert [m.content for m in thread[-1].earlier] == ["a2 old"]
        replay = conversation_prepare_regenerate(conversation)
        assert replay.question.content == "q2"
        assert [m.content for m in replay.history] == ["q1", "a1"]
        # Nothing was deleted.
        assert conversation.messages.count() == 5


def test_regenerate_after_a_failed_answer(
    db: None, world: World, make_conversation: Callable[..., Any]
) -> None:
    conversation = make_conversation([("user", "q1"), ("assistant", "")])
    with in_acme(world):
        conversation.messages.filter(role="assistant").update(status=MessageStatus.ERROR)
        assert [m.content for m in history_of(conversation)] == ["q1"]
        assert conversation_prepare_regenerate(conversation).question.content == "q1"


def test_regenerate_needs_a_question(db: None, world: World, make_conversation: Callable[..., Any]) -> None:
    conversation = make_conversation()
    with in_acme(world), pytest.raises(ApiError) as refused:
        conversation_prepare_regenerate(conversation)
    assert refused.value.status_code == 409 and refused.value.code == "nothing_to_regenerate"


def test_edit_replaces_the_question_and_truncates_after_it(
    db: None, world: World, make_conversation: Callable[..., Any]
) -> None:
    conversation = make_conversation(
        [
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
            ("user", "q3"),
            ("assistant", "a3"),
        ]
    )
    with in_acme(world):
        q2 = conversation.messages.get(content="q2")
        replay = conversation_prepare_edit(conversation, q2.pk, "q2 edited")
        assert [m.content for m in conversation.messages.all()] == ["q1", "a1", "q2 edited"]
        assert replay.question.pk == q2.pk and replay.question.content == "q2 edited"
        assert [m.content for m in replay.history] == ["q1", "a1"]


def test_edit_only_questions_of_this_conversation(
    db: None, world: World, make_conversation: Callable[..., Any]
) -> None:
    mine = make_conversation([("user", "q1"), ("assistant", "a1")])
    other = make_conversation([("user", "other")])
    with in_acme(world):
        answer = mine.messages.get(role="assistant")
        foreign = other.messages.get()
        for message_id in (answer.pk, foreign.pk, 10**9):
            with pytest.raises(ApiError) as refused:
                conversation_prepare_edit(mine, message_id, "x")
            assert refused.value.status_code == 404
        assert [m.content for m in mine.messages.all()] == ["q1", "a1"]
