"""Near-miss guards, request normalisation and cache scope: pure functions, no database."""

from __future__ import annotations

from typing import Any

import pytest

from routing.cache.guards import analyse, near_miss_reason, question_kind
from routing.cache.keys import bypass_reason, cache_keys, normalise_text
from routing.types import ChatMessage, ChatRequest, ContentPart, ResponseFormat, ToolCall, ToolSpec
from tenants.models import Tenant

NEAR_MISSES = [
    # (cached, asked, the guard that must refuse)
    ("How do I convert km to miles?", "How do I convert miles to km?", "direction"),
    ("Flights from Paris to London", "Flights from London to Paris", "direction"),
    ("Is a whale bigger than an elephant?", "Is an elephant bigger than a whale?", "direction"),
    ("What is 15% of 200?", "What is 20% of 200?", "number"),
    ("Give me three ideas for a birthday party", "Give me five ideas for a birthday party", "number"),
    ("What happened in 1989 in Germany?", "What happened in 1991 in Germany?", "number"),
    ("Why is the sky blue?", "Why isn't the sky blue?", "negation"),
    ("Can I eat eggs while pregnant?", "Can I not eat eggs while pregnant?", "negation"),
    ("How do I reverse a list in Python?", "How do I reverse a list in Java?", "language"),
    ("Translate 'good morning' into French", "Translate 'good morning' into German", "language"),
    ("What is the capital of France?", "What is the capital of Germany?", "name"),
    ("Who is the CEO of Microsoft?", "Who is the CEO of Apple?", "name"),
    ("What are the pros of remote work?", "What are the cons of remote work?", "opposite"),
    ("What is the largest planet?", "What is the smallest planet?", "opposite"),
    ("When was the Eiffel Tower built?", "Why was the Eiffel Tower built?", "question_kind"),
    ("Who invented the telephone?", "Where was the telephone invented?", "question_kind"),
    (
        "His father emigrated to Missouri in 1868 but returned before the family could go to America .",
        "His father emigrated to America in 1868 but returned before the family could go to Missouri .",
        "swap",
    ),
]

PARAPHRASES = [
    ("How do I convert km to miles?", "How can I convert km to miles?"),
    ("What is the capital of France?", "what's the capital of france"),
    ("Which should I learn first, Python or Java?", "Python or Java, which one to learn first?"),
    ("Is there any way to hack a facebook account?", "How can I hack a Facebook account?"),
    ("What is a zero sum game?", "What is a zero-sum game?"),
    ("What do you think of Trump winning?", "What do you think of Donald Trump winning?"),
    ("Why Do Olympians Bite Their Medals?", "Why do olympians bite their medals?"),
    ("How do I learn Python and Java?", "How do I learn Java and Python?"),
    ("Give me two tips for sleeping better", "Give me 2 tips for sleeping better"),
    ("Can one tell who viewed my Instagram videos?", "How can I see who viewed my Instagram videos?"),
]


@pytest.mark.parametrize(("cached", "asked", "reason"), NEAR_MISSES)
def test_near_misses_are_refused_for_the_right_reason(cached: str, asked: str, reason: str) -> None:
    assert near_miss_reason(analyse(asked), analyse(cached)) == reason
    assert near_miss_reason(analyse(cached), analyse(asked)) != ""  # and in the other direction


@pytest.mark.parametrize(("cached", "asked"), PARAPHRASES)
def test_paraphrases_pass_the_guards(cached: str, asked: str) -> None:
    assert near_miss_reason(analyse(asked), analyse(cached)) == ""


def test_question_kinds() -> None:
    assert question_kind(analyse("Why is the sky blue?")) == "why"
    assert question_kind(analyse("How many moons does Mars have?")) == "how-much"
    assert question_kind(analyse("How can I learn to swim?")) == "open"
    assert question_kind(analyse("Is Rust memory safe?")) == "yes-no"
    assert question_kind(analyse("Rust memory safety")) == ""
    # A wh-word in a clause of a yes-no question does not make it a who / when question.
    assert question_kind(analyse("Is it okay to marry a man who is 12 years older?")) == "yes-no"
    assert question_kind(analyse("Can one tell who viewed my videos?")) == "yes-no"
    assert question_kind(analyse("Linux: when was it first released?")) == "when"


def test_normalisation_folds_case_space_and_trailing_punctuation_but_not_code() -> None:
    assert normalise_text("  What IS   the capital of France?? ") == "what is the capital of france"
    full_width = "\uff37\uff48\uff41\uff54 is this\uff1f"  # "What is this?" in full-width forms
    assert normalise_text(full_width) == "what is this"
    assert normalise_text("Rename `Foo` to `foo`") != normalise_text("Rename `foo` to `foo`")


def _tenant(**fields: object) -> Tenant:
    values: dict[str, object] = {
        "slug": "acme",
        "schema_name": "t_acme",
        "cache_enabled": True,
        "cache_ttl_seconds": 3600,
        "cache_max_temperature": 0.7,
        "semantic_cache_threshold": 0.93,
    }
    values.update(fields)
    return Tenant(**values)


def _request(*turns: tuple[str, str], **kwargs: Any) -> ChatRequest:
    messages = [ChatMessage(role=r, content=c) for r, c in turns]  # type: ignore[arg-type]
    return ChatRequest(model="gpt-4o-mini", messages=messages, **kwargs)


def test_scope_separates_tenants_families_system_prompts_context_and_sampling() -> None:
    acme, outsider = _tenant(), _tenant(slug="outsider", schema_name="t_outsider")
    base = _request(("user", "and in Germany?"))
    scope = cache_keys(acme, base, "gpt-4o").scope
    assert (
        cache_keys(acme, _request(("user", "AND in germany")), "gpt-4o").exact
        == cache_keys(acme, base, "gpt-4o").exact
    )
    assert cache_keys(acme, _request(("user", "something else")), "gpt-4o").scope == scope
    assert cache_keys(outsider, base, "gpt-4o").scope != scope
    assert cache_keys(acme, base, "claude").scope != scope
    assert (
        cache_keys(acme, _request(("system", "Be terse."), ("user", "and in Germany?")), "gpt-4o").scope
        != scope
    )
    in_context = _request(
        ("user", "What is the VAT rate in France?"), ("assistant", "20 percent."), ("user", "and in Germany?")
    )
    assert cache_keys(acme, in_context, "gpt-4o").scope != scope
    assert cache_keys(acme, _request(("user", "and in Germany?"), temperature=0.2), "gpt-4o").scope != scope
    assert cache_keys(acme, _request(("user", "and in Germany?"), top_p=0.5), "gpt-4o").scope != scope
    # max_tokens is not part of the scope (lookups check that the answer fits instead).
    assert cache_keys(acme, _request(("user", "and in Germany?"), max_tokens=50), "gpt-4o").scope == scope


def test_tools_images_and_schemas_are_exact_only() -> None:
    acme = _tenant()
    tools = _request(("user", "weather?"), tools=[ToolSpec(name="get_weather")])
    assert cache_keys(acme, tools, "m").semantic_block == "tools"
    schema = _request(
        ("user", "list"), response_format=ResponseFormat(type="json_schema", schema={"type": "object"})
    )
    assert cache_keys(acme, schema, "m").semantic_block == "response_format"
    image = ChatRequest(
        model="m",
        messages=[ChatMessage(role="user", content=[ContentPart(type="text", text="what is this?"),
                                                     ContentPart(type="image", image_url="data:image/png;base64,AA")])],
    )  # fmt: skip
    assert cache_keys(acme, image, "m").semantic_block == "images"
    other_image = ChatRequest(
        model="m",
        messages=[ChatMessage(role="user", content=[ContentPart(type="text", text="what is this?"),
                                                     ContentPart(type="image", image_url="data:image/png;base64,BB")])],
    )  # fmt: skip
    assert cache_keys(acme, image, "m").exact != cache_keys(acme, other_image, "m").exact
    assert cache_keys(acme, _request(("user", "hello")), "m").semantic_block == ""


@pytest.mark.parametrize(
    ("tenant_fields", "request_kwargs", "use_cache", "reason"),
    [
        ({}, {}, False, "use_cache_false"),
        ({"cache_enabled": False}, {}, True, "disabled"),
        ({"cache_ttl_seconds": 0}, {}, True, "ttl_zero"),
        ({}, {"temperature": 0.9}, True, "temperature"),
        ({}, {"n": 2}, True, "several_choices"),
        ({}, {"logprobs": True}, True, "logprobs"),
        ({}, {}, True, ""),
        ({}, {"temperature": 0.7}, True, ""),
    ],
)
def test_bypass_reasons(
    tenant_fields: dict[str, object], request_kwargs: dict[str, object], use_cache: bool, reason: str
) -> None:
    request = _request(("user", "hello"), **request_kwargs)
    assert bypass_reason(_tenant(**tenant_fields), request, use_cache) == reason


def test_tool_turns_bypass() -> None:
    request = ChatRequest(
        model="m",
        messages=[
            ChatMessage(role="user", content="weather in Paris?"),
            ChatMessage(role="assistant", tool_calls=[ToolCall(id="1", name="get_weather", arguments="{}")]),
            ChatMessage(role="tool", content="12C", tool_call_id="1"),
        ],
    )
    assert bypass_reason(_tenant(), request, True) == "not_a_user_turn"
    request.messages.append(ChatMessage(role="user", content="and tomorrow?"))
    assert bypass_reason(_tenant(), request, True) == "tool_calls"


def test_a_hit_streams_as_text_deltas_then_stop() -> None:
    from routing.cache.service import CacheHit, hit_stream_events
    from routing.types import Usage

    text = "The capital of France is Paris, which is also its largest city by far. " * 3
    events = hit_stream_events(CacheHit(text, "semantic", 0.97, Usage(10, 30), "gpt-4o-mini"), chunk_chars=20)
    assert "".join(e.text for e in events if e.kind == "text") == text
    assert all(len(e.text) <= 20 for e in events if e.kind == "text")
    assert events[-1].kind == "finish" and events[-1].finish_reason == "stop"


def test_comparisons_keep_their_direction_but_versus_is_symmetric() -> None:
    assert (
        near_miss_reason(
            analyse("How is Samsung better than Apple?"), analyse("How is Apple better than Samsung?")
        )
        == "direction"
    )
    assert (
        near_miss_reason(analyse("Is Python faster than Java?"), analyse("Is Java faster than Python?"))
        == "direction"
    )
    assert (
        near_miss_reason(
            analyse("Messi vs Ronaldo: who is better?"), analyse("Ronaldo vs Messi: who is better?")
        )
        == ""
    )


def test_neighbouring_words_in_the_other_order_are_a_different_question() -> None:
    asked, cached = (
        analyse("What percentage of Muslims are terrorists?"),
        analyse("What percentage of terrorists are Muslim?"),
    )
    assert near_miss_reason(asked, cached) == "swap"
