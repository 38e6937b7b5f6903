"""Messages as safe HTML: Markdown (markdown-it-py), code highlighted (Pygments), sanitised (nh3).

Everything a model or a user wrote is rendered here, on the server, and nothing else reaches a
page as markup. Three layers, each enough on its own for the common case:

1. markdown-it runs with raw HTML off, so `<script>` in a message is text, not a tag;
2. nh3 (ammonia) then keeps only an allow-list of tags, attributes, classes and URL schemes,
   in case a Markdown extension or a renderer bug ever lets markup through;
3. the pages' Content-Security-Policy forbids inline script (config/security.py).
"""

from __future__ import annotations

import functools
import html

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# Code longer than this is shown plain: highlighting cost grows with it, the reader's benefit not.
MAX_HIGHLIGHT_CHARS = 50_000

_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
_formatter = HtmlFormatter(nowrap=True)

_TAGS = {
    "p", "br", "hr", "strong", "em", "s", "del", "code", "pre", "span", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "code": {"class"},
}
_CLASSES = {"span": _TOKEN_CLASSES}


def _highlight(code: str, lang: str, _attrs: object) -> str:
    """Pygments spans for a fenced block whose language Pygments knows; '' leaves it to
    markdown-it, which escapes it as plain text."""
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""
    try:
        lexer = get_lexer_by_name(lang.split()[0])
    except ClassNotFound:
        return ""
    return str(highlight(code, lexer, _formatter))


def _parser() -> MarkdownIt:
    # "commonmark" + tables and strikethrough, the GitHub-flavoured bits models actually use.
    parser = MarkdownIt("commonmark", {"html": False, "breaks": False, "highlight": _highlight})
    parser.enable(["table", "strikethrough"])
    return parser


_markdown = _parser()


def _code_classes(tag: str, name: str, value: str) -> str | None:
    # markdown-it marks fenced code with `language-<name>`; keep that one class only.
    if tag == "code" and name == "class":
        return value if value.startswith("language-") and value[9:].replace("-", "").isalnum() else None
    return value


def sanitise(markup: str) -> str:
    return str(
        nh3.clean(
            markup,
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            allowed_classes=_CLASSES,
            attribute_filter=_code_classes,
            url_schemes={"http", "https", "mailto"},
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
    )


@functools.lru_cache(maxsize=2048)
def render_markdown(text: str) -> str:
    """An answer as sanitised HTML. Cached by text: a thread is re-rendered after every answer,
    and its old messages do not change."""
    return sanitise(_markdown.render(text))


def render_plain(text: str) -> str:
    """A user's message: shown as typed (escaped; line breaks kept by CSS)."""
    return html.escape(text)
