"""Markdown to safe HTML (chat/rendering.py)."""

from __future__ import annotations

import re

import pytest

from chat.rendering import render_markdown, render_plain, sanitise


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "<a href='javascript:alert(1)'>x</a>",
        "<iframe src=//evil.test></iframe>",
        "```html\n<script>alert(1)</script>\n```",
        "<svg onload=alert(1)>",
        "<style>body{display:none}</style>",
    ],
)
def test_no_markup_from_the_text_survives(text: str) -> None:
    html = render_markdown(text)
    for needle in ("<script", "<img", "<iframe", "<svg", "<style", 'href="javascript', 'href="data'):
        assert needle not in html, (needle, html)
    assert not re.search(r"<[^>]*\son\w+=", html), html  # no event handler in any tag


def test_markdown_features_models_use() -> None:
    html = render_markdown(
        "## Steps\n\n1. **one**\n2. `two`\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n~~old~~ [docs](https://example.com)"
    )
    assert "<h2>Steps</h2>" in html and "<strong>one</strong>" in html and "<code>two</code>" in html
    assert "<table>" in html and "<td>2</td>" in html and "<s>old</s>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">docs</a>' in html


def test_code_is_highlighted_with_known_token_classes_only() -> None:
    html = render_markdown("```python\nimport os  # c\n```\n\n```no-such-language\nx = 1\n```")
    assert '<code class="language-python"><span class="kn">import</span>' in html
    assert '<span class="c1"># c</span>' in html
    assert '<code class="language-no-such-language">x = 1' in html


def test_sanitiser_drops_foreign_classes_and_attributes() -> None:
    html = sanitise('<span class="k evil" style="x" onclick="y">a</span><code class="language-py x">b</code>')
    assert html == '<span class="k">a</span><code>b</code>'


def test_user_text_is_escaped_as_typed() -> None:
    assert render_plain("<b>hi</b> & **x**") == "&lt;b&gt;hi&lt;/b&gt; &amp; **x**"
