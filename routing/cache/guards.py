"""Near-miss guards: is a cached answer, found by embedding similarity, an answer to *this* query?

A sentence embedding averages words, so "km to miles" and "miles to km" embed at cosine 0.997,
and a changed number, name, negation or language moves the vector very little. A fixed cosine
threshold alone therefore serves wrong answers (published caches: 25 to 50 percent of queries that
only look alike). The verifier (verifier.py) runs two kinds of checks from here after the search:

1. Lexical guards, each a reason to refuse: the numbers differ; one side is negated and the other
   is not; the natural or programming languages named differ; the question kinds differ (why /
   who / when / where / how much); a name of one side is missing from the other; one side has a
   word whose opposite the other has; the words around a direction word ("to", "from", "than")
   come in the other order; a word takes the place of another word both sides contain (a swap).
2. Word alignment: every content word of each side must have a close counterpart (contextual
   word vectors of the same model) on the other; a word without one ("Paris" vs "Rome" in an
   otherwise equal sentence) drags the weakest alignment down.

docs/semantic-cache.md gives the measurements behind each rule.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from routing.cache.lexicon import (
    DIRECTION_WORDS,
    NATURAL_LANGUAGES,
    NEGATIONS,
    NUMBER_WORDS,
    OPPOSITES,
    PROGRAMMING_LANGUAGES,
    STOPWORDS,
)

# Hyphens split words ("zero-sum", "hip-hop"), so both spellings meet.
_WORD = re.compile(
    r"\d+(?:[.,]\d+)*(?:st|nd|rd|th|k|m|s)?"  # numbers: 1,000  2.5  3rd  10k  1990s
    r"|[A-Za-z][A-Za-z0-9]*(?:[+#]+|(?:['\u2019.][A-Za-z0-9]+)+)?"  # words: c++ c# node.js don't
)
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in OPPOSITES:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)
_SENTENCE_ENDS = frozenset('.!?:;"(\u201c')


def _starts_sentence(text: str, position: int) -> bool:
    """Whether the word at `position` opens a sentence (so its capital says nothing)."""
    index = position - 1
    while index >= 0 and text[index].isspace():
        if text[index] == "\n":
            return True
        index -= 1
    return index < 0 or text[index] in _SENTENCE_ENDS


def stem(word: str) -> str:
    """A light stemmer for comparing words across two phrasings (plural, possessive, -ing/-ed)."""
    word = word.lower().replace("\u2019", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _number(token: str) -> str | None:
    if token[0].isdigit():
        digits = re.sub(r"(st|nd|rd|th)$", "", token.lower()).replace(",", "")
        if digits.endswith("k") and digits[:-1].replace(".", "").isdigit():
            digits = str(float(digits[:-1]) * 1000)
        try:
            value = float(digits.rstrip("sm"))
        except ValueError:
            return digits
        return f"{value:g}"
    return NUMBER_WORDS.get(token.lower())


@dataclass(slots=True)
class Analysis:
    words: list[str]  # lower case, in order
    stems: list[str]
    numbers: frozenset[str]
    negated: bool
    languages: frozenset[str]
    # Runs of capitalised words, acronyms and words with digits, as stems: ("donald", "trump").
    names: tuple[tuple[str, ...], ...]
    content: frozenset[str]  # stems of the words that are not stop words
    first_position: dict[str, int] = field(default_factory=dict)


def _is_name(token: str, at_start: bool) -> bool:
    if token.lower() == "i":
        return False
    return (
        (token[0].isupper() and not at_start)
        or (len(token) > 1 and token.isupper())
        or any(ch.isdigit() for ch in token)
    )


def analyse(text: str) -> Analysis:
    words: list[str] = []
    numbers: list[str] = []
    names: list[list[str]] = []
    tokens = list(_WORD.finditer(text))
    alphabetic = [m.group() for m in tokens if m.group()[0].isalpha()]
    # Title Case Questions Capitalise Every Word: then only acronyms and digits mark names.
    title_case = len(alphabetic) >= 4 and sum(w[0].isupper() for w in alphabetic) > 0.6 * len(alphabetic)
    previous_end = -1
    for match in tokens:
        token = match.group()
        lower = token.lower().replace("\u2019", "'")
        words.append(lower)
        number = _number(token)
        if number is not None:
            numbers.append(number)
            previous_end = -1
            continue
        at_start = title_case or _starts_sentence(text, match.start())
        if _is_name(token, at_start) and stem(token) not in STOPWORDS:
            # Adjacent names (only spaces between) form one name: "Donald Trump".
            if names and previous_end >= 0 and not text[previous_end : match.start()].strip():
                names[-1].append(stem(token))
            else:
                names.append([stem(token)])
            previous_end = match.end()
        else:
            previous_end = -1
    stems = [stem(w) for w in words]
    first_position: dict[str, int] = {}
    for index, s in enumerate(stems):
        first_position.setdefault(s, index)
    return Analysis(
        words=words,
        stems=stems,
        numbers=frozenset(numbers),
        negated=any(w in NEGATIONS or w.endswith("n't") for w in words),
        languages=frozenset(w for w in words if w in NATURAL_LANGUAGES or w in PROGRAMMING_LANGUAGES),
        names=tuple(tuple(n) for n in names),
        content=frozenset(
            s for w, s in zip(words, stems, strict=True) if w not in STOPWORDS and s not in STOPWORDS
        ),
        first_position=first_position,
    )


def _names_missing(one: Analysis, other: Analysis) -> bool:
    """A name of `one` is missing from `other`, unless `other` names it by a part of it
    ("Trump" for "Donald Trump"). "Gobi Desert" is not "Taklamakan Desert": no part of the first
    is a name in the second."""
    other_stems = set(other.stems)
    other_names = [set(n) for n in other.names]
    for name in one.names:
        if all(part in other_stems for part in name):
            continue
        if any(found <= set(name) for found in other_names):
            continue
        return True
    return False


_AUXILIARIES = frozenset(
    "is are was were am do does did can could should would will shall may might must has have had "
    "isn't aren't don't doesn't didn't can't couldn't shouldn't wouldn't won't".split()
)
_SPECIFIC = {"why": "why", "who": "who", "whom": "who", "whose": "who", "when": "when", "where": "where"}
_HOW_MEASURE = frozenset("many much long old far big tall often fast".split())


def question_kind(a: Analysis) -> str:
    """What kind of answer the question wants: why / who / when / where / how-much / yes-no, or
    "open" (how, what, which: interchangeable in paraphrases), or "" when it cannot tell."""
    words = a.words
    # A question that opens with an auxiliary is a yes-no one, whatever wh-word follows in a
    # clause of it: "Is it okay to marry a man who is older?", "Can one tell who viewed...?".
    if words and words[0] in _AUXILIARIES:
        return "yes-no"
    for index, word in enumerate(words[:12]):
        if word in _SPECIFIC:
            return _SPECIFIC[word]
        if word == "how":
            following = words[index + 1] if index + 1 < len(words) else ""
            return "how-much" if following in _HOW_MEASURE else "open"
        if word in ("what", "which"):
            return "open"
    return ""


_ARTICLES = frozenset({"the", "a", "an"})


# Comparisons put a comparative between the subject and "than": "Samsung (is) better than Apple".
_COMPARING = frozenset({"than", "over", "against"})


def _neighbour(a: Analysis, index: int, step: int, reach: int = 1) -> str | None:
    """The content word next to position `index` (articles skipped), within `reach` words."""
    seen = 0
    index += step
    while 0 <= index < len(a.words):
        if a.words[index] not in _ARTICLES:
            if a.stems[index] in a.content:
                return a.stems[index]
            seen += 1
            if seen >= reach:
                return None
        index += step
    return None


def _direction_pairs(a: Analysis) -> list[tuple[str, str]]:
    """(left, right) content words right around each direction word: 'km to miles' gives
    (km, mile). Only direct neighbours count, so an infinitive ('which one to learn') does not."""
    pairs = []
    for index, word in enumerate(a.words):
        if word not in DIRECTION_WORDS:
            continue
        # "to", "from", "into": only direct neighbours, so an infinitive ("which one to learn")
        # does not count; comparisons may have a comparative and a verb in between.
        left = _neighbour(a, index, -1, reach=3 if word in _COMPARING else 1)
        right = _neighbour(a, index, 1)
        if left and right and left != right:
            pairs.append((left, right))
    return pairs


# Symmetric links: swapping "Python and Java" or "Messi vs Ronaldo" keeps the meaning.
_COORDINATORS = frozenset({"and", "or", "&", "nor", "vs", "versus"})


def _content_sequence(a: Analysis) -> list[tuple[int, str]]:
    return [(i, s) for i, s in enumerate(a.stems) if s in a.content]


def _coordinated(a: Analysis, i: int, j: int) -> bool:
    """'Python and Java': swapping coordinated words keeps the meaning."""
    between = a.words[min(i, j) + 1 : max(i, j)]
    return len(between) <= 3 and any(w in _COORDINATORS for w in between)


def _slot_taken(one: Analysis, other: Analysis) -> bool:
    """A word of `one` whose place (same content-word neighbours) `other` gives to another word
    that both sentences contain: 'emigrated to Missouri ... go to America' vs the reverse."""
    seq_one, seq_other = _content_sequence(one), _content_sequence(other)
    set_one, set_other = {s for _, s in seq_one}, {s for _, s in seq_other}

    def around(seq: list[tuple[int, str]], k: int) -> tuple[str | None, str | None]:
        return (seq[k - 1][1] if k > 0 else None, seq[k + 1][1] if k + 1 < len(seq) else None)

    slots: dict[tuple[str | None, str | None], list[tuple[int, str]]] = {}
    for k, (position, word) in enumerate(seq_other):
        slots.setdefault(around(seq_other, k), []).append((position, word))
    first_in_other = {word: position for position, word in reversed(seq_other)}
    for k, (_, word) in enumerate(seq_one):
        if word not in set_other:
            continue
        for position, occupant in slots.get(around(seq_one, k), []):
            if occupant != word and occupant in set_one:
                if not _coordinated(other, position, first_in_other[word]):
                    return True
    return False


def _swapped_in_place(one: Analysis, other: Analysis) -> bool:
    """An edit that replaces a word by another word both sentences contain (a role swap)."""
    from difflib import SequenceMatcher

    seq_one = [s for _, s in _content_sequence(one)]
    seq_other = [s for _, s in _content_sequence(other)]
    set_one, set_other = set(seq_one), set(seq_other)
    positions = {s: i for i, s in reversed(_content_sequence(one))}
    matcher = SequenceMatcher(a=seq_one, b=seq_other, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace":
            for x in seq_one[i1:i2]:
                for y in seq_other[j1:j2]:
                    if x != y and x in set_other and y in set_one:
                        if not _coordinated(one, positions[x], positions[y]):
                            return True
    return False


def _adjacent_inverted(one: Analysis, other: Analysis) -> bool:
    """Two neighbouring content words in the other order: "percentage of Muslims (who are)
    terrorists" vs "percentage of terrorists (who are) Muslim"; "A and B" does not count."""
    seq_one, seq_other = _content_sequence(one), _content_sequence(other)
    following = {(x, y): (i, j) for (i, x), (j, y) in itertools.pairwise(seq_other)}
    for (i, x), (j, y) in itertools.pairwise(seq_one):
        if x != y and (y, x) in following and (x, y) not in following:
            k, m = following[(y, x)]
            if not _coordinated(one, i, j) and not _coordinated(other, k, m):
                return True
    return False


def near_miss_reason(query: Analysis, cached: Analysis) -> str:
    """Why the cached query asks something else than the query ("" when no guard objects)."""
    if query.numbers != cached.numbers:
        return "number"
    if query.negated != cached.negated:
        return "negation"
    if query.languages != cached.languages:
        return "language"
    # Why, who, when, where and how-much questions want other answers than each other and than
    # open ones; "Is there a way to..." and "How can I..." ask the same, so yes-no and open mix.
    kinds = {question_kind(query), question_kind(cached)}
    if len(kinds) > 1 and "" not in kinds and kinds - {"open", "yes-no"}:
        return "question_kind"
    if _names_missing(query, cached) or _names_missing(cached, query):
        return "name"
    for word in query.words:
        opposites = _OPPOSITE.get(word)
        if opposites and word not in cached.words and opposites & set(cached.words):
            return "opposite"
    for one, other in ((query, cached), (cached, query)):
        for left, right in _direction_pairs(one):
            if left in other.first_position and right in other.first_position:
                if other.first_position[left] > other.first_position[right]:
                    return "direction"
    if (
        _swapped_in_place(query, cached)
        or _slot_taken(query, cached)
        or _slot_taken(cached, query)
        or _adjacent_inverted(query, cached)
    ):
        return "swap"
    return ""


def word_vectors(pieces: list[str], token_vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Word pieces ('trans', '##port') merged into words, each the normalised mean of its pieces."""
    words: list[str] = []
    groups: list[list[int]] = []
    for index, piece in enumerate(pieces):
        if piece.startswith("##") and groups:
            words[-1] += piece[2:]
            groups[-1].append(index)
        else:
            words.append(piece)
            groups.append([index])
    if not groups:
        return [], np.zeros((0, token_vectors.shape[1] if token_vectors.ndim == 2 else 384), np.float32)
    vectors = np.stack([token_vectors[g].mean(axis=0) for g in groups])
    vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    return words, vectors


def _weakest_alignment(words_a: list[str], vectors_a: np.ndarray, vectors_b: np.ndarray) -> float:
    """The lowest, over content words of a, of the best cosine to any word of b."""
    keep = [
        i for i, w in enumerate(words_a) if w.isalnum() and w not in STOPWORDS and stem(w) not in STOPWORDS
    ]
    if not keep or len(vectors_b) == 0:
        return 1.0
    similarities = vectors_a[keep] @ vectors_b.T
    return float(similarities.max(axis=1).min())


def alignment(
    query_pieces: list[str], query_tokens: np.ndarray, cached_pieces: list[str], cached_tokens: np.ndarray
) -> float:
    """Both directions' weakest word alignment, the lower of the two."""
    qw, qv = word_vectors(query_pieces, query_tokens)
    cw, cv = word_vectors(cached_pieces, cached_tokens)
    return min(_weakest_alignment(qw, qv, cv), _weakest_alignment(cw, cv, qv))
